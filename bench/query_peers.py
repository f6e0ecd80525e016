"""The baselines bench/query.py runs beside the store: exact search in numpy (one query at a time, one thread and
all threads) and qdrant-client's local mode (``QdrantClient(path=...)``, a brute-force scan in Python)."""
from __future__ import annotations

import os
import shutil
import tempfile
import time

import numpy as np
from query_store import COLORS, WARM_UP, MemoryPeaks, load_average
from threadpoolctl import threadpool_limits
from vector_sets import vector_set


def numpy_top(matrix: np.ndarray, query: np.ndarray, k: int = 10) -> np.ndarray:
    """Indices of the ``k`` best points by dot product (cosine: unit vectors), best first."""
    scores = matrix @ query
    best = np.argpartition(-scores, k - 1)[:k]
    return best[np.argsort(-scores[best])]


def timed_searches(search, queries: np.ndarray, truth: np.ndarray) -> dict:
    """Time ``search(query) → indices`` per query (after a warm-up) and count Recall@10 against ``truth``."""
    for query in queries[:WARM_UP]:
        search(query)
    times, found = [], 0
    for query, expected in zip(queries, truth):
        started = time.perf_counter()
        found_indices = search(query)
        times.append(time.perf_counter() - started)
        found += len(set(expected.tolist()) & set(int(i) for i in found_indices))
    milliseconds = np.asarray(times) * 1000
    return {"hnsw_ef": None, "oversampling": None, "recall": found / truth.size,
            "p50_ms": float(np.percentile(milliseconds, 50)), "p99_ms": float(np.percentile(milliseconds, 99)),
            "qps": float(1000 / milliseconds.mean()), "queries": len(queries)}


def numpy_rows(job: dict) -> list[dict]:
    """Exact search in numpy over the points held as one float32 matrix: one query at a time, with BLAS limited to
    one thread, then with all of them (``os.cpu_count()``)."""
    vectors = vector_set(**job["vectors"])
    matrix = np.concatenate([chunk for _, chunk in vectors.chunks()])
    queries, truth = vectors.queries(job["queries"])[:job["count"]], job["truth"][:job["count"]]
    rows = []
    for threads in (1, os.cpu_count()):
        with threadpool_limits(limits=threads):
            row = timed_searches(lambda query: numpy_top(matrix, query), queries, truth)
        rows.append({"setting": f"numpy exact, {threads} thread{'s' if threads > 1 else ''}", **row,
                     "load_avg_end": list(load_average())})
    return rows


def qdrant_local_row(job: dict) -> dict:
    """qdrant-client's local mode: every point upserted into ``QdrantClient(":memory:")`` (timed), then ``count``
    queries searched there; and the first ``path_points`` points upserted into ``QdrantClient(path=...)`` (timed).

    Both modes search the same way (the points held in numpy arrays, a scan per query in Python); the on-disk one
    also writes each point to SQLite and commits it, one point at a time, which makes its upsert ~100× slower.
    """
    from qdrant_client import QdrantClient  # only this baseline uses qdrant-client directly

    vectors = vector_set(**job["vectors"])
    peaks = MemoryPeaks()
    client = QdrantClient(":memory:")
    upsert_seconds = local_upsert(client, vectors, vectors.points)
    queries, truth = vectors.queries(job["queries"])[:job["count"]], job["truth"][:job["count"]]

    def search(query):
        return [point.id for point in client.query_points("bench", query=query.tolist(), using="image",
                                                             limit=10).points]

    row = timed_searches(search, queries, truth)
    client.close()
    peak = peaks.stop()
    folder = tempfile.mkdtemp()
    try:
        on_disk = QdrantClient(path=folder)
        path_points = min(job["path_points"], vectors.points)
        path_seconds = local_upsert(on_disk, vectors, path_points)
        on_disk.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"    qdrant-client local mode: upsert {upsert_seconds:.1f}s in memory; on disk (path=) "
          f"{path_seconds:.1f}s for the first {path_points:,} points, {path_seconds / path_points * 1000:.2f} ms a "
          f"point", flush=True)
    return {"setting": "qdrant-client local", **row, "peak_anon_mb": peak["RssAnon"],
            "build": {"upsert_s": upsert_seconds, "path_points": path_points, "path_upsert_s": path_seconds},
            "load_avg_end": list(load_average())}


def local_upsert(client, vectors, points: int) -> float:
    """Create the collection and upsert the first ``points`` points (with their ``color``); seconds it took."""
    from qdrant_client import models  # only this baseline uses qdrant-client directly

    client.create_collection("bench", vectors_config={
        "image": models.VectorParams(size=vectors.dim, distance=models.Distance.COSINE)})
    started = time.perf_counter()
    for start, chunk in vectors.chunks():
        if start >= points:
            break
        client.upsert("bench", points=[
            models.PointStruct(id=start + i, vector={"image": chunk[i].tolist()},
                               payload={"color": COLORS[(start + i) % 10]}) for i in range(min(len(chunk), points - start))])
    return time.perf_counter() - started
