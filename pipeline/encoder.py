"""Load a sentence-transformers CLIP model and turn images and captions into vectors.

One model encodes both modalities into the same space. Vectors come back L2-normalised
as float32 numpy arrays. The device is chosen automatically (CUDA, then Apple MPS, then
CPU); on CUDA the model runs in fp16.
"""
from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from mmindex.pipeline.errors import ModelError

if TYPE_CHECKING:
    from mmindex.connectors.base import CollectionSpec

DEFAULT_MODEL = "clip-ViT-B-32"


def pick_device(requested: str | None = None) -> str:
    """The device to run on: the one asked for, else CUDA, MPS or CPU, whichever exists."""
    import torch

    if requested and requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise ModelError(f"--device {requested} asked for, but CUDA is not available on this machine")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def model_fingerprint(model: str) -> str | None:
    """A digest of a local model folder's files, or None for a Hub id (recorded by its name).

    SHA-256 over every file's path (relative to the folder), size and SHA-256 of its bytes, in
    path order: config, tokenizer, preprocessor and weights. Hidden files and folders and
    Markdown files (the model card) are left out, so a copy or a moved folder has the same
    fingerprint and the same path with other weights has another. About 1 s per GB of weights.
    """
    if not os.path.isdir(model):
        return None
    import hashlib

    total = hashlib.sha256()
    for root, folders, files in os.walk(model, followlinks=True):
        folders[:] = sorted(f for f in folders if not f.startswith(".") and f != "__pycache__")
        for name in sorted(files):
            if name.startswith(".") or name.lower().endswith(".md"):
                continue
            path = os.path.join(root, name)
            digest = hashlib.sha256()
            size = 0
            with open(path, "rb") as handle:
                while chunk := handle.read(1 << 22):
                    digest.update(chunk)
                    size += len(chunk)
            relative = os.path.relpath(path, model).replace(os.sep, "/")
            total.update(f"{relative}\0{size}\0{digest.hexdigest()}\n".encode())
    return "sha256:" + total.hexdigest()


def model_to_load(meta: dict[str, Any] | None, given: str | None = None) -> str:
    """What to load for a collection: ``given`` (--model), else the folder or Hub id it records.

    Raises ModelError when the recorded folder is gone, naming it and what to do.
    """
    if given:
        return given
    if meta is None:
        return DEFAULT_MODEL
    path = meta.get("model_path") or (meta["model"] if _is_path(meta["model"]) else None)
    if path is None:
        return meta["model"]
    if os.path.isdir(path):
        return path
    raise ModelError(
        f"the collection's model {model_display_name(meta['model'])!r} was loaded from {path}, which is not there "
        "any more; pass --model with the model's folder (a moved or copied folder is accepted: the files are "
        "checked by fingerprint, not by path)"
    )


def encoder_for(meta: dict[str, Any] | None, given: str | None, collection: str, **kwargs) -> "Encoder":
    """Load the encoder for a collection (``given`` --model, else the one it records) and check it fills it.

    ``kwargs`` go to ``Encoder``. Raises ModelError when the recorded folder is gone, and
    CollectionMismatchError when the model is not the collection's, saying which folder changed
    when no --model was given.
    """
    from mmindex.connectors.base import CollectionSpec

    encoder = Encoder(model_to_load(meta, given), **kwargs)
    if meta is None:
        return encoder
    recorded = CollectionSpec.from_metadata(meta)
    if given or encoder.spec().same_model(recorded):
        encoder.spec().check_matches(recorded, collection)
        return encoder
    raise recorded_model_changed(meta, encoder.path or encoder.name, encoder.fingerprint, collection)


def recorded_model_changed(meta: dict[str, Any], loaded_from: str, fingerprint: str | None,
                           collection: str) -> Exception:
    """The error for a collection whose recorded model folder now holds another model."""
    from mmindex.pipeline.errors import CollectionMismatchError

    return CollectionMismatchError(
        f"collection {collection!r} loads its model {meta['model']!r} from {loaded_from}, but the files there are "
        f"no longer that model (fingerprint {str(fingerprint)[:19]}…, recorded "
        f"{str(meta.get('model_fingerprint'))[:19]}…); pass --model with the folder of the model the collection "
        "was made with"
    )


def _is_path(identity: str) -> bool:
    return identity.startswith(("/", "\\")) or (len(identity) > 2 and identity[1] == ":" and identity[2] in "/\\")


def model_display_name(identity: str) -> str:
    """How a recorded model is shown to people: a local folder by its name, a Hub id as it is.

    ``/home/ana/models/shapes-clip`` → ``shapes-clip``; ``clip-ViT-B-32`` → ``clip-ViT-B-32``.
    The recorded identity may be a path on another machine, so this never touches the disk.
    """
    if _is_path(identity):
        name = identity.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        return name or identity
    return identity


class Encoder:
    """A CLIP-style sentence-transformers model that embeds images and texts."""

    def __init__(self, model: str = DEFAULT_MODEL, device: str | None = None, batch_size: int = 32,
                 half: bool | None = None):
        self.path = os.path.abspath(model) if os.path.isdir(model) else None  # a local folder, absolute
        self.name = model_display_name(self.path or model)  # shown to people and recorded as the model's name
        self.fingerprint = model_fingerprint(model)
        self.identity = self.fingerprint or model  # what content hashes are made with
        self.device = pick_device(device)
        self.batch_size = batch_size
        # fp16 on CUDA by default; training asks for full precision.
        self.model = load_model(model, self.device, self.device.startswith("cuda") if half is None else half)
        modalities = set(getattr(self.model, "modalities", []) or [])
        if modalities and not {"image", "text"} <= modalities:
            raise ModelError(
                f"model {model!r} encodes {', '.join(sorted(modalities))}, but mmindex needs a model that "
                "encodes both images and text (a CLIP-style model such as clip-ViT-B-32)"
            )
        self.dim = int(self.model.get_embedding_dimension())
        self.max_forward: int | None = None  # lowered after a CUDA out-of-memory error
        self.oom_retries = 0
        self._fast_images = fast_clip_preprocessor(self.model)
        # A fast (Rust) tokenizer keeps its truncation/padding settings in shared mutable state:
        # calls from several threads with different settings corrupt each other's batches.
        self._text_lock = threading.Lock()

    @property
    def image_size(self) -> int | None:
        """The square side the model's image processor crops to, when it says."""
        processor = getattr(self.model[0], "processor", None)
        image_processor = getattr(processor, "image_processor", None)
        for size in (getattr(image_processor, "crop_size", None), getattr(image_processor, "size", None)):
            values = [int(v) for v in (_size_value(size, k) for k in ("height", "width", "shortest_edge")) if v]
            if values:
                return max(values)
        return None

    @property
    def max_text_tokens(self) -> int | None:
        return getattr(self.model, "max_seq_length", None)

    def captions_too_long(self, texts: Sequence[str]) -> list[bool]:
        """For each text, whether the model will cut it at its token limit (the vector ignores the rest)."""
        limit = self.max_text_tokens
        result = [False] * len(texts)
        # Byte-level BPE: a token covers at least one UTF-8 byte, plus start and end tokens,
        # so only texts longer than that in bytes need tokenizing (in one batched call).
        maybe = [i for i, text in enumerate(texts) if limit and len(text.encode("utf-8")) + 2 > limit]
        if not maybe:
            return result
        tokenizer = getattr(getattr(self.model[0], "processor", None), "tokenizer", None)
        tokenizer = tokenizer or getattr(self.model[0], "tokenizer", None)
        if tokenizer is None:
            lengths = [len(texts[i].split()) + 2 for i in maybe]
        else:
            with self._text_lock:
                lengths = [len(ids) for ids in tokenizer([texts[i] for i in maybe], truncation=False)["input_ids"]]
        for i, length in zip(maybe, lengths):
            result[i] = length > limit
        return result

    def encode_images(self, images: Sequence) -> np.ndarray:
        return self._encode(list(images))

    # -- the pipelined path: preprocessing in workers, forward passes on ready tensors ----------
    def preprocess(self, items: Sequence) -> dict[str, Any]:
        """Model inputs for images or texts (CPU tensors), ready for ``forward``; thread-safe.

        Runs in the decode workers so that the model's thread only does forward passes. On
        CUDA the tensors are pinned so the host-to-device copy can overlap compute.
        """
        items = list(items)
        if items and not isinstance(items[0], str) and self._fast_images is not None:
            features = {"pixel_values": self._fast_images(items), "modality": "image"}
        elif items and isinstance(items[0], str):
            with self._text_lock:
                features = self.model.preprocess(items)
        else:
            features = self.model.preprocess(items)
        if self.device.startswith("cuda"):
            for key, value in features.items():
                if hasattr(value, "pin_memory"):
                    features[key] = value.pin_memory()
        return features

    def forward(self, features: dict[str, Any]) -> np.ndarray:
        """Normalised embeddings for preprocessed inputs; a CUDA out-of-memory error halves the batch."""
        import torch

        size = _batch_size(features)
        if size == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.max_forward and size > self.max_forward:
            return self._forward_in_parts(features, size, self.max_forward)
        try:
            with torch.inference_mode():
                return self._forward(features)
        except torch.OutOfMemoryError:
            if size == 1:
                raise
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
            self.max_forward = max(1, size // 2)
            self.oom_retries += 1
            return self._forward_in_parts(features, size, self.max_forward)

    def _forward_in_parts(self, features: dict[str, Any], size: int, part: int) -> np.ndarray:
        return np.concatenate([self.forward(_slice(features, start, start + part)) for start in range(0, size, part)])

    def _forward(self, features: dict[str, Any]) -> np.ndarray:
        import torch

        on_device = {
            key: value.to(self.device, non_blocking=True) if isinstance(value, torch.Tensor) else value
            for key, value in features.items()
        }
        embeddings = self.model(on_device)["sentence_embedding"]
        embeddings = torch.nn.functional.normalize(embeddings.float(), p=2, dim=1)
        return embeddings.cpu().numpy()

    def spec(self) -> "CollectionSpec":
        """The collection spec this model fills: its name, vector size and fingerprint."""
        from mmindex.connectors.base import CollectionSpec

        return CollectionSpec(self.name, self.dim, fingerprint=self.fingerprint)

    def recorded(self) -> dict[str, Any]:
        """The model keys a collection records after a run with this model."""
        return {"model": self.name, "model_fingerprint": self.fingerprint, "model_path": self.path}

    def replica(self, device: str) -> "Encoder":
        """The same model on another device, for one-replica-per-GPU encoding."""
        import copy

        twin = copy.copy(self)
        twin.device = pick_device(device)
        twin.model = copy.deepcopy(self.model).to(twin.device)
        twin.max_forward, twin.oom_retries = None, 0
        return twin

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(list(texts))

    def _encode(self, items: list) -> np.ndarray:
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        if isinstance(items[0], str):
            with self._text_lock:
                return self._st_encode(items)
        return self._st_encode(items)

    def _st_encode(self, items: list) -> np.ndarray:
        vectors = self.model.encode(
            items,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


def load_model(model: str, device: str, half: bool = False):
    """Load a sentence-transformers model by Hub id or local folder, with a clear error."""
    import torch
    from sentence_transformers import SentenceTransformer

    quiet_transformers()
    try:
        # Load straight into the compute precision: fp16 on request (CUDA), else fp32, even for
        # models saved in fp16 such as the bundled demo.
        dtype = torch.float16 if half else torch.float32
        loaded = SentenceTransformer(model, device=device, model_kwargs={"dtype": dtype})
    except Exception as error:
        hint = ""
        if not os.path.isdir(model):
            from huggingface_hub import constants

            offline = bool(constants.HF_HUB_OFFLINE)
            hint = (
                " It is not a local folder, so it must come from the Hugging Face Hub"
                + (" — but HF_HUB_OFFLINE=1 is set and it is not in the local cache." if offline else
                   " (is the network reachable, and the name right?).")
                + " Pass --model PATH to a local sentence-transformers CLIP model folder to work offline."
            )
        raise ModelError(f"cannot load model {model!r}: {type(error).__name__}: {error}.{hint}") from error
    loaded = loaded.half() if half else loaded.float()
    loaded.eval()
    return loaded


def quiet_transformers() -> None:
    """Hide transformers' per-file progress bars; mmindex shows its own progress."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _batch_size(features: dict[str, Any]) -> int:
    for value in features.values():
        if hasattr(value, "shape") and len(value.shape) > 0:
            return int(value.shape[0])
    return 0


def _slice(features: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    return {
        key: value[start:stop] if hasattr(value, "shape") and len(value.shape) > 0 else value
        for key, value in features.items()
    }


def fast_clip_preprocessor(model):
    """A faster equivalent of a CLIP image processor (resize, centre crop, normalise), or None.

    The model's own processor converts every image through several float64 numpy steps;
    this does the resize and crop in Pillow and the normalisation once per batch in torch.
    It is used only if it reproduces the model's processor on test images (max abs
    difference < 1e-4 after normalisation); otherwise the processor itself is used.
    """
    import torch
    from PIL import Image

    processor = getattr(getattr(model[0], "processor", None), "image_processor", None)
    if processor is None or "CLIPImageProcessor" not in type(processor).__name__:
        return None
    try:
        shortest = int(_size_value(processor.size, "shortest_edge"))
        crop_h = int(_size_value(processor.crop_size, "height"))
        crop_w = int(_size_value(processor.crop_size, "width"))
        flags = (processor.do_resize, processor.do_center_crop, processor.do_rescale, processor.do_normalize)
        resample = int(getattr(processor.resample, "value", processor.resample))
        mean = torch.tensor(processor.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(processor.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        scale = float(processor.rescale_factor)
    except (AttributeError, TypeError, ValueError):
        return None
    if not all(flags) or abs(scale - 1 / 255) > 1e-9:
        return None

    def preprocess(images):
        arrays = []
        for image in images:
            width, height = image.size
            if width <= height:
                size = (shortest, int(shortest * height / width))
            else:
                size = (int(shortest * width / height), shortest)
            if size != image.size:
                image = image.resize(size, resample)
            left, top = (size[0] - crop_w) // 2, (size[1] - crop_h) // 2
            image = image.crop((left, top, left + crop_w, top + crop_h))
            arrays.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().mul_(scale)
        return batch.sub_(mean).div_(std).contiguous()

    rng = np.random.default_rng(0)
    probes = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((37, 91), (300, 240), (64, 64))]
    try:
        expected = model.preprocess(probes)["pixel_values"].float()
        got = preprocess(probes)
        if expected.shape == got.shape and float((expected - got).abs().max()) < 1e-4:
            return preprocess
    except Exception:  # any surprise: keep the model's own processor
        return None
    return None


def _size_value(size, key):
    """A field of an image processor's size: a dict in older transformers, a SizeDict in newer ones."""
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)
