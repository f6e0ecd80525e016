"""Benchmark 9 (search modes): what the engine-side search surface costs, side by side in one run on the embedded
store (Qdrant Edge), through ``search()`` as the CLI and the service call it.

Contestants, each over the same queries (top-10, no filter, query encoding excluded):
- dense: nearest image vectors;
- hybrid: the dense leg and the BM25 keyword leg (sparse ``keywords`` vector, IDF), fused by the engine (DBSF,
  hybrid's default);
- both, engine fusion: the image and text legs fused by the engine (prefetch + RRF), as ``search`` does now;
- both, Python fusion: the image and text rankings fetched one after the other and fused by RRF in Python, as
  ``search`` did before issue 24 (reimplemented here from ``git show 972e474:pipeline/query/search.py``).
The fusions rank the best ``FUSION_DEPTH`` (100, the default) candidates of each leg, and 1000. Goals (issue 24): hybrid p50 ≤ 1.5 ×
dense p50; engine fusion no slower than Python fusion.

The data: ``--points`` points of ``--dim``-d image and text vectors from a Gaussian mixture (``--clusters``
centres; a point's text vector is its image's centre seen through other noise, as captions sit near their
images), and captions of 8 to 14 words from a Zipf vocabulary (``--vocab`` made-up words, exponent 1.1) mixed
with words of the point's cluster, turned into BM25 vectors by the collection's own rule
(``pipeline/query/keywords.py``). Queries are a cluster centre seen through noise and three words: two of its
cluster's, one from the Zipf vocabulary.

    python bench/search_modes.py [--points 100000] [--queries 300] [--data-dir bench/.cache/search-modes]

The built collection is kept under ``--data-dir`` (one folder per points/dim/clusters/vocab/seed) and reused by the
next run with the same data. The contestants are interleaved query by query (order rotated); the machine's load
average (``os.getloadavg``) during each contestant's calls is printed beside its figures.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
from common import CACHE, timed  # also sets the benchmarks' environment (offline Hub)

from mmindex.connectors.base import CollectionSpec, PointRecord, SearchRequest
from mmindex.pipeline.config import StoreSettings
from mmindex.pipeline.ingest.records import point_id_from_key
from mmindex.pipeline.query.hits import Hit, hit_from
from mmindex.pipeline.query.keywords import SETTINGS_KEY, KeywordSettings, keyword_document, keyword_query
from mmindex.pipeline.query.plan import SearchOptions
from mmindex.pipeline.query.ranking import ranking
from mmindex.pipeline.query.search import FUSION_DEPTH, search

COLLECTION = "search-modes"
CHUNK = 2000
MARKER = "bench.json"
SYLLABLES = [c + v for c in "bdfgklmnprtvz" for v in "aiou"]  # 52 syllables: made-up words, no English stems
OLD_RRF_K = 60  # the Python fusion before issue 24: Σ 1 / (60 + rank), ranks from 1


def made_up_words(count: int, seed: int) -> list[str]:
    """``count`` distinct pronounceable words of 3 to 4 syllables (none an English word or stopword)."""
    rng = np.random.default_rng(seed)
    words: dict[str, None] = {}
    while len(words) < count:
        words["".join(rng.choice(SYLLABLES, size=int(rng.integers(3, 5))))] = None
    return list(words)


class Data:
    """The benchmark's generator: cluster centres, the vocabulary with Zipf weights, each cluster's own words."""

    def __init__(self, dim: int, clusters: int, vocab: int, seed: int):
        rng = np.random.default_rng(seed)
        self.dim, self.seed = dim, seed
        self.centres = unit_rows(rng.normal(size=(clusters, dim)))
        self.words = made_up_words(vocab, seed)
        weights = 1.0 / np.arange(1, vocab + 1) ** 1.1
        self.zipf = weights / weights.sum()
        self.topics = rng.choice(vocab, size=(clusters, 30), replace=False)  # each cluster's 30 own words

    def caption(self, rng: np.random.Generator, cluster: int, words: int) -> str:
        own = rng.random(words) < 0.5
        picked = np.where(own, self.topics[cluster][rng.integers(0, 30, size=words)],
                          rng.choice(len(self.words), size=words, p=self.zipf))
        return " ".join(self.words[i] for i in picked)

    def chunk(self, start: int, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Points ``start`` … ``start + size``: image vectors, text vectors, captions (the same for the same seed)."""
        rng = np.random.default_rng([self.seed, start])
        clusters = rng.integers(0, len(self.centres), size=size)
        images = unit_rows(self.centres[clusters] + rng.normal(scale=0.06, size=(size, self.dim)))
        texts = unit_rows(self.centres[clusters] + rng.normal(scale=0.08, size=(size, self.dim)))
        captions = [self.caption(rng, int(c), int(rng.integers(8, 15))) for c in clusters]
        return images, texts, captions

    def queries(self, count: int) -> list[tuple[np.ndarray, str]]:
        rng = np.random.default_rng([self.seed, 10**9])
        found = []
        for cluster in rng.integers(0, len(self.centres), size=count):
            vector = unit_rows(self.centres[cluster] + rng.normal(scale=0.06, size=self.dim))
            words = [self.words[i] for i in rng.choice(self.topics[cluster], size=2, replace=False)]
            words.append(self.words[int(rng.choice(len(self.words), p=self.zipf))])
            found.append((vector, " ".join(words)))
        return found


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    return matrix / np.linalg.norm(matrix, axis=-1, keepdims=True)


def open_store(folder: Path):
    return StoreSettings(collection=COLLECTION, data_dir=str(folder)).open()


def build(folder: Path, data: Data, points: int) -> dict:
    """Write ``points`` points with image, text and keyword vectors and build the HNSW indexes."""
    store = open_store(folder)
    store.ensure_collection(CollectionSpec("bench-gaussian-mixture", data.dim, {}))
    settings = KeywordSettings()
    store.update_metadata({SETTINGS_KEY: settings.to_record()})
    started = time.perf_counter()
    for start in range(0, points, CHUNK):
        images, texts, captions = data.chunk(start, min(CHUNK, points - start))
        records = []
        for i, caption in enumerate(captions):
            vectors = {"image": images[i], "text": texts[i]}
            words = keyword_document(caption, {}, (), settings)
            if words is not None:
                vectors["keywords"] = words
            records.append(PointRecord(point_id_from_key(start + i), vectors, {"caption": caption}))
        store.upsert(records)
        if (start // CHUNK) % 10 == 9 or start + CHUNK >= points:
            print(f"  upserted {start + len(records):,}/{points:,} in {time.perf_counter() - started:.1f}s",
                  flush=True)
    upsert_seconds = time.perf_counter() - started
    print(f"  building the HNSW indexes (optimize), started {time.strftime('%H:%M:%S')}", flush=True)
    _, index_seconds = timed(store.finish, optimize=True)
    store.close()
    return {"upsert_s": round(upsert_seconds, 1), "index_s": round(index_seconds, 1)}


def python_fusion(store, vector, limit: int = 10, depth: int = FUSION_DEPTH) -> list[Hit]:
    """``search(target="both")`` as it was before issue 24: each vector's exact top ``depth`` (score, then id),
    one search after the other, fused by reciprocal rank fusion in Python, then the page's payloads."""
    store.spec()  # as the old search read the collection's spec before searching

    def request(using: str, size: int) -> SearchRequest:
        return SearchRequest(vector=vector, using=using, limit=size, with_payload=False)

    fused: dict[str, float] = {}
    for using in ("image", "text"):
        for rank, point in enumerate(ranking(store, lambda size: request(using, size), depth)[:depth], start=1):
            fused[point.id] = fused.get(point.id, 0.0) + 1.0 / (OLD_RRF_K + rank)
    shown = {point_id: round(score, 6) for point_id, score in fused.items()}
    page = sorted(shown, key=lambda pid: (-shown[pid], pid))[:limit]
    payloads = {p.id: p.payload for p in store.retrieve(page)} if page else {}
    return [hit_from(point_id, shown[point_id], payloads.get(point_id)) for point_id in page]


def contestants(store, depths: list[int]) -> dict[str, Callable]:
    """Each contestant as ``run(vector, keyword vector)``; the fused ones once per fusion depth."""
    runs: dict[str, Callable] = {"dense (image)": lambda v, words: search(store, v, target="image")}
    for depth in depths:
        runs[f"hybrid, engine DBSF, depth {depth}"] = lambda v, words, d=depth: search(
            store, v, target="image", fusion_depth=d, options=SearchOptions(mode="hybrid", keywords=words))
        runs[f"both, engine fusion, depth {depth}"] = lambda v, words, d=depth: search(
            store, v, target="both", fusion_depth=d)
        runs[f"both, Python fusion, depth {depth}"] = lambda v, words, d=depth: python_fusion(store, v, depth=d)
    return runs


def measure(store, queries: list[tuple[np.ndarray, str]], depths: list[int]) -> dict[str, dict]:
    """Latencies (ms) and the 1-minute load average at each call. Interleaved: each query runs through every
    contestant before the next query, in an order rotated from query to query, so that a change in the
    machine's load (it is shared) falls on every contestant alike."""
    runs = contestants(store, depths)
    meta = store.metadata()
    started = time.perf_counter()
    prepared = [(vector, keyword_query(text, meta, COLLECTION)) for vector, text in queries]
    tokenize_us = (time.perf_counter() - started) / len(queries) * 1e6
    for vector, words in prepared[:20]:  # warm-up: every contestant, the page cache and the engine
        for run in runs.values():
            run(vector, words)
    names = list(runs)
    results = {name: {"ms": [], "load": []} for name in names}
    for index, (vector, words) in enumerate(prepared):
        for name in names[index % len(names):] + names[:index % len(names)]:
            results[name]["load"].append(os.getloadavg()[0])
            began = time.perf_counter()
            hits = runs[name](vector, words)
            results[name]["ms"].append((time.perf_counter() - began) * 1000)
            assert len(hits) == 10, (name, len(hits))
    results["_tokenize_us"] = {"us": tokenize_us}
    return results


def agreement(store, queries, depth: int) -> float:
    """Mean share of the top 10 that engine fusion and the old Python fusion have in common (the two count
    RRF ranks from 0 and from 1, so their scores differ slightly; their top 10s should nearly agree)."""
    shared = []
    for vector, _ in queries[:50]:
        engine = {hit.id for hit in search(store, vector, target="both", fusion_depth=depth)}
        python = {hit.id for hit in python_fusion(store, vector, depth=depth)}
        shared.append(len(engine & python) / 10)
    return float(np.mean(shared))


def report(results: dict, points: int, dim: int, depths: list[int], overlap: float) -> None:
    print(f"\n{points:,} points × {dim}-d (image, text) + BM25 keywords, Qdrant Edge, top 10, "
          f"{len(results['dense (image)']['ms'])} queries each, interleaved; load: 1-min load average during the "
          f"contestant's calls, mean (max), on {os.cpu_count()} cores")
    p50 = {}
    for name, found in results.items():
        if name.startswith("_"):
            continue
        ms = np.asarray(found["ms"])
        p50[name] = float(np.percentile(ms, 50))
        print(f"{name:<36} p50 {p50[name]:7.2f} ms   p99 {np.percentile(ms, 99):7.2f} ms   "
              f"load {np.mean(found['load']):.2f} ({max(found['load']):.2f})")
    print(f"query tokenisation (BM25, excluded above): {results['_tokenize_us']['us']:.0f} µs per query")
    for depth in depths:
        hybrid = p50[f"hybrid, engine DBSF, depth {depth}"] / p50["dense (image)"]
        fusion = p50[f"both, engine fusion, depth {depth}"] / p50[f"both, Python fusion, depth {depth}"]
        print(f"depth {depth}: hybrid p50 ÷ dense p50 {hybrid:.2f} (goal ≤ 1.5); "
              f"engine ÷ Python fusion p50 {fusion:.2f} (goal ≤ 1.0)")
    print(f"top-10 overlap, engine vs Python fusion at depth {depths[0]} (50 queries): {overlap:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=100_000, help="points in the collection (10000 for a quick run)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=200, help="Gaussian mixture components")
    parser.add_argument("--vocab", type=int, default=20_000, help="words of the Zipf vocabulary")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fusion-depths", default=f"{FUSION_DEPTH},1000",
                        help="candidates per leg of the fused contestants, one set of contestants each: 1000,100")
    parser.add_argument("--data-dir", type=Path, default=CACHE / "search-modes",
                        help="where built collections are kept and reused, e.g. --data-dir /tmp/modes")
    parser.add_argument("--build-only", action="store_true",
                        help="build (or find) the collection and stop: measure in a later run, on a quiet machine")
    args = parser.parse_args()
    data = Data(args.dim, args.clusters, args.vocab, args.seed)
    shape = {"points": args.points, "dim": args.dim, "clusters": args.clusters, "vocab": args.vocab,
             "seed": args.seed}
    folder = args.data_dir / "-".join(f"{k}{v}" for k, v in shape.items())
    marker = folder / MARKER
    if marker.exists() and json.loads(marker.read_text()).get("shape") == shape:
        built = json.loads(marker.read_text())
        print(f"reusing the collection built in {folder} (upsert {built['upsert_s']}s, index {built['index_s']}s)")
    else:
        print(f"building {args.points:,} points in {folder}", flush=True)
        built = {"shape": shape, **build(folder, data, args.points)}
        marker.write_text(json.dumps(built))
        print(f"upsert {built['upsert_s']}s, HNSW build (optimize) {built['index_s']}s")
    if args.build_only:
        return
    store = open_store(folder)
    queries = data.queries(args.queries)
    depths = [int(d) for d in args.fusion_depths.split(",")]
    results = measure(store, queries, depths)
    report(results, args.points, args.dim, depths, agreement(store, queries, depths[0]))
    store.close()


if __name__ == "__main__":
    main()
