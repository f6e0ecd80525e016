"""The one interface a model library speaks to mmindex: preprocess, embed, and a reference to check against.

``Encoder`` (pipeline/models/encoder.py) drives a ``Backend``; each model library has one:
``st_model.SentenceTransformerModel`` (sentence-transformers folders, plain transformers CLIP /
SigLIP / Chinese-CLIP folders, text-only sentence-transformers models) and
``open_clip_model.OpenClipModel`` (open_clip checkpoints). ``check_backend`` runs when a model
is loaded and refuses one that mmindex would embed differently from the model's own reference
implementation.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np
from PIL import Image

from mmindex.errors import ModelError

# Control characters (C0 but tab and line breaks, DEL, C1, the Unicode line and paragraph separators): ingest turns
# them into spaces in captions (ingest/records.clean_caption), and every text embedded is cleaned the same way.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")
# Lone surrogates: bytes that were not UTF-8 (a Latin-1 terminal's argv, a JSON \ud800); embedded as U+FFFD, the
# replacement character ingest puts for bad UTF-8 in captions.
SURROGATE = re.compile(r"[\ud800-\udfff]")


def cleaned_texts(texts: Sequence[Any]) -> list[Any]:
    """``texts`` cleaned as ingest cleans captions: control characters (``CONTROL``) as spaces, bytes that were not
    UTF-8 (``SURROGATE``) as U+FFFD, then leading and
    trailing whitespace removed, so that a query, an ``/embed`` text or a label prompt embeds as the caption ingest
    stored from the same text does (non-strings are left for the model to fail on, by name)."""
    return [SURROGATE.sub("\ufffd", CONTROL.sub(" ", text)).strip() if isinstance(text, str) else text
            for text in texts]


def blank_text(value: Any) -> bool:
    """Whether ``value`` is empty once cleaned (``cleaned_texts``): what ingest stores as no caption, and a query
    refuses as an empty text (only spaces or control characters)."""
    return not cleaned_texts([str(value)])[0]


@dataclass(frozen=True)
class TextRule:
    """How a model's captions become token ids: where they are cut and how a batch is padded.

    ``max_length`` counts tokens with the special ones; ``padding`` is ``"longest"`` (pad to the
    longest caption of the batch, for models that pool by attention mask or at the end token) or
    ``"max_length"`` (every caption padded to ``max_length``, for models trained that way and
    pooling a fixed position, such as SigLIP). ``source`` says where the limit came from.
    """

    max_length: int | None
    padding: str = "longest"
    source: str = ""


class Backend(Protocol):
    """A loaded model as mmindex drives it. All tensors are torch tensors; vectors are (n, dim) float.

    - ``modalities``: ``{"image", "text"}`` for a CLIP-style model, ``{"text"}`` for a text model.
    - ``dim``: the size of the vectors ``embed`` returns.
    - ``image_size``: the square side images are resized/cropped to (None for a text model).
    - ``text_rule``: the truncation and padding applied to captions.
    - ``center_crop``: the image is resized by its shortest edge and its centre square kept (CLIP); False
      when the whole image is resized (SigLIP, Chinese-CLIP) or padded.
    - ``module``: the ``torch.nn.Module`` holding the weights (moved, cast and copied by ``Encoder``).
    """

    kind: str
    modalities: frozenset[str]
    dim: int
    image_size: int | None
    center_crop: bool
    text_rule: TextRule | None
    module: Any

    def preprocess_images(self, images: Sequence[Any]) -> dict[str, Any]:
        """CPU tensors for RGB PIL images, ready for ``embed``; thread-safe (decode workers call it)."""

    def preprocess_texts(self, texts: Sequence[str]) -> dict[str, Any]:
        """CPU tensors for texts, truncated and padded by ``text_rule``; thread-safe."""

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens in each text before truncation, special tokens included; thread-safe."""

    def embed(self, features: dict[str, Any], modality: str) -> Any:
        """(n, dim) vectors for ``preprocess_*`` output already moved to the model's device."""

    def replica(self, device: str) -> "Backend":
        """The same model on another device, for one replica per GPU."""

    def reference(self, items: Sequence[Any], modality: str) -> np.ndarray | None:
        """(n, dim) L2-normalised vectors from the model library's own documented path, one item at a
        time (transformers' ``get_text_features``/``get_image_features`` with its processor, open_clip's
        ``encode_text``/``encode_image`` with its tokenizer and transform); None when there is none."""


def check_backend(backend: Backend, name: str, encode, tolerance: float) -> None:
    """Refuse a model mmindex would embed wrongly. ``encode(items, modality)`` is mmindex's own path.

    Three checks, on a few probe captions (short, non-Latin, and one longer than the model's
    limit) and probe images:
    1. each probe alone, through mmindex, equals the library's reference (max abs difference of
       normalised vectors ≤ ``tolerance``);
    2. a caption's vector does not depend on its batch-mates (alone vs in a batch with the long one);
    3. the over-long caption is cut at the model's limit instead of failing.
    Raises ModelError naming the check and the difference measured.
    """
    rng = np.random.default_rng(7)
    if "text" in backend.modalities:
        short = ["a red circle", "蓝色的三角形", "x"]
        rule = backend.text_rule
        limit = rule.max_length if rule and rule.max_length else 512
        long = " ".join(["a small green square on the left on a gray background"] * (limit // 4 + 4))
        try:
            together = encode(short + [long], "text")
        except Exception as error:
            raise ModelError(
                f"model {name!r}: a caption longer than its {limit}-token limit fails instead of being cut "
                f"({type(error).__name__}: {error}); its tokenizer and config do not say where to truncate"
            ) from error
        alone = np.concatenate([encode([text], "text") for text in short])
        _compare(name, "a caption's vector depends on the other captions in its batch (padding)",
                 alone, together[: len(short)], tolerance)
        expected = backend.reference(short, "text")
        if expected is not None:
            _compare(name, "caption vectors differ from the model's reference implementation", alone, expected,
                     tolerance)
        counts = backend.token_counts([long])
        if rule and rule.max_length and counts[0] <= rule.max_length:
            raise ModelError(f"model {name!r}: its tokenizer counts {counts[0]} tokens in a caption that should "
                             f"exceed its {rule.max_length}-token limit, so over-long captions would not be flagged")
    if "image" in backend.modalities:
        probes = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((61, 93), (240, 200))]
        ours = np.concatenate([encode([image], "image") for image in probes])
        together = encode(probes, "image")
        _compare(name, "an image's vector depends on the other images in its batch", ours, together, tolerance)
        expected = backend.reference(probes, "image")
        if expected is not None:
            _compare(name, "image vectors differ from the model's reference implementation", ours, expected,
                     tolerance)


def _compare(name: str, what: str, got: np.ndarray, expected: np.ndarray, tolerance: float) -> None:
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if got.shape != expected.shape:
        raise ModelError(f"model {name!r} cannot be used: {what} (shapes {got.shape} and {expected.shape})")
    difference = float(np.abs(got - expected).max()) if got.size else 0.0
    if not difference <= tolerance:
        raise ModelError(
            f"model {name!r} cannot be used: {what} (max difference {difference:.2g} > {tolerance:g}). "
            "mmindex refuses models it would embed differently from their own library; please report it "
            "with the model's name"
        )


def isolate(run: Callable[[Any], np.ndarray], items: Any, size: int, part: Callable[[Any, int, int], Any],
            dim: int) -> tuple[np.ndarray, dict[int, str]]:
    """``run(items)`` (``size`` rows → ``size × dim`` vectors), bisected down to the rows that raise.

    Returns the vectors (a failing row's are NaN) and each failing row's error by index. Out of
    memory is not a row's fault: it is raised (``Encoder.forward`` has already halved the batch).
    """
    if size == 0:
        return np.zeros((0, dim), dtype=np.float32), {}
    try:
        return np.asarray(run(items), dtype=np.float32), {}
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as error:  # noqa: BLE001 - narrowed down to the rows, then reported per row
        if _is_out_of_memory(error):
            raise
        if size == 1:
            return np.full((1, dim), np.nan, dtype=np.float32), {0: f"{type(error).__name__}: {error}"}
    half = size // 2
    first, first_errors = isolate(run, part(items, 0, half), half, part, dim)
    second, second_errors = isolate(run, part(items, half, size), size - half, part, dim)
    return np.concatenate([first, second]), {**first_errors, **{half + i: e for i, e in second_errors.items()}}


def part_of(items: list, start: int, stop: int) -> list:
    return items[start:stop]


def _is_out_of_memory(error: BaseException) -> bool:
    torch = sys.modules.get("torch")  # not imported by the fast query path, whose errors are never torch's
    return torch is not None and isinstance(error, torch.OutOfMemoryError)


def batch_size_of(features: dict[str, Any]) -> int:
    """Rows in a batch of model features: the first dimension of its first array (0 for none)."""
    for value in features.values():
        if hasattr(value, "shape") and len(value.shape) > 0:
            return int(value.shape[0])
    return 0


def slice_features(features: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    """Rows ``start:stop`` of a batch of model features (arrays sliced, other values kept): ``isolate``'s ``part``."""
    return {
        key: value[start:stop] if hasattr(value, "shape") and len(value.shape) > 0 else value
        for key, value in features.items()
    }
