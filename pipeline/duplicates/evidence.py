"""The tier of two images, and the evidence for it, from their stored signals (``signals.py``) and the cosine of
their image vectors.

Tiers, checked in this order:

- **exact** — the decoded pixels are equal (the same image under another encoding or metadata).
- **near** — the same photo changed (resized, recompressed, cropped by up to 12.5% of a side in total, colour or
  brightness changed, a text overlay, mirrored). Five checks, all must hold:
    1. ``hash_distance`` ≤ ``max_hash``: bits that differ between the 64-bit DCT perceptual hashes
       (Zauner 2010, imagehash's ``phash`` recipe: 32×32 luminance → 2-D DCT-II → the 8×8 lowest frequencies →
       above their median), the smaller of plain and mirrored;
    2. ``residual`` ≤ ``max_residual``: the second image is aligned to the first — the window of one, scaled by
       0.875–1 per axis and shifted, that differs least from the other, either way round, either way mirrored
       (whole-pixel windows first, then half-pixel ones within a pixel of the best) — and after each is
       normalised (luminance to zero mean and unit deviation; chroma centred, in the same units), ``residual``
       is the share of the 32×32 cells where they still differ by more than 1 deviation;
    3. ``colour_shift`` ≤ ``max_colour``: the larger difference of the mean Cb and mean Cr (8-bit levels). The
       residual compares colours after centring them, so that a brightness or saturation change passes; this
       check keeps two images of one pattern in other colours apart (near pairs of the labelled set shift by at
       most 13.4 levels; pairs of different images by 27 at the median);
    4. ``difference`` ≤ ``max_difference``: the mean absolute difference of the aligned luminance planes, each
       centred, in 8-bit levels. The residual is measured in each image's own deviations, so two faint, smooth
       images (a sky, a gradient) can match in shape while differing plainly in contrast; this check keeps
       them apart (near pairs of the labelled set: at most 7.7 levels);
    5. ``displaced`` ≤ ``max_displaced``: ``residual`` × the *moved-content score*, the depth of the strongest
       negative peak of the residual's autocorrelation away from the origin, over its energy (0–0.5). Content
       that moved leaves the same patch with opposite signs in two places (a peak near −0.5); content added on
       top (a caption, a watermark) or a crop's border leaves one region (no such peak). This is what keeps an
       object moved in a still scene ("similar") apart from a text overlay ("near"), which differ in as many
       cells.
- **similar** — neither, and the image vectors' cosine ≥ ``similar_cosine`` (another shot of the same scene).
- **different** — anything else.

The defaults were chosen on seed 0 of the labelled set (``tests/helpers/duplicate_data.py``) and are reported
on seed 1 by ``python bench/duplicate_signals.py`` (bench/README.md §11); ``similar_cosine`` is the demo model's
and is a property of the model: measure it for yours with the same bench.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from mmindex.errors import UsageError
from mmindex.pipeline.duplicates.signals import LUMA, ImageSignals

TIERS = ("exact", "near", "similar")  # strongest first; "different" pairs are never reported
SMALLEST_WINDOW = 0.875  # the alignment tries windows down to this share of each side (28 of 32 cells)


@dataclass(frozen=True)
class Thresholds:
    """The near and similar rules' limits (module docstring). ``min_cosine``: neighbours below this cosine are
    never compared (the candidate search's floor); it must not exceed ``similar_cosine``."""

    max_hash: int = 22
    max_colour: float = 20.0
    max_residual: float = 0.12
    max_difference: float = 10.0
    max_displaced: float = 0.007
    similar_cosine: float = 0.93
    min_cosine: float = 0.6

    def __post_init__(self):
        checks = [
            (0 <= self.max_hash <= 64, f"--max-hash must be 0..64 bits, not {self.max_hash}"),
            (0 <= self.max_colour <= 255, f"--max-colour must be 0..255 (8-bit chroma levels), not {self.max_colour}"),
            (0 <= self.max_difference <= 255,
             f"--max-difference must be 0..255 (8-bit levels), not {self.max_difference}"),
            (0 <= self.max_residual <= 1, f"--max-residual must be 0..1 (a share of cells), not {self.max_residual}"),
            (0 <= self.max_displaced <= 0.5, f"--max-displaced must be 0..0.5, not {self.max_displaced}"),
            (-1 <= self.similar_cosine <= 1, f"--similar-cosine must be -1..1, not {self.similar_cosine}"),
            (-1 <= self.min_cosine <= 1, f"--min-cosine must be -1..1, not {self.min_cosine}"),
            (self.min_cosine <= self.similar_cosine,
             f"--min-cosine ({self.min_cosine}) must not exceed --similar-cosine ({self.similar_cosine}): "
             "pairs between them would never be compared"),
        ]
        for ok, message in checks:
            if not ok:  # nan and ±inf fail their range check, so the message names the option
                raise UsageError(message)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PairEvidence:
    """Why two images are in a tier. ``hash_distance`` (bits of 64), ``residual`` (share of cells) and
    ``displaced`` are None when the check was not needed (exact pairs) or not reached."""

    tier: str  # exact, near, similar or different
    cosine: float | None = None
    hash_distance: int | None = None
    colour_shift: float | None = None
    residual: float | None = None
    difference: float | None = None
    displaced: float | None = None
    mirrored: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {key: (round(value, 6) if isinstance(value, float) else value) for key, value in asdict(self).items()}

    @classmethod
    def exact(cls, cosine: float | None = None) -> "PairEvidence":
        """Equal decoded pixels: every distance 0."""
        return cls("exact", cosine, 0, 0.0, 0.0, 0.0, 0.0)


def compare(a: ImageSignals, b: ImageSignals, cosine: float | None, thresholds: Thresholds = Thresholds()) -> PairEvidence:
    """The tier of images ``a`` and ``b`` and its evidence (module docstring), the same either way round.
    ``cosine``: of their image vectors (None: unknown, then a pair that is not near is "different")."""
    if same_pixels(a, b):
        return PairEvidence.exact(cosine)
    if (b.pixels, b.fingerprint) < (a.pixels, a.fingerprint):
        a, b = b, a  # one order for every pair: compare(a, b) and compare(b, a) give the same evidence
    (hash_a, _), (hash_b, hash_b_mirrored) = a.phashes, b.phashes
    distance = min(hamming(hash_a, hash_b), hamming(hash_a, hash_b_mirrored))
    similar = cosine is not None and cosine >= thresholds.similar_cosine
    if distance > thresholds.max_hash:
        return PairEvidence("similar" if similar else "different", cosine, distance)
    shift = colour_shift(a, b)
    if shift > thresholds.max_colour:
        return PairEvidence("similar" if similar else "different", cosine, distance, shift)
    residual, difference, displaced, mirrored = aligned_residual(a.planes, b.planes, thresholds)
    near = (residual <= thresholds.max_residual and difference <= thresholds.max_difference
            and displaced <= thresholds.max_displaced)
    tier = "near" if near else "similar" if similar else "different"
    return PairEvidence(tier, cosine, distance, shift, residual, difference, displaced, mirrored)


def same_pixels(a: ImageSignals, b: ImageSignals) -> bool:
    """The exact tier: equal decoded pixels (hash) of images of one size."""
    return a.pixels == b.pixels and (a.width, a.height) == (b.width, b.height)


def colour_shift(a: ImageSignals, b: ImageSignals) -> float:
    """The larger difference of the two images' mean Cb and mean Cr, in 8-bit chroma levels (0–255)."""
    return float(np.abs(a.planes[1].mean(axis=(1, 2)) - b.planes[1].mean(axis=(1, 2))).max())


# -- perceptual hash -----------------------------------------------------------------------------------------
def hamming(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.count_nonzero(a != b))


# -- alignment and residual ------------------------------------------------------------------------------------
def _resampler(size: float, offset: float) -> np.ndarray:
    """(LUMA, LUMA) matrix resampling the window [offset, offset+size) of one axis to LUMA samples (linear)."""
    position = np.clip(offset + (np.arange(LUMA) + 0.5) * size / LUMA - 0.5, 0, LUMA - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, LUMA - 1)
    weight = (position - low).astype(np.float32)
    matrix = np.zeros((LUMA, LUMA), np.float32)
    matrix[np.arange(LUMA), low] += 1 - weight
    matrix[np.arange(LUMA), high] += weight
    return matrix


@lru_cache(maxsize=1)
def _windows() -> tuple[np.ndarray, np.ndarray]:
    """Every window per axis, as (resamplers (W, 32, 32), (size, offset) pairs (W, 2)): sizes from
    ``SMALLEST_WINDOW`` of the side to all of it and offsets, in half-pixel steps. The last is the whole side."""
    params = [(size, offset) for size in np.arange(LUMA * SMALLEST_WINDOW, LUMA + 1e-6, 0.5)
              for offset in np.arange(0, LUMA - size + 1e-6, 0.5)]
    params.sort(key=lambda p: (p[0] == LUMA, p))
    return np.stack([_resampler(size, offset) for size, offset in params]), np.array(params)


@lru_cache(maxsize=1)
def _coarse() -> np.ndarray:
    """The windows of whole-pixel sizes and offsets: the first pass of the search."""
    _, params = _windows()
    return np.flatnonzero((params % 1 == 0).all(axis=1))


def _normalised(luma: np.ndarray) -> np.ndarray:
    centred = luma - luma.mean(axis=(-1, -2), keepdims=True)
    return centred / (centred.std(axis=(-1, -2), keepdims=True) + 1e-3)


def aligned_residual(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray],
                     thresholds: Thresholds | None = None) -> tuple[float, float, float, bool]:
    """(residual, difference, displaced, mirrored) at the best alignment of ``b`` to ``a`` (module docstring).

    With ``thresholds``, the images as they are (plain or mirrored, whichever differs less) are tried first, and
    the search over windows is skipped when that passes the near rule with half its limits (resized, recompressed, recoloured,
    captioned and mirrored copies): a tenth of the work for most near pairs.
    """
    windows, params = _windows()
    whole = len(windows) - 1
    if thresholds is not None:
        mirrored = _error(a[0], b[0][:, ::-1]) < _error(a[0], b[0])
        residual, difference, displaced = _difference(a, b, windows[whole], windows[whole], mirrored)
        if (residual <= thresholds.max_residual / 2 and difference <= thresholds.max_difference / 2
                and displaced <= thresholds.max_displaced / 2):
            return residual, difference, displaced, mirrored  # clearly near as they are; a borderline pair is searched
    best = None
    for big, small in ((a, b), (b, a)):
        for mirrored in (False, True):
            target = _normalised(small[0][:, ::-1] if mirrored else small[0])
            rows, columns, error = _best_window(big[0], target, _coarse(), _coarse())
            if best is None or error < best[0]:
                best = (error, big, small, mirrored, target, rows, columns)
    _, big, small, mirrored, target, rows, columns = best
    rows, columns, _ = _best_window(big[0], target, _near(params, rows), _near(params, columns))
    residual, difference, displaced = _difference(big, small, windows[rows], windows[columns], mirrored)
    return residual, difference, displaced, bool(mirrored)


def _best_window(luma: np.ndarray, target: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> tuple[int, int, float]:
    """The (row window, column window) of ``luma`` among the candidates whose normalised resampling differs
    least from ``target`` (mean absolute difference), and that difference."""
    windows, _ = _windows()
    resampled = (windows[rows][:, None] @ luma[None, None])[:, 0]  # (R, 32, 32)
    grid = _normalised(resampled[:, None] @ windows[columns].transpose(0, 2, 1)[None])  # (R, C, 32, 32)
    error = np.abs(grid - target).mean(axis=(-1, -2))
    row, column = np.unravel_index(int(np.argmin(error)), error.shape)
    return int(rows[row]), int(columns[column]), float(error[row, column])


def _near(params: np.ndarray, chosen: int) -> np.ndarray:
    """The windows within one pixel of ``chosen`` in size and offset: the second pass of the search."""
    return np.flatnonzero((np.abs(params - params[chosen]) <= 1.0).all(axis=1))


def _error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(_normalised(a) - _normalised(b)).mean())


def _difference(big: tuple[np.ndarray, np.ndarray], small: tuple[np.ndarray, np.ndarray], rows: np.ndarray,
                columns: np.ndarray, mirrored: bool) -> tuple[float, float, float]:
    """(residual, difference, displaced) of ``small`` against the window (``rows``, ``columns`` resamplers) of ``big``."""
    luma_fit = rows @ big[0] @ columns.T
    chroma_fit = np.stack([rows @ plane @ columns.T for plane in big[1]])
    luma_small, chroma_small = small
    if mirrored:
        luma_small, chroma_small = luma_small[:, ::-1], chroma_small[:, :, ::-1]
    deviation = float(luma_fit.std()) + 1e-3
    luma_diff = _normalised(luma_small) - _normalised(luma_fit)
    chroma_diff = ((chroma_small - chroma_small.mean(axis=(1, 2), keepdims=True))
                   - (chroma_fit - chroma_fit.mean(axis=(1, 2), keepdims=True))) / deviation
    worst = np.maximum(np.abs(luma_diff), np.abs(chroma_diff).max(axis=0))
    residual = float((worst > 1.0).mean())
    moved = max(_moved_content(plane) for plane in (luma_diff, *chroma_diff))
    difference = float(np.abs((luma_small - luma_small.mean()) - (luma_fit - luma_fit.mean())).mean())
    return residual, difference, residual * moved


def _moved_content(difference: np.ndarray) -> float:
    """The strongest negative autocorrelation of the (thresholded) signed difference away from the origin
    (shifts of more than 2 cells on some axis), over its energy: near 0.5 when a patch left one place for another."""
    kept = np.where(np.abs(difference) > 0.5, difference, 0.0)
    energy = float((kept * kept).sum())
    if energy <= 1e-6:
        return 0.0
    side = 2 * LUMA
    spectrum = np.fft.rfft2(kept, s=(side, side))
    correlation = np.fft.irfft2(spectrum * np.conj(spectrum), s=(side, side))
    shift = np.minimum(np.arange(side), side - np.arange(side))
    far = (shift[:, None] > 2) | (shift[None, :] > 2)
    return float(max(0.0, -correlation[far].min()) / energy)
