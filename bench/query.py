"""Benchmark 5 (query): search latency on the embedded store at 1M points, 512-d, HNSW built.

Random unit vectors with a keyword payload field (10 values, indexed). Reports the time to
load, index and open the store, and p50/p99 latency of a top-10 search with and without a
keyword filter (about 10% of points pass), excluding text encoding. Targets: p99 ≤ 20 ms,
filtered p99 ≤ 2× unfiltered.

    python bench/query.py [--points 1000000] [--queries 1000] [--keep DIR]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

import common  # noqa: F401
from common import machine, peak_rss_mb, timed

from mmindex.connectors.base import CollectionSpec, PointRecord, SearchRequest
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.pipeline.records import point_id_from_key

COLORS = ["red", "green", "blue", "yellow", "orange", "purple", "pink", "white", "black", "cyan"]


def build(folder: Path, points: int, dim: int, seed: int = 0) -> dict:
    store = QdrantEdgeStore("bench", data_dir=folder)
    store.ensure_collection(CollectionSpec("random", dim, {"color": "keyword"}))
    store.create_payload_index("color", "keyword")
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    for start in range(0, points, 2000):
        count = min(2000, points - start)
        vectors = rng.normal(size=(count, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.upsert([
            PointRecord(point_id_from_key(start + i), {"image": vectors[i]}, {"color": COLORS[(start + i) % 10]})
            for i in range(count)
        ])
    upsert_seconds = time.perf_counter() - started
    _, index_seconds = timed(store.finish, optimize=True)
    store.close()
    return {"upsert_s": upsert_seconds, "index_s": index_seconds}


def latencies(store, dim: int, queries: int, where: dict | None, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(queries, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for vector in vectors[:20]:  # warm-up
        store.search(SearchRequest(vector=vector, using="image", limit=10, filter=where))
    times = []
    for vector in vectors:
        started = time.perf_counter()
        hits = store.search(SearchRequest(vector=vector, using="image", limit=10, filter=where))
        times.append(time.perf_counter() - started)
        assert len(hits) == 10
    return np.asarray(times) * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--keep", default=None, help="Build into (or reuse) this folder instead of a temporary one.")
    args = parser.parse_args()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp())
    print(f"machine: {machine()}; {args.points:,} points × {args.dim}-d, cosine, keyword index on 'color'")
    try:
        if not (folder / "bench").exists():
            built = build(folder, args.points, args.dim)
            print(f"upsert {built['upsert_s']:.1f}s, HNSW build (optimize) {built['index_s']:.1f}s")
        store = QdrantEdgeStore("bench", data_dir=folder)
        _, load_seconds = timed(store._open)
        info = store.info()
        print(f"load (open the shard): {load_seconds * 1000:.0f} ms; {info.points:,} points")
        plain = latencies(store, args.dim, args.queries, None)
        filtered = latencies(store, args.dim, args.queries, {"must": [{"key": "color", "match": {"value": "blue"}}]})
        store.close()
        for name, values in (("unfiltered", plain), ("color = blue", filtered)):
            print(f"{name:<14} p50 {np.percentile(values, 50):6.2f} ms   p99 {np.percentile(values, 99):6.2f} ms")
        print(f"filtered ÷ unfiltered p99: {np.percentile(filtered, 99) / np.percentile(plain, 99):.2f} (target ≤ 2)")
        print(f"p99 unfiltered {np.percentile(plain, 99):.2f} ms (target ≤ 20 ms); peak RSS {peak_rss_mb():.0f} MB")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
