"""What ingest keeps of each image so that duplicates can be told apart later without decoding it again.

Per point, in its payload (keys below): a hash of the decoded pixels (the exact tier: the same image under
another encoding or metadata), the decoded size (the keeper is the largest), and a fingerprint — the image at
32×32 in luminance and 16×16 in the two chroma channels (BT.601 YCbCr), 1,536 bytes as base64 — from which the
near-duplicate checks of ``evidence.py`` (a DCT perceptual hash, an aligned residual) are computed.

Why a fingerprint rather than only a 64-bit perceptual hash: a crop of 10% or a text overlay moves a pHash by
20–22 bits while an object moved in an otherwise still scene moves it by 10 (bench/README.md §11), so no hash
threshold keeps "the same photo changed" apart from "another shot". Aligning the two small images and looking
at where they differ does (``evidence.py``).
"""
from __future__ import annotations

import base64
import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, Mapping

import numpy as np
from PIL import Image

PIXELS_KEY = "_pixels"  # SHA-256 (first 32 hex digits) of the decoded pixels, with their size and mode
WIDTH_KEY = "_width"  # the image's width in its file, px (EXIF orientation applied)
HEIGHT_KEY = "_height"
PRINT_KEY = "_print"  # the fingerprint, base64
SIGNAL_KEYS = (PIXELS_KEY, WIDTH_KEY, HEIGHT_KEY, PRINT_KEY)
LUMA = 32  # fingerprint side, luminance (px)
CHROMA = 16  # fingerprint side, each chroma channel (px)
PRINT_BYTES = LUMA * LUMA + 2 * CHROMA * CHROMA
WITH_SIGNALS = {"must_not": [{"is_empty": {"key": PIXELS_KEY}}]}  # Qdrant filter: points that hold the signals
WITHOUT_SIGNALS = {"must": [{"is_empty": {"key": PIXELS_KEY}}]}  # and those that do not


@dataclass(frozen=True)
class ImageSignals:
    """One image's duplicate signals. ``pixels``: hex digest of the decoded pixels; ``width``/``height``: decoded
    size in px; ``fingerprint``: ``PRINT_BYTES`` bytes (Y 32×32, then Cb and Cr 16×16, each +128, row-major)."""

    pixels: str
    width: int
    height: int
    fingerprint: bytes

    def to_payload(self) -> dict[str, Any]:
        return {PIXELS_KEY: self.pixels, WIDTH_KEY: self.width, HEIGHT_KEY: self.height,
                PRINT_KEY: base64.b64encode(self.fingerprint).decode("ascii")}

    @property
    def area(self) -> int:
        return self.width * self.height

    @cached_property
    def planes(self) -> tuple[np.ndarray, np.ndarray]:
        """(Y as float32 32×32, chroma as float32 2×32×32 upsampled from 16×16, centred on 0); made once."""
        raw = np.frombuffer(self.fingerprint, np.uint8)
        luma = raw[:LUMA * LUMA].reshape(LUMA, LUMA).astype(np.float32)
        chroma = raw[LUMA * LUMA:].reshape(2, CHROMA, CHROMA).astype(np.float32) - 128.0
        scale = LUMA // CHROMA
        return luma, np.repeat(np.repeat(chroma, scale, axis=1), scale, axis=2)


    @cached_property
    def phashes(self) -> tuple[np.ndarray, np.ndarray]:
        """The 64-bit perceptual hash of the image and of its mirror image (``phash``), made once."""
        luma = self.planes[0]
        return phash(luma), phash(luma[:, ::-1])


@lru_cache(maxsize=1)
def _dct_matrix() -> np.ndarray:
    """The orthonormal DCT-II matrix for ``LUMA`` samples: ``C @ x`` is ``scipy.fft.dct(x, norm="ortho")``."""
    n = np.arange(LUMA)
    matrix = np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * LUMA)) * math.sqrt(2 / LUMA)
    matrix[0] /= math.sqrt(2)
    return matrix


def phash(luma: np.ndarray) -> np.ndarray:
    """64 bools: the 8×8 lowest frequencies of the 2-D DCT-II of a 32×32 luminance plane, above their median
    (Zauner 2010; imagehash's ``phash`` recipe)."""
    dct = _dct_matrix()
    low = (dct @ luma.astype(np.float64) @ dct.T)[:8, :8]
    return (low > np.median(low)).ravel()


def signals_of(image: Image.Image) -> ImageSignals:
    """The signals of a decoded image (as ``ingest.images.decode_image`` returns it: upright, RGB).

    ``width``/``height``: the image's size in its file (``decode_image`` records it as ``info["source_size"]``),
    else the decoded size. The pixel hash covers the pixels as decoded; a large JPEG that ingest decodes at a reduced scale (libjpeg's
    draft mode) hashes those pixels, so the same picture as a large JPEG and as a PNG is found as a near
    duplicate at distance 0, not as exact (docs/duplicates.md says so).
    """
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    pixels = np.asarray(rgb)
    digest = hashlib.sha256(f"{pixels.shape}".encode() + pixels.tobytes()).hexdigest()[:32]
    width, height = image.info.get("source_size", image.size)  # the file's size, before a reduced decode
    return ImageSignals(digest, int(width), int(height), fingerprint_of(rgb))


def fingerprint_of(rgb: Image.Image) -> bytes:
    """Y at 32×32 and Cb, Cr at 16×16 (Lanczos; BT.601 weights), as ``PRINT_BYTES`` bytes."""
    small = np.asarray(rgb.resize((LUMA, LUMA), Image.LANCZOS), np.float32)
    luma = small @ np.array([0.299, 0.587, 0.114], np.float32)
    blue = 0.564 * (small[..., 2] - luma)
    red = 0.713 * (small[..., 0] - luma)
    half = lambda plane: plane.reshape(CHROMA, LUMA // CHROMA, CHROMA, LUMA // CHROMA).mean(axis=(1, 3))  # noqa: E731
    chroma = np.stack([half(blue), half(red)]) + 128.0
    return (np.clip(np.rint(luma), 0, 255).astype(np.uint8).tobytes()
            + np.clip(np.rint(chroma), 0, 255).astype(np.uint8).tobytes())


def signals_from_payload(payload: Mapping[str, Any]) -> ImageSignals | None:
    """A stored point's signals, or None when it has none (a collection made before them, or a point whose
    fields are damaged: a fingerprint of the wrong length counts as none)."""
    try:
        fingerprint = base64.b64decode(payload[PRINT_KEY], validate=True)
        signals = ImageSignals(str(payload[PIXELS_KEY]), int(payload[WIDTH_KEY]), int(payload[HEIGHT_KEY]),
                               fingerprint)
    except (KeyError, TypeError, ValueError):
        return None
    return signals if len(fingerprint) == PRINT_BYTES else None


def has_signals(payload: Mapping[str, Any]) -> bool:
    return all(key in payload for key in SIGNAL_KEYS)


class SignalCache:
    """The signals of the ``size`` points read most recently, by (point id, pixel hash), so that each one's hashes
    and planes are made once however often it comes back as a candidate (about 14 KB a point with its planes)."""

    def __init__(self, size: int = 4096):
        self.size = size
        self.recent: OrderedDict[tuple[str, Any], ImageSignals | None] = OrderedDict()

    def get(self, point_id: str, payload: Mapping[str, Any]) -> ImageSignals | None:
        """``signals_from_payload(payload)`` for the point ``point_id``, from the cache when it holds them."""
        key = (point_id, payload.get(PIXELS_KEY))
        if key in self.recent:
            self.recent.move_to_end(key)
            return self.recent[key]
        signals = self.recent[key] = signals_from_payload(payload)
        if len(self.recent) > self.size:
            self.recent.popitem(last=False)
        return signals
