"""The vectors bench/query.py searches: uniform random, a Gaussian mixture shaped like CLIP image vectors, or the
demo model's own vectors of `mmindex sample` images; the exact top-k of held-out queries (numpy, in blocks); and
the statistics that say how embedding-like a set is.

Every set is generated ``CHUNK`` points at a time from its seed, the same way each time, so the store build and
the exact search regenerate the points instead of holding them (2 GB at 1M × 512-d).
"""
from __future__ import annotations

import functools
import io
import os
from pathlib import Path

import numpy as np

CHUNK = 2000  # points generated (and upserted) at a time
KINDS = ("clustered", "uniform", "demo")
DEMO_MODEL = Path(__file__).resolve().parent.parent / "demo" / "shapes-clip"
CACHE = Path(__file__).resolve().parent / ".cache"


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class UniformVectors:
    """Uniform on the unit sphere: no neighbourhood structure, the worst case for HNSW (the old benchmark)."""

    kind = "uniform"

    def __init__(self, points: int, dim: int = 512, seed: int = 0):
        self.points, self.dim, self.seed = points, dim, seed

    def describe(self) -> str:
        return f"uniform random unit vectors, {self.dim}-d (seed {self.seed}; queries: seed 1)"

    def chunks(self):
        """(index of the first point, (n, dim) float32 unit vectors), ``CHUNK`` points at a time."""
        rng = np.random.default_rng(self.seed)  # one stream, as the old benchmark drew it
        for start in range(0, self.points, CHUNK):
            yield start, unit(rng.normal(size=(min(CHUNK, self.points - start), self.dim)).astype(np.float32))

    def queries(self, count: int) -> np.ndarray:
        return unit(np.random.default_rng(1).normal(size=(count, self.dim)).astype(np.float32))


class ClusteredVectors:
    """A Gaussian mixture shaped like CLIP image vectors, L2-normalised.

    point = normalise(m + c_k + s_k · (√0.75 · A_k z + √0.25 · n / √dim)), with
    - m: one mean direction shared by all points, |m|² = 0.5 (CLIP's image vectors share one: their mean pairwise
      cosine is about 0.5);
    - c_k: the centre of cluster k, one of ``clusters`` (1,000) drawn with E|c|² = 0.33 along a random orthonormal
      basis with a power-law spectrum (variance of axis i ∝ 1/i), so the set is anisotropic as a whole;
    - A_k: ``rank`` (32) random unit axes of its own per cluster with scales ∝ i^-0.35 (variance ∝ i^-0.7), z
      standard normal: each cluster is a flattened, differently oriented ellipsoid; n: isotropic noise;
    - s_k: the cluster's spread, log-normal (σ 0.35), scaled so that the noise holds 0.17 of the energy on average;
    - cluster sizes: weights log-normal (σ 1), so clusters differ in size by an order of magnitude or more.
    The constants were set so that the statistics land where CLIP's do (mean pairwise cosine ~0.5, nearest-neighbour
    cosine ~0.8–0.95): ``statistics`` prints them at every run. Queries are drawn from the same mixture with
    another stream: held out, never points of the set.
    """

    kind = "clustered"
    MEAN_ENERGY, CENTRE_ENERGY, NOISE_ENERGY, ISOTROPIC = 0.5, 0.33, 0.17, 0.25

    def __init__(self, points: int, dim: int = 512, seed: int = 0, clusters: int = 1000, rank: int = 32):
        self.points, self.dim, self.seed, self.clusters, self.rank = points, dim, seed, clusters, rank
        self.mean, self.centres, self.weights, self.spreads, self.axes = mixture(dim, seed, clusters, rank)

    def describe(self) -> str:
        return (f"Gaussian mixture shaped like CLIP image vectors, {self.dim}-d: {self.clusters} clusters "
                f"(log-normal sizes and spreads), rank-{self.rank} anisotropic clusters plus isotropic noise, shared "
                f"mean direction (seed {self.seed}; queries: held-out draws)")

    def draw(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """``count`` points of the mixture, (count, dim) float32 unit vectors."""
        labels = rng.choice(self.clusters, size=count, p=self.weights)
        shapes = rng.standard_normal(size=(count, self.rank), dtype=np.float32)
        noise = rng.standard_normal(size=(count, self.dim), dtype=np.float32) * np.float32(
            np.sqrt(self.ISOTROPIC / self.dim))
        vectors = np.empty((count, self.dim), np.float32)
        order = np.argsort(labels, kind="stable")
        for group in np.split(order, np.flatnonzero(np.diff(labels[order])) + 1):
            k = labels[group[0]]
            spread = shapes[group] @ self.axes[k] * np.float32(np.sqrt(1 - self.ISOTROPIC)) + noise[group]
            vectors[group] = spread * np.float32(self.spreads[k]) + self.centres[k]
        vectors += self.mean
        return unit(vectors)

    def chunks(self):
        for start in range(0, self.points, CHUNK):
            yield start, self.draw(min(CHUNK, self.points - start), np.random.default_rng([self.seed, 1, start // CHUNK]))

    def queries(self, count: int) -> np.ndarray:
        return self.draw(count, np.random.default_rng([self.seed, 2]))


class DemoVectors:
    """The demo model's (demo/shapes-clip, 128-d) image vectors of `mmindex sample` images: points from sample seed
    1, queries from seed 2 (other scenes). Embedded once and cached under bench/.cache/."""

    kind = "demo"

    def __init__(self, points: int, dim: int = 128, seed: int = 0):
        self.points, self.seed = points, seed
        self.vectors = demo_vectors(points, 1)
        self.dim = self.vectors.shape[1]

    def describe(self) -> str:
        return f"demo/shapes-clip image vectors ({self.dim}-d) of `mmindex sample` rows (seed 1; queries: seed 2)"

    def chunks(self):
        for start in range(0, self.points, CHUNK):
            yield start, self.vectors[start:start + CHUNK]

    def queries(self, count: int) -> np.ndarray:
        return demo_vectors(count, 2)


@functools.lru_cache(maxsize=4)
def mixture(dim: int, seed: int, clusters: int, rank: int):
    """The mixture's parameters (ClusteredVectors): mean, centres, weights, spreads, axes; drawn once per process."""
    rng = np.random.default_rng([seed, 0])
    mean = unit(rng.normal(size=(1, dim)))[0] * np.sqrt(ClusteredVectors.MEAN_ENERGY)
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    spectrum = 1.0 / np.arange(1, dim + 1)
    spectrum /= spectrum.sum()
    centres = ((rng.normal(size=(clusters, dim)) * np.sqrt(spectrum)) @ basis.T
               * np.sqrt(ClusteredVectors.CENTRE_ENERGY)).astype(np.float32)
    weights = rng.lognormal(0.0, 1.0, clusters)
    weights /= weights.sum()
    spreads = rng.lognormal(0.0, 0.35, clusters)
    spreads = spreads / np.sqrt((weights * spreads ** 2).sum()) * np.sqrt(ClusteredVectors.NOISE_ENERGY)
    scales = np.arange(1, rank + 1) ** -0.7
    axes = unit(rng.standard_normal(size=(clusters * rank, dim), dtype=np.float32)).reshape(clusters, rank, dim)
    axes *= np.sqrt(scales / scales.sum()).astype(np.float32)[None, :, None]
    return mean.astype(np.float32), centres, weights, spreads, axes


def demo_vectors(rows: int, seed: int) -> np.ndarray:
    """(rows, 128) float32: demo/shapes-clip's vectors of the images of `mmindex sample --rows ROWS --seed SEED`."""
    path = CACHE / f"demo-vectors-{rows}-{seed}.npy"
    if path.is_file():
        return np.load(path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the demo model is a local folder: never ask the Hub
    import pyarrow.parquet as pq  # only the demo set reads Parquet
    from PIL import Image

    from mmindex.pipeline.ingest.sample import write_sample
    from mmindex.pipeline.models.encoder import Encoder

    folder = CACHE / f"demo-sample-{rows}-{seed}"
    write_sample(folder, rows=rows, seed=seed)
    images = [Image.open(io.BytesIO(data)).convert("RGB")
              for data in pq.read_table(folder).column("image").to_pylist()]
    vectors = Encoder(str(DEMO_MODEL), device="cpu").encode_images(images).astype(np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def vector_set(kind: str, points: int, dim: int = 512, seed: int = 0):
    """The set of ``kind`` (one of ``KINDS``) with ``points`` points."""
    if kind == "uniform":
        return UniformVectors(points, dim, seed)
    if kind == "clustered":
        return ClusteredVectors(points, dim, seed)
    if kind == "demo":
        return DemoVectors(points, seed=seed)
    raise ValueError(f"--vectors must be one of {', '.join(KINDS)}, got {kind!r}")


def exact_top(vectors, queries: np.ndarray, k: int = 10, block: int = 50_000, groups: int = 10):
    """Exact top-k by cosine (unit vectors: the dot product) of each query, over all points and over the points
    whose index % ``groups`` == 2 (the benchmark's ``color = blue``), in blocks of ``block`` points so that memory
    stays small at 1M points.

    Returns {"all": (scores, indices), "blue": (scores, indices)}, each (queries, k), best first.
    """
    best = {name: (np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64))
            for name in ("all", "blue")}

    def merge(name, scores, indices):
        scores = np.concatenate([best[name][0], scores], axis=1)
        indices = np.concatenate([best[name][1], np.broadcast_to(indices, (len(queries), len(indices)))], axis=1)
        if scores.shape[1] > k:
            keep = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            scores, indices = np.take_along_axis(scores, keep, 1), np.take_along_axis(indices, keep, 1)
        best[name] = (scores, indices)

    pending, first = [], 0
    for start, chunk in vectors.chunks():
        if not pending:
            first = start
        pending.append(chunk)
        if sum(len(c) for c in pending) >= block or start + len(chunk) == vectors.points:
            matrix = np.concatenate(pending)
            pending = []
            indices = np.arange(first, first + len(matrix))
            scores = queries @ matrix.T
            merge("all", scores, indices)
            mask = indices % groups == 2
            merge("blue", scores[:, mask], indices[mask])
    ordered = {}
    for name, (scores, indices) in best.items():
        order = np.argsort(-scores, axis=1, kind="stable")
        ordered[name] = (np.take_along_axis(scores, order, 1), np.take_along_axis(indices, order, 1))
    return ordered


def statistics(vectors, nearest: np.ndarray, sample: int = 5000, pairs: int = 2000) -> dict[str, float]:
    """How embedding-like a set is: the mean and spread of the cosine of random pairs of points (over the first
    ``pairs`` points, all pairs), the nearest-neighbour cosine of the held-out queries (``nearest``: each query's
    exact top-1 score) at p10/p50/p90, and the participation ratio (Σλ)²/Σλ² of the points' covariance (an
    effective dimension: 1 for a line, dim for an isotropic cloud) over the first ``sample`` points."""
    taken, parts = 0, []
    for _, chunk in vectors.chunks():
        parts.append(chunk[:sample - taken])
        taken += len(parts[-1])
        if taken >= sample:
            break
    points = np.concatenate(parts).astype(np.float64)
    head = points[:pairs]
    cosines = (head @ head.T)[np.triu_indices(len(head), 1)]
    centred = points - points.mean(axis=0)
    eigenvalues = np.linalg.eigvalsh(centred.T @ centred)
    return {"pair_cos_mean": float(cosines.mean()), "pair_cos_sd": float(cosines.std()),
            "nn_cos_p10": float(np.percentile(nearest, 10)), "nn_cos_p50": float(np.percentile(nearest, 50)),
            "nn_cos_p90": float(np.percentile(nearest, 90)),
            "participation_ratio": float(eigenvalues.sum() ** 2 / (eigenvalues ** 2).sum()),
            "sample": len(points)}
