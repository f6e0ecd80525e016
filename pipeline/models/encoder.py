"""Load a CLIP-style model (and optionally a separate query text model) and turn images and captions into vectors.

One model encodes both modalities into the same space, or an image model is paired with a
text model trained into its space (``text_model``, e.g. a multilingual student). Vectors come
back L2-normalised as float32 numpy arrays. The device is chosen automatically (CUDA, then
Apple MPS, then CPU); on CUDA the model runs in fp16. The model libraries themselves sit behind
``pipeline/models/backend.py``: sentence-transformers (``st_model.py``), open_clip (``open_clip_model.py``),
ONNX Runtime (``onnx_model.py``), and the torch-free towers (``towers.py``: this module imports no model library
itself, so a run on them never imports torch).
"""
from __future__ import annotations

import copy
import glob
import logging
import os
import re
import sys
from dataclasses import dataclass
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from mmindex.connectors.base import CollectionSpec, model_mismatch
from mmindex.errors import CollectionMismatchError, EncodeError, ModelError, UsageError
from mmindex.pipeline.models.backend import (
    batch_size_of,
    check_backend,
    cleaned_texts,
    isolate,
    part_of,
    slice_features,
)
from mmindex.pipeline.models.bundle import write_bundle
from mmindex.pipeline.models.identity import (
    DEFAULT_MODEL,
    ModelChoice,
    check_model_spec,
    hub_revision,
    is_open_clip,
    model_display_name,
    model_folder,
    model_source,
    recorded_model_changed,
)
from mmindex.pipeline.models.onnx_model import OnnxModel
from mmindex.pipeline.models.onnx_repos import ready_made_folder, repo_backend, text_partner
from mmindex.pipeline.models.open_clip_model import OpenClipModel
from mmindex.pipeline.models.quick import remembered_fingerprint, torch_free_enabled
from mmindex.pipeline.models.st_model import SentenceTransformerModel, decode_side, offline_howto, onnx_only_repo
from mmindex.pipeline.models.towers import bundle_backend
from mmindex.pipeline.models.trust import code_trusted

if TYPE_CHECKING:
    from mmindex.pipeline.models.backend import Backend

log = logging.getLogger("mmindex.encoder")


DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device(name: str | None, option: str = "--device") -> None:
    """Refuse, before anything loads, a device name that is none: ``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N``
    (UsageError naming ``option``)."""
    if name is not None and not DEVICE.fullmatch(name):
        raise UsageError(f"{option}: {name!r} is not a device; give auto, cpu, mps, cuda or cuda:N"
                         + (" (several separated by commas, such as cuda:0,cuda:1 or cpu,cpu)"
                            if option == "--devices" else ""))


def pick_device(requested: str | None = None) -> str:
    """The device to run on: the one asked for, else CUDA, MPS or CPU, whichever exists. UsageError for a name that
    is not a device, ModelError for CUDA asked for where there is none. The CPU is answered without importing torch
    when it is asked for, or when no GPU can be there (``gpu_possible``)."""
    check_device(requested)
    if requested == "cpu" or (requested in (None, "auto") and not gpu_possible()):
        return "cpu"
    # torch takes seconds to import: only code that runs a model loads it
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


GPU_NODES = ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")  # the NVIDIA driver, ROCm, and WSL 2's GPU


def gpu_possible() -> bool:
    """Whether torch might find a GPU here, answered without importing it: True on macOS (MPS) and Windows (no cheap
    test), else only when a GPU's device node exists (``/dev/nvidia*``, ROCm's ``/dev/kfd``, WSL's ``/dev/dxg``):
    CUDA and ROCm reach their GPUs through those nodes, so without them torch finds none."""
    if sys.platform == "darwin" or os.name == "nt":
        return True
    return any(os.path.exists(node) for node in GPU_NODES) or bool(glob.glob("/dev/nvidia[0-9]*"))


def encoder_for(meta: dict[str, Any] | None, given: str | None, collection: str, text_model: str | None = None,
                precision: str | None = None, **kwargs) -> "Encoder":
    """Load the encoder for a collection (``given`` --model, else the one it records) and check it fills it.

    The text model is ``text_model`` (a query's own --text-model: only its vector size must
    agree), else the one the collection records; the precision is ``precision``, else the
    collection's (an int8 collection runs on ONNX Runtime with ``backend="auto"``). ``kwargs`` go to ``Encoder``. Raises
    ModelError when a recorded folder is gone, and CollectionMismatchError when a model is not
    the collection's, saying which folder changed when no --model was given.
    """
    recorded = CollectionSpec.from_metadata(meta) if meta is not None else None
    plan = ModelChoice(given, text_model, precision).resolve(meta)
    if recorded is not None:  # refused before a model is loaded (or exported, or quantised)
        plan.check_answers(meta, recorded, collection)
    encoder = Encoder(plan.model, text_model=plan.text_model, precision=plan.precision, **kwargs)
    if recorded is None:
        return encoder
    spec = encoder.spec()
    if text_model:  # the caller's own text model embeds only queries here: the image model must be the collection's
        if spec.same_image_model(recorded):
            return encoder.take_recorded_names(meta)
        if given:
            raise CollectionMismatchError(model_mismatch(recorded, spec, collection))
        raise recorded_model_changed(meta, encoder.path or encoder.name, encoder.fingerprint, collection)
    if given or spec.same_model(recorded):
        spec.check_matches(recorded, collection)
        return encoder.take_recorded_names(meta)
    if spec.same_image_model(recorded):
        raise recorded_model_changed(meta, encoder.text_path or str(encoder.text_name), encoder.text_fingerprint,
                                     collection, key="text_model")
    raise recorded_model_changed(meta, encoder.path or encoder.name, encoder.fingerprint, collection)


BACKENDS = ("auto", "torch", "onnx")
PRECISIONS = ("fp32", "int8")


def choose_backend(backend: str, precision: str, device: str = "cpu") -> str:
    """The backend that runs: ``backend`` unless it is ``auto``, which picks the fastest one available for
    ``device``: ONNX Runtime on the CPU when it and the exporter are installed (bench/peers.py: 1.4× torch
    end to end on ViT-B/32, 2 cores) and always for int8 (only it runs int8 towers); torch on CUDA and MPS
    (fp16 on CUDA). Raises ModelError for a precision the backend cannot run."""
    if backend not in BACKENDS:
        raise ModelError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ModelError(f"unknown model precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if backend == "auto":
        return "onnx" if precision != "fp32" or (device == "cpu" and onnx_available()) else "torch"
    if precision != "fp32" and backend != "onnx":
        raise ModelError(f"--model-precision {precision} runs on ONNX Runtime: use --backend onnx (or auto)")
    return backend


def onnx_available() -> bool:
    """Whether ONNX Runtime and the torch.onnx exporter's packages (onnx, onnxscript) are installed."""
    return all(find_spec(name) is not None for name in ("onnxruntime", "onnx", "onnxscript"))


def load_backend(model: str, device: str, half: bool, backend: str = "torch", *, threads: int | None = None,
                 precision: str = "fp32", fingerprint: str | None = None, trust_code: bool = False,
                 torch_backend: "SentenceTransformerModel | None" = None, temporary_cache: bool = True) -> "Backend":
    """The backend for a model spec: ONNX Runtime when ``backend`` is onnx (sentence-transformers /
    transformers CLIP-style models), else open_clip for ``is_open_clip`` specs, else sentence-transformers
    (ST folders and Hub ids, plain transformers CLIP-style folders, text-only ST models). ``torch_backend``: the
    model already loaded in torch on the CPU in fp32, used instead of loading it again. ``trust_code``: whether
    the model's own code may run (``trust.check_model_trust``). ``temporary_cache``: an ONNX cache that cannot be
    written is replaced by a temporary folder (else it is a ModelError)."""
    if backend == "onnx":
        if is_open_clip(model):
            raise ModelError("--backend onnx runs sentence-transformers / transformers CLIP-style models; "
                             "open_clip models run with --backend torch")
        onnx = OnnxModel(model, device, half, threads=threads, precision=precision, fingerprint=fingerprint,
                         trust_code=trust_code, torch_backend=torch_backend, temporary_cache=temporary_cache)
        write_bundle(onnx)  # what `mmindex query` needs to embed without torch (pipeline/models/quick.py)
        return onnx
    if threads:
        # torch takes seconds to import: only code that runs a model loads it
        import torch

        torch.set_num_threads(threads)
    if is_open_clip(model):
        return OpenClipModel(model, device, half, trust_code=trust_code)
    if torch_backend is not None and device == "cpu" and not half:
        return torch_backend
    return SentenceTransformerModel(model, device, half, trust_code=trust_code)


def torch_path_reason(alone: bool, backend: str, device: str, half: bool, model: str) -> str | None:
    """Why a model that is not a ready-made ONNX repository takes the torch path whatever its bundle holds, in
    the words of its options (logged at INFO), or None when the torch-free path may run it."""
    if is_open_clip(model):
        return "open_clip models have no ONNX export here"
    if not alone:
        return "--text-model names a second model (the torch-free path runs one model for both modalities)"
    if backend not in ("auto", "onnx"):
        return f"--backend {backend}"
    if device != "cpu":
        return f"device {device} (ONNX Runtime runs on the CPU here)"
    if half:
        return "half precision runs in torch"
    if not torch_free_enabled():
        return "MMINDEX_TORCH_FREE=0 (or MMINDEX_QUICK_QUERY=0) turns the torch-free path off"
    return None


class Encoder:
    """A CLIP-style model that embeds images and texts, optionally with a separate text model for captions and queries.

    ``model``: a sentence-transformers folder or Hub id, a transformers CLIP-style folder, or an
    open_clip name (``open_clip:ARCH/TAG``, ``hf-hub:ORG/NAME``, a local open_clip folder).
    ``text_model``: a text encoder trained into ``model``'s space (same vector size); when given it
    embeds every text (captions at ingest, text queries) and ``model`` only images.
    ``backend``: torch, onnx (ONNX Runtime, towers exported once per model fingerprint) or auto;
    ``precision``: fp32 or int8 (ONNX Runtime's dynamic quantisation); ``threads``: the model's
    intra-op threads (the rest of the cores are left to decode workers).
    Without torch (``towers.TowerBackend``, see ``_torch_free``): a ready-made ONNX repository
    (``onnx_repos.py``), and a model whose ONNX export and query bundle hold, on the CPU.
    Raises ModelError when a model cannot be loaded, lacks a modality, has another vector size
    than its partner, or fails the load-time check (``backend.check_backend``).
    """

    def __init__(self, model: str = DEFAULT_MODEL, device: str | None = None, batch_size: int = 32,
                 half: bool | None = None, text_model: str | None = None, backend: str = "torch",
                 precision: str = "fp32", threads: int | None = None, trust_model_code: bool | None = None):
        check_model_spec(model, "--model")
        if text_model is not None:
            check_model_spec(text_model, "--text-model")
        # Where it loads from (absolute), the name shown and recorded, the fingerprint of its files.
        self.path, self.name, self.fingerprint = model_source(model, remembered_fingerprint)
        self.requested_backend = backend
        # A ready-made ONNX repository runs on ONNX Runtime (the CPU unless a device is named), without torch.
        ready = not is_open_clip(model) and ready_made_folder(model) is not None
        self.device = "cpu" if ready and device in (None, "auto") else pick_device(device)
        self.batch_size = batch_size
        # fp16 on CUDA by default; training asks for full precision.
        half = self.device.startswith("cuda") if half is None else half
        self.precision = precision
        self.trusted = code_trusted(trust_model_code)
        self.backend_name = choose_backend(backend, precision, self.device)
        if backend == "auto" and precision == "fp32" and is_open_clip(model):
            self.backend_name = "torch"  # open_clip models run in torch
        self.backend, self.backend_name = self._load_model(
            model, self.fingerprint, half, threads, self.backend_name,
            fallback=backend == "auto" and precision == "fp32", what=f"model {self.name}", alone=not text_model)
        if "image" not in self.backend.modalities:
            raise ModelError(
                f"model {model!r} encodes {', '.join(sorted(self.backend.modalities))} only, but mmindex needs a "
                "model that encodes images (a CLIP-style model such as clip-ViT-B-32); a text model trained into "
                "a CLIP model's space goes with --text-model, beside that CLIP model"
            )
        self.text_path = self.text_name = self.text_fingerprint = None
        if text_model:
            self._load_text_model(model, text_model, backend, half, threads)
        elif "text" not in self.backend.modalities:
            partner = text_partner(model) if ready_made_folder(model) is not None else \
                "with a text model trained into its space"
            raise ModelError(f"model {model!r} does not encode text; pass --text-model {partner}")
        else:
            self.text_backend = self.backend
        self.dim = int(self.backend.dim)
        model_identity = self.fingerprint or model
        text_identity = (self.text_fingerprint or text_model) if text_model else None
        # What content hashes are made with: a row is re-embedded when either model changes.
        self.identity = model_identity if text_identity is None else f"{model_identity}+text:{text_identity}"
        if precision != "fp32":  # int8 vectors differ from fp32 ones: a precision change re-embeds
            self.identity += f"+{precision}"
        # The sentence-transformers model itself, for training (None for other backends).
        self.model = getattr(self.backend, "st", None)
        self.max_forward: int | None = None  # lowered after a CUDA out-of-memory error
        self.oom_retries = 0
        parts = [(self.backend, self.name)]
        if self.text_backend is not self.backend:
            parts.append((self.text_backend, self.text_name))
        for part, name in parts:
            if getattr(part, "checked", False):
                continue  # checked as it loaded (towers from a query bundle: ``quick.QuickEncoder.check``)
            tolerance = getattr(part, "tolerance", None) or (5e-3 if half else 1e-4)
            check_backend(part, name, self._encoder_of(part), tolerance)

    def _load_text_model(self, model: str, text_model: str, backend: str, half: bool, threads: int | None) -> None:
        """Load the separate text model into ``text_backend`` (its name, folder and fingerprint beside), checked to
        encode text into the image model's vector size (ModelError)."""
        self.text_path, self.text_name, self.text_fingerprint = model_source(text_model, remembered_fingerprint)
        # auto runs a separate text model (usually a text-only sentence-transformers model, which has no
        # ONNX export here) in torch, unless int8 asks for ONNX Runtime
        text_backend = "torch" if backend == "auto" and self.precision == "fp32" else self.backend_name
        self.text_backend, _ = self._load_model(
            text_model, self.text_fingerprint, half, threads, text_backend, fallback=backend == "auto",
            what=f"text model {self.text_name}")
        if "text" not in self.text_backend.modalities:
            raise ModelError(f"text model {text_model!r} does not encode text")
        if self.text_backend.dim != self.backend.dim:
            raise ModelError(
                f"text model {text_model!r} makes {self.text_backend.dim}-d vectors but model {model!r} makes "
                f"{self.backend.dim}-d ones; a query text model must be trained into the image model's space"
            )

    def _torch_free(self, model: str, fingerprint: str | None, half: bool, threads: int | None,
                    alone: bool) -> "Backend | None":
        """The model's torch-free backend, or None for the full path: a ready-made ONNX repository always (it has
        no torch weights; ``--backend torch`` is refused), else its own ONNX export with a query bundle that holds
        (``towers.bundle_backend``) when the full path would run that export: ``--backend auto|onnx`` on the CPU in
        fp32 or int8, one model for both modalities (``alone``), not open_clip, and ``quick.torch_free_enabled``."""
        if not is_open_clip(model) and ready_made_folder(model) is not None:
            if self.requested_backend == "torch":
                raise ModelError(f"model {model!r} is a ready-made ONNX repository (no torch weights): it runs on "
                                 "ONNX Runtime; use --backend onnx or auto")
            return repo_backend(model, self.precision, self.device, threads)
        if not is_open_clip(model) and onnx_only_repo(model) and model_folder(model) is None:
            # said here, before torch: sentence-transformers could neither load nor download it
            raise ModelError(f"model {model!r} is a Hub repository of ONNX graphs that is not a local folder or in "
                             "the local Hugging Face cache; mmindex does not download it. " + offline_howto(model))
        # auto also where onnx/onnxscript (the exporter) are missing, so that auto picks torch: an export made
        # before (in another environment, an image's build step) still runs without torch
        why_not = torch_path_reason(alone, self.requested_backend, self.device, half, model)
        if why_not:
            log.info("%s runs with torch: %s", model_display_name(model), why_not)
            return None
        towers = bundle_backend(model, self.precision, fingerprint, threads)
        if towers is not None:
            log.info("model %s runs without torch: its ONNX export and query bundle hold", model_display_name(model))
        return towers

    def _load_model(self, model: str, fingerprint: str | None, half: bool, threads: int | None, backend: str,
                    fallback: bool, what: str, alone: bool = False) -> tuple["Backend", str]:
        """(a model's backend, its name): the torch-free one when it holds (``_torch_free``), else the model library's.
        With ``fallback`` (auto picked ONNX Runtime) the model is loaded once in torch first: a model that cannot load
        fails there, once, with its own error; one whose towers cannot be exported (or whose export cannot be cached)
        then runs in torch, the model already loaded, with one warning."""
        towers = self._torch_free(model, fingerprint, half, threads, alone)
        if towers is not None:
            return towers, "onnx"
        if not fallback or backend != "onnx":
            return load_backend(model, self.device, half, backend, threads=threads, precision=self.precision,
                                fingerprint=fingerprint, trust_code=self.trusted), backend
        fp32 = "" if self.precision == "fp32" else f" fp32 (its vectors are not {self.precision})"
        if is_open_clip(model):
            log.warning("%s runs in torch%s: open_clip models have no ONNX export here", what, fp32)
            return load_backend(model, self.device, half, "torch", threads=threads, trust_code=self.trusted), "torch"
        twin = SentenceTransformerModel(model, "cpu", half=False, trust_code=self.trusted)
        try:
            # a cache that cannot be written: torch, at once, rather than an export to a temporary folder per run
            return load_backend(model, self.device, half, "onnx", threads=threads, precision=self.precision,
                                fingerprint=fingerprint, trust_code=self.trusted, torch_backend=twin,
                                temporary_cache=False), "onnx"
        except ModelError as error:
            log.warning("%s runs in torch%s: %s", what, fp32, error)
            return load_backend(model, self.device, half, "torch", threads=threads, trust_code=self.trusted,
                                torch_backend=twin), "torch"

    def take_recorded_names(self, meta: dict[str, Any] | None) -> "Encoder":
        """Show the models by the names the collection ``meta`` records, when they are its models (same fingerprint):
        a copied folder under another name is the same model, and info, query, eval and serve name it alike."""
        if meta and self.fingerprint and self.fingerprint == meta.get("model_fingerprint") and meta.get("model"):
            self.name = model_display_name(meta["model"])
        if meta and self.text_fingerprint and self.text_fingerprint == meta.get("text_model_fingerprint") \
                and meta.get("text_model"):
            self.text_name = model_display_name(meta["text_model"])
        return self

    @property
    def image_size(self) -> int | None:
        """The square side (px) the image model's processor crops to, when it says: what decoding may reduce an
        image toward (libjpeg's draft scale, a bicubic shrink to twice the side: ``ingest.images.decode_image``).
        None, so that decoding keeps every pixel, when the processor resizes with another filter than bilinear or
        bicubic (``st_model.decode_side``): under nearest the shortcut moved a vector by up to 0.08 in a component."""
        return decode_side(self.backend.image_size, getattr(self.backend, "image_steps", None))

    @property
    def center_crop(self) -> bool:
        """Whether the image model resizes the shortest edge and crops the centre (so decoding may cut far ends)."""
        return bool(getattr(self.backend, "center_crop", False))

    @property
    def max_text_tokens(self) -> int | None:
        """Tokens (special ones included) a caption is cut at, or None when the text model has no limit."""
        rule = self.text_backend.text_rule
        return rule.max_length if rule else None

    def captions_too_long(self, texts: Sequence[str]) -> list[bool]:
        """For each text, whether the model will cut it at its token limit (the vector ignores the rest)."""
        limit = self.max_text_tokens
        result = [False] * len(texts)
        if not limit:
            return result
        # Every tokenizer mmindex meets (byte-level BPE, WordPiece, SentencePiece with byte fallback)
        # makes at most one token per UTF-8 byte, plus a word-start piece per word and at most four
        # special tokens; only texts above that bound need tokenizing (in one batched call).
        maybe = [i for i, text in enumerate(texts) if len(text.encode("utf-8")) + len(text.split()) + 4 > limit]
        if maybe:
            for i, count in zip(maybe, self.text_backend.token_counts([texts[i] for i in maybe])):
                result[i] = count > limit
        return result

    def encode_images(self, images: Sequence) -> np.ndarray:
        """(n, dim) float32, L2-normalised: RGB PIL images through the image model.

        Raises EncodeError (naming each input the model failed on, with its error) when the forward
        pass raises for some inputs; the error carries the other inputs' vectors.
        """
        return self._raise_failures(list(images), "image")

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised: texts through the text model (cut at ``max_text_tokens``).

        Texts are cleaned as ingest cleans captions (control characters as spaces, ends stripped:
        ``backend.cleaned_texts``).
        Raises EncodeError like ``encode_images``.
        """
        return self._raise_failures(cleaned_texts(texts), "text")

    def encode_each(self, items: Sequence) -> tuple[np.ndarray, dict[int, str]]:
        """Images or texts → ((n, dim) vectors, {index: error} for the inputs the model fails on).

        A forward pass that raises (for any reason but memory) is bisected down to the inputs
        that fail (``isolate``); their rows of the result are NaN.
        """
        items = list(items)
        return isolate(self._encode, items, len(items), part_of, self.dim)

    def _raise_failures(self, items: list, kind: str) -> np.ndarray:
        vectors, failures = self.encode_each(items)
        if failures:
            raise EncodeError(failures, vectors, items, kind)
        return vectors

    # -- the pipelined path: preprocessing in workers, forward passes on ready tensors ----------
    def preprocess(self, items: Sequence) -> dict[str, Any]:
        """Model inputs for images or texts (CPU tensors), ready for ``forward``; thread-safe.

        Runs in the decode workers so that the model's thread only does forward passes. On
        CUDA the tensors are pinned so the host-to-device copy can overlap compute.
        """
        items = list(items)
        if items and isinstance(items[0], str):
            features = dict(self.text_backend.preprocess_texts(items), modality="text")
        else:
            features = dict(self.backend.preprocess_images(items), modality="image")
        if self.device.startswith("cuda"):
            for key, value in features.items():
                if hasattr(value, "pin_memory"):
                    features[key] = value.pin_memory()
        return features

    def forward(self, features: dict[str, Any]) -> np.ndarray:
        """Normalised embeddings for preprocessed inputs; a CUDA out-of-memory error halves the batch."""
        size = batch_size_of(features)
        if size == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if getattr(self._backend_of(features), "torch_free", False):  # numpy in, numpy out, on the CPU
            return self._forward(features)
        # torch takes seconds to import: only code that runs a model loads it
        import torch

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
        return np.concatenate([self.forward(slice_features(features, start, start + part)) for start in range(0, size, part)])

    def _backend_of(self, features: dict[str, Any]) -> "Backend":
        return self.text_backend if features.get("modality", "image") == "text" else self.backend

    def _forward(self, features: dict[str, Any], backend: "Backend | None" = None) -> np.ndarray:
        """Normalised vectors of ``features`` through ``backend`` (default: the one for its modality)."""
        modality = features.get("modality", "image")
        backend = backend or self._backend_of(features)
        if getattr(backend, "torch_free", False):
            return unit_rows(backend.embed(features, modality))
        # torch takes seconds to import: only code that runs a model loads it
        import torch

        on_device = {
            key: value.to(self.device, non_blocking=True) if isinstance(value, torch.Tensor) else value
            for key, value in features.items()
        }
        embeddings = backend.embed(on_device, modality)
        embeddings = torch.nn.functional.normalize(embeddings.float(), p=2, dim=1)
        return embeddings.cpu().numpy()

    def _encode(self, items: list) -> np.ndarray:
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        step = max(1, self.batch_size)
        parts = [self.forward(self.preprocess(items[start:start + step])) for start in range(0, len(items), step)]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def _encoder_of(self, backend: "Backend"):
        """``encode(items, modality)`` through one backend, by mmindex's own path (for ``check_backend``)."""
        def encode(items: list, modality: str) -> np.ndarray:
            features = (backend.preprocess_texts(items) if modality == "text" else backend.preprocess_images(items))
            if getattr(backend, "torch_free", False):
                return self._forward(dict(features, modality=modality), backend)
            # torch takes seconds to import: only code that runs a model loads it
            import torch

            with torch.inference_mode():
                return self._forward(dict(features, modality=modality), backend)

        return encode

    def spec(self) -> "CollectionSpec":
        """The collection spec these models fill: names, vector size and fingerprints."""
        return CollectionSpec(self.name, self.dim, fingerprint=self.fingerprint, text_model=self.text_name,
                              text_fingerprint=self.text_fingerprint, precision=self.precision)

    def recorded(self) -> dict[str, Any]:
        """The model keys a collection records after a run with these models."""
        return {"model": self.name, "model_fingerprint": self.fingerprint, "model_path": self.path,
                "model_revision": hub_revision(self.path or self.name),
                "text_model": self.text_name, "text_model_fingerprint": self.text_fingerprint,
                "text_model_path": self.text_path,
                "text_model_revision": hub_revision(self.text_path or self.text_name) if self.text_name else None}

    def weight_bytes(self) -> int:
        """Bytes of the loaded weights (image and text model), a memory hint for schedulers."""
        parts = {id(b): b for b in (self.backend, self.text_backend)}.values()
        files = sum(part.weight_bytes() for part in parts if part.module is None)  # torch-free: the ONNX files
        modules = {id(b.module): b.module for b in parts if b.module is not None}
        return files + sum(p.numel() * p.element_size() for module in modules.values() for p in module.parameters())

    def replica(self, device: str) -> "Encoder":
        """The same models on another device, for one-replica-per-GPU encoding."""
        twin = copy.copy(self)
        twin.device = pick_device(device)
        twin.backend = self.backend.replica(twin.device)
        twin.text_backend = twin.backend if self.text_backend is self.backend else self.text_backend.replica(twin.device)
        twin.model = getattr(twin.backend, "st", None)
        twin.max_forward, twin.oom_retries = None, 0
        return twin


def unit_rows(vectors) -> np.ndarray:
    """(n, dim) float32 rows scaled to unit L2 norm: x / max(‖x‖₂, 1e-12), as torch.nn.functional.normalize."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, np.float32(1e-12))).astype(np.float32, copy=False)


@dataclass(frozen=True)
class Runtime:
    """How the query model runs (``--device``, ``--backend``, ``--model-threads``)."""

    device: str = "auto"
    backend: str = "auto"
    threads: int | None = None
