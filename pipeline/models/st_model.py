"""sentence-transformers models as an mmindex backend: ST folders and Hub ids, plain transformers CLIP-style
folders (CLIP, SigLIP, Chinese-CLIP, …) that sentence-transformers wraps, and text-only ST models.

What sentence-transformers leaves to the caller, this module decides from the model's own files:
- where a caption is cut: the smallest of the tokenizer's ``model_max_length``, the module's
  ``max_seq_length`` and the text tower's ``max_position_embeddings`` (read from ``text_config``
  for two-tower models, where sentence-transformers does not look; Chinese-CLIP's tokenizer
  declares no limit at all);
- how a batch is padded: to ``max_length`` for the families trained that way (SigLIP; transformers'
  model docs: "use padding='max_length' as that's how the model was trained"), else to the longest
  caption (models that pool by attention mask or at the end token are unaffected by padding).
``check_backend`` then verifies both against transformers' own ``get_*_features`` when the model is loaded.
"""
from __future__ import annotations

import copy
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image

from mmindex.errors import ModelError
from mmindex.pipeline.models.backend import TextRule
from mmindex.pipeline.models.identity import model_folder
from mmindex.pipeline.models.trust import HINT, check_model_trust

log = logging.getLogger("mmindex.models")

# Model types (config.json "model_type") whose text tower must see captions padded to the full length.
FIXED_LENGTH_TEXT = {"siglip": 64, "siglip2": 64}
NO_LIMIT = 1_000_000  # transformers' "no model_max_length" sentinel is int(1e30); anything above this is none


class SentenceTransformerModel:
    """A sentence-transformers model (``SentenceTransformer``) behind the ``Backend`` interface."""

    kind = "sentence-transformers"

    def __init__(self, model: str, device: str, half: bool = False, trust_code: bool = False):
        self.st = load_model(model, device, half, trust_code)
        self.module = self.st
        first = self.st[0]
        self.modalities = frozenset(_modality_names(getattr(self.st, "modalities", None) or ["text"]))
        self.dim = int(self.st.get_embedding_dimension())
        self.tokenizer = getattr(first, "tokenizer", None)
        self.text_rule = text_rule(first) if "text" in self.modalities else None
        self._text_kwargs = {"text": _processing_kwargs(self.text_rule)} if self.text_rule else None
        # What a CLIP image processor does (None for other processors): the Pillow fast path and --decode gpu follow it.
        self.image_steps = clip_image_steps(self.st) if "image" in self.modalities else None
        self._fast_images = fast_clip_preprocessor(self.st, self.image_steps) if self.image_steps else None
        # A fast (Rust) tokenizer keeps its truncation/padding settings in shared mutable state:
        # calls from several threads with different settings corrupt each other's batches.
        self._text_lock = threading.Lock()

    @property
    def image_size(self) -> int | None:
        processor = getattr(getattr(self.st[0], "processor", None), "image_processor", None)
        for size in (getattr(processor, "crop_size", None), getattr(processor, "size", None)):
            values = [int(v) for v in (_size_value(size, k) for k in ("height", "width", "shortest_edge")) if v]
            if values:
                return max(values)
        return None

    @property
    def center_crop(self) -> bool:
        """True when the image processor resizes the shortest edge and then crops the centre (CLIP's way)."""
        processor = getattr(getattr(self.st[0], "processor", None), "image_processor", None)
        return bool(processor is not None and getattr(processor, "do_center_crop", False)
                    and _size_value(getattr(processor, "size", None), "shortest_edge"))

    def preprocess_images(self, images: Sequence[Any]) -> dict[str, Any]:
        if self._fast_images is not None:
            return {"pixel_values": self._fast_images(list(images)), "modality": "image"}
        return self.st.preprocess(list(images))

    def preprocess_texts(self, texts: Sequence[str]) -> dict[str, Any]:
        with self._text_lock:
            if self._text_kwargs is None:
                return self.st.preprocess(list(texts))
            return self.st.preprocess(list(texts), processing_kwargs=self._text_kwargs)

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        if self.tokenizer is None:
            return [len(text.split()) + 2 for text in texts]
        with self._text_lock:
            return [len(ids) for ids in self.tokenizer(list(texts), truncation=False)["input_ids"]]

    def embed(self, features: dict[str, Any], modality: str) -> Any:
        return self.st(features)["sentence_embedding"]

    def replica(self, device: str) -> "SentenceTransformerModel":
        """The same model on another device (a deep copy of the weights; the tokenizer lock is shared)."""
        twin = copy.copy(self)
        twin.st = twin.module = copy.deepcopy(self.st).to(device)
        return twin

    def reference(self, items: Sequence[Any], modality: str) -> np.ndarray | None:
        """transformers' own ``get_text_features``/``get_image_features`` with the model's processor, one at a time.

        Only for two-tower models whose sentence-transformers module is the bare transformers
        model (its output is what ``get_*_features`` returns); None for anything else (a text-only
        model with pooling and dense layers has no other reference than itself).
        """
        # torch takes seconds to import: only code that runs a model loads it
        import torch

        first = self.st[0]
        model = getattr(first, "auto_model", None)
        processor = getattr(first, "processor", None)
        method = getattr(model, "get_text_features" if modality == "text" else "get_image_features", None)
        if method is None or processor is None or len(self.st) != 1:
            return None
        rows = []
        with torch.inference_mode():
            for item in items:
                if modality == "text":
                    rule = self.text_rule
                    inputs = processor(text=[item], return_tensors="pt", truncation=True, max_length=rule.max_length,
                                       padding=rule.padding)
                else:
                    inputs = processor(images=[item], return_tensors="pt")
                inputs = {k: v.to(model.device) for k, v in inputs.items() if hasattr(v, "to")}
                output = method(**inputs)
                vector = getattr(output, "pooler_output", output)
                rows.append(torch.nn.functional.normalize(vector.float(), dim=-1).cpu().numpy())
        return np.concatenate(rows)


def text_rule(module) -> TextRule:
    """Where a transformers-backed module cuts captions and how it pads them (see the module docstring)."""
    config = getattr(getattr(module, "auto_model", None), "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    model_type = getattr(config, "model_type", "") or ""
    limits: list[tuple[int, str]] = []
    tokenizer = getattr(module, "tokenizer", None)
    declared = getattr(tokenizer, "model_max_length", None)
    if declared and declared < NO_LIMIT:
        limits.append((int(declared), "the tokenizer's model_max_length"))
    positions = getattr(text_config, "max_position_embeddings", None)
    if positions and positions > 0:
        usable = int(positions) - _position_offset(text_config)
        limits.append((usable, "the text tower's max_position_embeddings"))
    if not limits:
        return TextRule(None, "longest", "no limit declared")
    length, source = min(limits)
    if model_type in FIXED_LENGTH_TEXT:
        return TextRule(length, "max_length", source + f"; padded to it ({model_type} is trained that way)")
    return TextRule(length, "longest", source)


def _position_offset(text_config) -> int:
    """Positions a RoBERTa-style model reserves before the first token (padding_idx + 1), else 0."""
    if getattr(text_config, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "xlm_roberta"):
        return int(getattr(text_config, "pad_token_id", 1) or 1) + 1
    return 0


def _processing_kwargs(rule: TextRule) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"padding": rule.padding, "truncation": True}
    if rule.max_length:
        kwargs["max_length"] = rule.max_length
    return kwargs


def _modality_names(modalities) -> set[str]:
    names: set[str] = set()
    for modality in modalities:
        names.update([modality] if isinstance(modality, str) else list(modality))
    return names


def load_model(model: str, device: str, half: bool = False, trust_code: bool = False):
    """Load a sentence-transformers model by Hub id or local folder, with a clear error.

    Nothing from the model's files runs unless ``trust_code`` (``trust.check_model_trust``). A Hub id is looked
    up once (``hub_access``): with the Hub out of reach it loads from the local cache, or fails at once saying
    how to work offline, instead of the Hub library's minutes of retries.
    """
    try:
        # torch takes seconds to import: only code that runs a model loads it
        import torch

        # a model library: loaded when a model loads, never for `import mmindex` or a fast query
        from sentence_transformers import SentenceTransformer
    except ImportError as error:
        raise ModelError(
            f"model {model!r} needs torch and sentence-transformers to load here ({error}): the torch-free path "
            "did not apply (MMINDEX_LOG_LEVEL=INFO says why; a model's first ONNX export always needs torch). "
            "pip install torch sentence-transformers, or use a ready-made ONNX repository "
            "(docs/throughput-and-gpus.md, Running without torch)") from None

    check_model_trust(model, trust_code)
    local_only = False if os.path.isdir(model) else hub_access(model)
    quiet_transformers()
    try:
        # Load straight into the compute precision: fp16 on request (CUDA), else fp32, even for
        # models saved in fp16 such as the bundled demo.
        dtype = torch.float16 if half else torch.float32
        loaded = SentenceTransformer(model, device=device, model_kwargs={"dtype": dtype}, trust_remote_code=trust_code,
                                     local_files_only=local_only)
    except Exception as error:
        hint = ""
        text = str(error)
        if "sentencepiece" in text.lower() or "SentencePiece" in text:
            hint = " The model's tokenizer needs the sentencepiece package: pip install sentencepiece."
        elif "trust_remote_code" in text:
            hint = " " + HINT + "."
        elif not os.path.isdir(model):
            hint = " " + hub_hint(model)
        reason = str(error).rstrip(". ")
        raise ModelError(f"cannot load model {model!r}: {type(error).__name__}: {reason}.{hint}") from error
    loaded = loaded.half() if half else loaded.float()
    loaded.eval()
    return loaded


HUB_TIMEOUT = 5.0  # seconds to reach the Hub once before a Hub id is handed to the libraries


def hub_access(model: str) -> bool:
    """Whether ``model`` (a Hub id) must load from the local cache alone: True when the Hub cannot be reached in
    ``HUB_TIMEOUT`` but the cache holds the model. ModelError, at once, when neither has it. One request (the Hub
    library's own session: its proxies and certificates), instead of the libraries' retries of every file."""
    # loaded with the model libraries, only when a model is looked up
    from huggingface_hub import constants, get_session

    if constants.is_offline_mode():
        return False  # the libraries look in the cache alone; their error says it is not there
    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_TIMEOUT)
        return False
    except Exception as error:  # noqa: BLE001 - any failure to get an answer: the Hub is out of reach
        reason = f"{type(error).__name__}: {str(error)[:200]}"
    if model_folder(model) is not None:
        log.warning("the Hugging Face Hub (%s) cannot be reached (%s); model %s loads from the local cache",
                    constants.ENDPOINT, reason, model)
        return True
    raise ModelError(f"cannot load model {model!r}: it is not a local folder and not in the local Hugging Face cache, "
                     f"and the Hub ({constants.ENDPOINT}) cannot be reached ({reason}). "
                     + offline_howto(model))


def hub_hint(model: str) -> str:
    """What to say when a Hub id failed to load."""
    # loaded with the model libraries, only when a model is looked up
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return "HF_HUB_OFFLINE=1 is set and it is not in the local cache. " + offline_howto(model)
    return "It is not a local folder, so it comes from the Hugging Face Hub or its local cache. " + offline_howto(model)


ONNX_OWNERS = ("Xenova", "Qdrant", "onnx-community")  # Hub owners whose repositories hold ONNX graphs, no torch weights


def onnx_only_repo(model: str) -> bool:
    """Whether the Hub id ``model`` names a repository of ONNX graphs only (by its owner, or a name ending -onnx),
    which sentence-transformers cannot load or save: it is fetched as files (``hf download``)."""
    owner, _, name = model.strip().partition("/")
    return owner in ONNX_OWNERS or name.lower().endswith("-onnx")


def offline_howto(model: str) -> str:
    """The ways to load a Hub model without network, spelt for ``model`` (an ONNX-only repository: ``hf download``)."""
    folder = "/models/" + model.rstrip("/").rsplit("/", 1)[-1]
    if onnx_only_repo(model):
        return (f"To work offline: download its files once where there is network and pass the folder (hf download "
                f"{model} --local-dir {folder}, then --model {folder}), or run hf download {model} there and copy "
                "the Hugging Face cache (~/.cache/huggingface) that holds it to this machine.")
    return (f"To work offline: download it once where there is network and pass the folder (python -c \"from "
            f"sentence_transformers import SentenceTransformer; SentenceTransformer('{model}').save('{folder}')\", "
            f"then --model {folder}), or copy a Hugging Face cache (~/.cache/huggingface) that holds it to this "
            "machine and set HF_HUB_OFFLINE=1.")


def quiet_transformers() -> None:
    """Hide transformers' per-file progress bars; mmindex shows its own progress."""
    # a model library: loaded when a model loads, never for `import mmindex` or a fast query
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


@dataclass(frozen=True)
class ClipImageSteps:
    """What a CLIP image processor does: resize the shortest edge (Pillow ``resample``), crop the centre,
    scale to [0, 1], normalise. The Pillow path (``fast_clip_preprocessor``) and the torchvision one
    (``gpu_decode``) both follow it."""

    shortest: int
    crop_height: int
    crop_width: int
    resample: int  # a Pillow resampling filter (3: bicubic)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float

    def resized(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the shortest-edge resize (the processor rounds the long side down)."""
        if width <= height:
            return self.shortest, int(self.shortest * height / width)
        return int(self.shortest * width / height), self.shortest

    def crop_origin(self, width: int, height: int) -> tuple[int, int]:
        """(left, top) of the centre crop in a resized image."""
        return (width - self.crop_width) // 2, (height - self.crop_height) // 2


SHRINKABLE = (2, 3)  # Pillow's bilinear and bicubic: the filters a decode shortcut (a bicubic shrink first) keeps to


def decode_side(side: int | None, steps: ClipImageSteps | None) -> int | None:
    """``side`` (px), what decoding may reduce an image toward, or None (keep every pixel) when the model's CLIP
    steps resize with another filter than bilinear or bicubic (nearest, box, Lanczos, Hamming): the decode
    shortcut stays within the ONNX bar for those two (tests/models/test_onnx_repos.py), not for nearest."""
    return None if steps is not None and int(steps.resample) not in SHRINKABLE else side


def clip_image_steps(model) -> ClipImageSteps | None:
    """The steps of a sentence-transformers model's CLIP image processor, or None for any other processor."""
    processor = getattr(getattr(model[0], "processor", None), "image_processor", None)
    if processor is None or "CLIPImageProcessor" not in type(processor).__name__:
        return None
    try:
        flags = (processor.do_resize, processor.do_center_crop, processor.do_rescale, processor.do_normalize)
        steps = ClipImageSteps(
            int(_size_value(processor.size, "shortest_edge")), int(_size_value(processor.crop_size, "height")),
            int(_size_value(processor.crop_size, "width")), int(getattr(processor.resample, "value", processor.resample)),
            tuple(float(v) for v in processor.image_mean), tuple(float(v) for v in processor.image_std),
            float(processor.rescale_factor))
    except (AttributeError, TypeError, ValueError):
        return None
    if not all(flags) or abs(steps.scale - 1 / 255) > 1e-9:
        return None
    return steps


def clip_pixels(images: Sequence[Any], steps: ClipImageSteps) -> np.ndarray:
    """(n, 3, crop_height, crop_width) float32 pixels for RGB PIL images by ``steps``, in numpy (no torch: the
    fast query path uses it too): Pillow resizes and crops, then (x · scale − mean) / std in float32."""
    arrays = []
    for image in images:
        size = steps.resized(*image.size)
        if size != image.size:
            image = image.resize(size, steps.resample)
        left, top = steps.crop_origin(*size)
        image = image.crop((left, top, left + steps.crop_width, top + steps.crop_height))
        arrays.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
    batch = np.stack(arrays).transpose(0, 3, 1, 2).astype(np.float32) * np.float32(steps.scale)
    batch -= np.asarray(steps.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    batch /= np.asarray(steps.std, dtype=np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray(batch)


def fast_clip_preprocessor(model, steps: ClipImageSteps | None = None):
    """A faster equivalent of a CLIP image processor (resize, centre crop, normalise), or None.

    The model's own processor converts every image through several float64 numpy steps;
    this does the resize and crop in Pillow and the normalisation once per batch (``clip_pixels``).
    It is used only if it reproduces the model's processor on test images (max abs
    difference < 1e-4 after normalisation); otherwise the processor itself is used.
    """
    # torch takes seconds to import: only code that runs a model loads it
    import torch

    steps = steps or clip_image_steps(model)
    if steps is None:
        return None

    def preprocess(images):
        return torch.from_numpy(clip_pixels(images, steps))

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
