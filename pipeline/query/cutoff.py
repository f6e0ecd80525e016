"""``--cutoff auto``: how many of a query's ranked hits are relevant, judged against the same query's scores over a
fixed sample of the collection (its background), instead of a fixed top-k or one global score threshold.

Method (measured against the best global threshold in ``bench/cutoff.py``; figures in docs/retrieval-quality.md):

1. Each hit's cosine score becomes a z-score against the query's own background: z = (s − μ) / σ, with μ and σ
   the mean and standard deviation of the query's scores over the sample (per-query Z-score normalisation,
   Montague and Aslam, "Relevance score normalization for metasearch", CIKM 2001). It removes what one query's
   scores share with all its non-relevant points (a query near the centre of the space scores everything high).
2. z becomes a chance count: e = N·Φ̄(z), how many of the collection's N points would score at least this high if
   the query's scores were normal with the background's μ and σ (Φ̄: the normal upper tail). The best of N points
   that have nothing to do with the query lies near z = Φ̄⁻¹(1/N), higher the larger the collection; judged by e
   instead of z, the top of a collection with nothing relevant in it does not stand out more as it grows.
3. e becomes a probability of relevance by logistic calibration, p = 1 / (1 + exp(−(a + b·log10 e))) (Platt,
   1999), with ``CALIBRATION`` = (a, b) fitted on labelled data (``bench/cutoff.py --fit``: the demo model, seed 0).
4. The cut is the prefix of the hits that maximises the expected F1, estimated by the plug-in rule
   E[F1@k] ≈ 2·Σ_{i≤k} p_i / (k + Σ_i p_i) (Jansche, ACL 2007; Ye, Chai, Lee and Chieu, "Optimizing F-measures:
   a tale of two approaches", ICML 2012). Returning nothing is worth Π(1 − p_i), the probability that no hit is
   relevant (an empty answer then has F1 = 1). With p falling down the ranking this keeps every hit with
   p > F1*/2, hence every hit with p > 1/2 (Lipton, Elkan and Naryanaswamy, "Optimal thresholding of classifiers
   to maximize F1 measure", ECML PKDD 2014), and returns nothing when every p is below 1 / (n + 2).

The count does not change when all scores (hits and background) are shifted by one constant or scaled by one
positive factor (steps 2–4 see z only). A group of hits whose scores tie (within ``SCORE_TIE``) is kept or dropped
whole. What the calibration cannot know: the demo data's relevant points score about as far above their background
as the best few of a collection of pure noise would (e ≈ 2), so in a collection where nothing relates to the query
the cutoff still keeps a handful of hits (about 6 of 100 in ``bench/cutoff.py``'s noise check, at any size).
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any, Sequence
from uuid import UUID

import numpy as np

from mmindex.connectors.base import Store
from mmindex.errors import UsageError

# (a, b) of p = 1 / (1 + exp(-(a + b log10 e))): `python bench/cutoff.py --fit` (demo/shapes-clip, `mmindex sample`
# seed 0, 500 rows; text and image queries; relevant = same colour and shape). p = 1/2 at e = 10^(-a / b).
CALIBRATION = (1.27, -3.20)
CANDIDATES = 100  # hits a search judges: the cutoff sees the top CANDIDATES, then `limit` caps what it returns
BACKGROUND_SIZE = 2000  # points in the background sample (memory: BACKGROUND_SIZE × dim float32)
BACKGROUND_SEED = 0
BACKGROUND_RUNS = 20  # the sample is read as this many runs of consecutive ids, one per 1/20 of the id space
SCORE_TIE = 1e-6  # scores this close are equal (as pipeline/training/evaluate.py's TIE_TOLERANCE)


@dataclass(frozen=True)
class Background:
    """One query's scores over a sample of the collection, and how many points the collection holds.

    ``scores``: (m,) cosines, m ≥ 1; ``population``: N ≥ m, the collection's point count.
    """

    scores: np.ndarray
    population: int


def standard_scores(scores: Sequence[float], background: Background | Sequence[float] | np.ndarray) -> np.ndarray:
    """z = (s − μ) / σ of each score, μ and σ the mean and (population) standard deviation of the background.

    ``scores``: (n,); ``background``: a ``Background`` or its (m,) scores. A background without spread (σ = 0) makes
    every score above μ +inf, below it −inf, and equal to it 0. Returns (n,) float64. Raises UsageError for an
    empty background or a score that is not a finite number.
    """
    values = _finite("scores", scores)
    sample = _finite("background scores", _background(background).scores)
    mean, spread = float(sample.mean()), float(sample.std())
    if spread == 0.0:
        return np.where(values > mean, math.inf, np.where(values < mean, -math.inf, 0.0))
    return (values - mean) / spread


def chance_counts(scores: Sequence[float], background: Background | Sequence[float] | np.ndarray) -> np.ndarray:
    """(n,) e = N·Φ̄(z): points of the collection (N = ``Background.population``; the sample's size for plain
    scores) that a normal background would score at least as high as each hit (module docstring, step 2)."""
    sample = _background(background)
    tail = [0.5 * math.erfc(z / math.sqrt(2.0)) for z in standard_scores(scores, sample)]
    return sample.population * np.asarray(tail, dtype=np.float64)


def relevance_probabilities(scores: Sequence[float],
                            background: Background | Sequence[float] | np.ndarray) -> np.ndarray:
    """(n,) probabilities that each hit is relevant: the logistic ``CALIBRATION`` of log10 of its chance count
    (module docstring, steps 1–3). Raises what ``standard_scores`` raises."""
    intercept, slope = CALIBRATION
    evidence = np.log10(np.maximum(chance_counts(scores, background), 1e-300))
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-(intercept + slope * evidence)))


def relevant_count(scores: Sequence[float], background: Background | Sequence[float] | np.ndarray) -> int:
    """How many of a query's ranked hits are relevant: the number k (0 ≤ k ≤ n) of leading hits to return.

    ``scores``: (n,) cosine scores of the hits, best first (descending; the top ``CANDIDATES`` of the search);
    ``background``: the same query's ``Background`` (``background_scores``), or plain scores over the whole
    collection. The count maximises the expected F1 of the answer (module docstring); a group of tied scores is
    never split. ``limit`` is a cap: a search with ``--cutoff auto`` returns its first min(k, limit) hits (from
    ``offset``), never more than k, and fewer than ``limit`` whenever fewer hits are judged relevant (0 included).
    Raises UsageError for scores that are not in descending order or not finite, or for an empty background.
    """
    values = _finite("scores", scores)
    if values.size == 0:
        return 0
    if np.any(np.diff(values) > 0):
        raise UsageError("the relevance cutoff needs the hits' scores best first (in descending order)")
    chance = relevance_probabilities(values, background)
    cumulative = np.cumsum(chance)
    cuts = np.flatnonzero(np.append(values[:-1] - values[1:] > SCORE_TIE, True)) + 1  # prefix lengths at a drop
    expected_f1 = 2.0 * cumulative[cuts - 1] / (cuts + cumulative[-1])
    best = int(np.argmax(expected_f1))
    none_relevant = math.exp(float(np.sum(np.log1p(-np.minimum(chance, 1.0 - 1e-16)))))
    return 0 if none_relevant > expected_f1[best] else int(cuts[best])


def background_scores(store: Store, vector: Sequence[float], using: str, size: int = BACKGROUND_SIZE,
                      seed: int = BACKGROUND_SEED) -> Background:
    """The ``Background`` of a query: (m,) cosine scores of ``vector`` against the named vectors ``using`` of a
    fixed sample of the collection (m ≤ ``size``), and the collection's point count.

    The sample (``background_sample``) is read once per store, collection and vector name, and read again when the
    collection's point count changes; scoring it is one (m, dim) × (dim,) product in numpy, so both stores give
    the same answer for the same points. Unfiltered on purpose: a filter narrows which hits are shown, not what
    counts as standing out, so a filtered search keeps exactly the relevant hits that pass the filter. Raises
    UsageError for a zero vector.
    """
    query = np.asarray(vector, dtype=np.float64).ravel()
    norm = float(np.linalg.norm(query))
    if not norm or not math.isfinite(norm):
        raise UsageError("the relevance cutoff needs a query vector with a finite, non-zero length")
    population, sample = _sample(store, using, size, seed)
    scores = sample @ (query / norm) if sample.size else np.zeros(0)
    return Background(scores, max(population, len(scores)))


_samples: "weakref.WeakKeyDictionary[Any, dict[tuple, tuple[int, np.ndarray]]]" = weakref.WeakKeyDictionary()


def background_sample(store: Store, using: str, size: int = BACKGROUND_SIZE, seed: int = BACKGROUND_SEED) -> np.ndarray:
    """(m, dim) float64 unit vectors ``using`` of up to ``size`` points of ``store``'s collection, m ≤ ``size``.

    The whole collection when it holds at most ``size`` points; otherwise ``BACKGROUND_RUNS`` runs of consecutive
    ids, the i-th starting at a point of the i-th equal part of the UUID space placed by ``seed`` (point ids are
    UUIDv5 hashes, so a run of ids is a random draw of points; the same on every store, as both order ids alike).
    Points without that vector are skipped. Cached per store object, collection, name, size and seed.
    """
    return _sample(store, using, size, seed)[1]


def _sample(store: Store, using: str, size: int, seed: int) -> tuple[int, np.ndarray]:
    """The collection's point count and ``background_sample``, read again when the count changes."""
    total = store.count()
    key = (store.collection, using, size, seed)
    try:
        cache = _samples.setdefault(store, {})
    except TypeError:  # a store that cannot be weakly referenced is sampled on every call
        cache = {}
    cached = cache.get(key)
    if cached is not None and cached[0] == total:
        return cached
    if total <= size:
        points = _scroll(store, None, total)
    else:
        rng, run = np.random.default_rng(seed), math.ceil(size / BACKGROUND_RUNS)
        points = {}
        for part in range(BACKGROUND_RUNS):
            start = (part * 2**128 + int(rng.integers(0, 2**62)) * 2**66) // BACKGROUND_RUNS
            points.update(_scroll(store, str(UUID(int=start)), run))
        if len(points) < size // 2:  # ids that are not UUIDs sort before them: read from the start instead
            points = _scroll(store, None, size)
    rows = [vectors[using] for _, vectors in sorted(points.items()) if vectors and using in vectors]
    sample = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)[:size]
    if sample.size:
        sample /= np.maximum(np.linalg.norm(sample, axis=1, keepdims=True), 1e-12)
    cache[key] = (total, sample)
    return total, sample


def _scroll(store: Store, offset: str | None, count: int) -> dict[str, Any]:
    """Point id → named vectors of up to ``count`` points in id order from ``offset``."""
    found: dict[str, Any] = {}
    while len(found) < count:
        page, offset = store.scroll(limit=min(256, count - len(found)), offset=offset, with_payload=False,
                                    with_vectors=True)
        found.update((point.id, point.vectors) for point in page)
        if offset is None or not page:
            break
    return found


def _background(background: Background | Sequence[float] | np.ndarray) -> Background:
    if isinstance(background, Background):
        sample = background
    else:
        scores = np.asarray(background, dtype=np.float64).ravel()
        sample = Background(scores, len(scores))
    if len(sample.scores) == 0:
        raise UsageError("the relevance cutoff needs background scores (a sample of the collection), got none")
    return sample


def _finite(name: str, values: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(array)):
        raise UsageError(f"the relevance cutoff needs finite {name}, got {array[~np.isfinite(array)][0]!r}")
    return array
