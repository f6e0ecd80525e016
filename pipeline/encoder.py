"""Load a sentence-transformers CLIP model and turn images and captions into vectors.

One model encodes both modalities into the same space. Vectors come back L2-normalised
as float32 numpy arrays. The device is chosen automatically (CUDA, then Apple MPS, then
CPU); on CUDA the model runs in fp16.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from pipeline.errors import ModelError

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


def model_identity(name: str) -> str:
    """How a model is recorded in a collection: the absolute folder for local models, else the Hub id."""
    if os.path.isdir(name):
        return os.path.abspath(name)
    return name


class Encoder:
    """A CLIP-style sentence-transformers model that embeds images and texts."""

    def __init__(self, model: str = DEFAULT_MODEL, device: str | None = None, batch_size: int = 32):
        self.name = model_identity(model)
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.model = load_model(model, self.device)
        modalities = set(getattr(self.model, "modalities", []) or [])
        if modalities and not {"image", "text"} <= modalities:
            raise ModelError(
                f"model {model!r} encodes {', '.join(sorted(modalities))}, but mmindex needs a model that "
                "encodes both images and text (a CLIP-style model such as clip-ViT-B-32)"
            )
        self.dim = int(self.model.get_embedding_dimension())

    @property
    def image_size(self) -> int | None:
        """The square side the model's image processor crops to, when it says."""
        processor = getattr(self.model[0], "processor", None)
        image_processor = getattr(processor, "image_processor", None)
        crop = getattr(image_processor, "crop_size", None) or getattr(image_processor, "size", None)
        if isinstance(crop, dict):
            values = [v for k, v in crop.items() if k in ("height", "width", "shortest_edge")]
            return int(max(values)) if values else None
        return None

    @property
    def max_text_tokens(self) -> int | None:
        return getattr(self.model, "max_seq_length", None)

    def encode_images(self, images: Sequence) -> np.ndarray:
        return self._encode(list(images))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(list(texts))

    def _encode(self, items: list) -> np.ndarray:
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            items,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


def load_model(model: str, device: str):
    """Load a sentence-transformers model by Hub id or local folder, with a clear error."""
    from sentence_transformers import SentenceTransformer

    quiet_transformers()
    try:
        loaded = SentenceTransformer(model, device=device)
    except Exception as error:
        hint = ""
        if not os.path.isdir(model):
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            hint = (
                " It is not a local folder, so it must come from the Hugging Face Hub"
                + (" — but HF_HUB_OFFLINE=1 is set and it is not in the local cache." if offline else
                   " (is the network reachable, and the name right?).")
                + " Pass --model PATH to a local sentence-transformers CLIP model folder to work offline."
            )
        raise ModelError(f"cannot load model {model!r}: {type(error).__name__}: {error}.{hint}") from error
    if device.startswith("cuda"):
        # fp16 halves memory traffic; CLIP embeddings are unaffected within cosine tolerance.
        loaded = loaded.half()
    loaded.eval()
    return loaded


def quiet_transformers() -> None:
    """Hide transformers' per-file progress bars; mmindex shows its own progress."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
