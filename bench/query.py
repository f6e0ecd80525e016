"""Benchmark 5 (query): search latency on the embedded store at 1M points, 512-d, HNSW built.

Random unit vectors with a keyword payload field (10 values, indexed). Reports the time to
load, index and open the store, p50/p99 latency of a top-10 search with and without a
keyword filter (about 10% of points pass), excluding text encoding, Recall@10 of those
searches against exact brute-force answers computed in numpy, and the store's size on disk.
Targets: p99 ≤ 20 ms, filtered p99 ≤ 2× unfiltered.

    python bench/query.py [--points 1000000] [--queries 1000] [--keep DIR]
                          [--quantization {none,int8}] [--on-disk] [--hnsw-ef N] [--recall-queries 100]

The collection is laid out as `mmindex ingest --quantization int8 --on-disk` lays it out
(same CollectionOptions, same store opening). With --keep, a finished build is recorded in
DIR/bench.json and a later run with the same --points/--dim/--quantization/--on-disk reuses
it: it only re-measures load, latency and recall (with --hnsw-ef, at another search beam).
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import common  # noqa: F401
import numpy as np
from common import machine, peak_rss_mb, timed

from mmindex.connectors.base import CollectionOptions, CollectionSpec, PointRecord, SearchRequest
from mmindex.pipeline.config import StoreSettings
from mmindex.pipeline.ingest.records import point_id_from_key

COLORS = ["red", "green", "blue", "yellow", "orange", "purple", "pink", "white", "black", "cyan"]
COLLECTION = "bench"
BLUE = {"must": [{"key": "color", "match": {"value": "blue"}}]}
CHUNK = 2000  # points generated and upserted at a time; the recall check regenerates them the same way
MARKER = "bench.json"  # written once a build has finished: what a --keep run may reuse


def open_store(folder: Path, options: CollectionOptions):
    """The store as `mmindex ingest --data-dir FOLDER --collection bench` with these options opens it."""
    return StoreSettings(collection=COLLECTION, data_dir=str(folder), options=options).open()


def point_vectors(points: int, dim: int, seed: int = 0):
    """The benchmark's points, CHUNK at a time: (first index, unit vectors)."""
    rng = np.random.default_rng(seed)
    for start in range(0, points, CHUNK):
        vectors = rng.normal(size=(min(CHUNK, points - start), dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        yield start, vectors


def query_vectors(queries: int, dim: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(queries, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def build(folder: Path, points: int, dim: int, options: CollectionOptions, seed: int = 0) -> dict:
    peaks = MemoryPeaks()
    store = open_store(folder, options)
    store.ensure_collection(CollectionSpec("random", dim, {"color": "keyword"}))
    store.create_payload_index("color", "keyword")
    started = time.perf_counter()
    step = max(CHUNK, points // 10 // CHUNK * CHUNK)
    for start, vectors in point_vectors(points, dim, seed):
        store.upsert([
            PointRecord(point_id_from_key(start + i), {"image": vectors[i]}, {"color": COLORS[(start + i) % 10]})
            for i in range(len(vectors))
        ])
        done = start + len(vectors)
        if done % step == 0 or done == points:
            print(f"  upserted {done:,}/{points:,} in {time.perf_counter() - started:.1f}s; "
                  f"RSS {rss_mb():.0f} MB", flush=True)
    upsert_seconds = time.perf_counter() - started
    print(f"  building the HNSW index (optimize), started {time.strftime('%H:%M:%S')}", flush=True)
    _, index_seconds = timed(store.finish, optimize=True)
    store.close()
    peak = peaks.stop()
    return {"points": points, "dim": dim, "seed": seed, "options": options.to_dict(), "upsert_s": upsert_seconds,
            "index_s": index_seconds, "peak_rss_build_mb": peak_rss_mb(), "peak_anon_build_mb": peak["RssAnon"],
            "peak_file_build_mb": peak["RssFile"]}


def latencies(store, vectors: np.ndarray, where: dict | None, hnsw_ef: int | None = None) -> np.ndarray:
    for vector in vectors[:20]:  # warm-up
        store.search(SearchRequest(vector=vector, using="image", limit=10, filter=where, hnsw_ef=hnsw_ef))
    times = []
    for vector in vectors:
        started = time.perf_counter()
        hits = store.search(SearchRequest(vector=vector, using="image", limit=10, filter=where, hnsw_ef=hnsw_ef))
        times.append(time.perf_counter() - started)
        assert len(hits) == 10
    return np.asarray(times) * 1000


def exact_top(queries: np.ndarray, points: int, dim: int, seed: int, k: int = 10, block: int = 50_000):
    """Exact top-k point indices by cosine (unit vectors: dot product), for all points and for color = blue.

    Regenerates the points from the seed, a block at a time, so memory stays small at 1M points.
    """
    blue = COLORS.index("blue")
    best = {name: (np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64))
            for name in ("all", "blue")}

    def merge(name, scores, indices):
        scores = np.concatenate([best[name][0], scores], axis=1)
        indices = np.concatenate([best[name][1], np.broadcast_to(indices, (len(queries), len(indices)))], axis=1)
        if scores.shape[1] > k:
            keep = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            scores, indices = np.take_along_axis(scores, keep, 1), np.take_along_axis(indices, keep, 1)
        best[name] = (scores, indices)

    pending: list[np.ndarray] = []
    pending_start = 0
    for start, vectors in point_vectors(points, dim, seed):
        if not pending:
            pending_start = start
        pending.append(vectors)
        if sum(len(v) for v in pending) >= block or start + len(vectors) == points:
            matrix = np.concatenate(pending)
            pending = []
            indices = np.arange(pending_start, pending_start + len(matrix))
            scores = queries @ matrix.T
            merge("all", scores, indices)
            mask = indices % 10 == blue
            merge("blue", scores[:, mask], indices[mask])
    return {name: value[1] for name, value in best.items()}


def recall(store, queries: np.ndarray, truth: np.ndarray, where: dict | None, hnsw_ef: int | None = None) -> float:
    found = 0
    for vector, indices in zip(queries, truth):
        hits = store.search(SearchRequest(vector=vector, using="image", limit=10, filter=where, with_payload=False,
                                          hnsw_ef=hnsw_ef))
        expected = {point_id_from_key(int(i)) for i in indices}
        found += len(expected & {hit.id for hit in hits})
    return found / truth.size


def disk_usage(folder: Path) -> tuple[int, int]:
    """(allocated, apparent) bytes under ``folder``: the store preallocates sparse files."""
    allocated = apparent = 0
    for path in folder.rglob("*"):
        if path.is_file():
            stat = path.stat()
            allocated += stat.st_blocks * 512
            apparent += stat.st_size
    return allocated, apparent


def memory_mb() -> dict[str, float]:
    """This process's resident memory now (MB): VmRSS, and its anonymous and file-backed parts."""
    values = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            name = line.split(":")[0]
            if name in ("VmRSS", "RssAnon", "RssFile"):
                values[name] = int(line.split()[1]) / 1024
    return values


def rss_mb() -> float:
    return memory_mb().get("VmRSS", float("nan"))


class MemoryPeaks:
    """Peak anonymous and file-backed RSS, sampled every 0.2 s in a thread.

    Peak RSS alone (ru_maxrss) counts pages of memory-mapped files, which the kernel can drop
    (with --on-disk the vectors are such pages); anonymous memory is what the process really holds.
    """

    def __init__(self, interval: float = 0.2):
        self.peaks = {"RssAnon": 0.0, "RssFile": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(interval)

    def sample(self) -> None:
        for name, value in memory_mb().items():
            if name in self.peaks:
                self.peaks[name] = max(self.peaks[name], value)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self.sample()
        return dict(self.peaks)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--quantization", choices=["none", "int8"], default="none",
                        help="Lay the collection out as `mmindex ingest --quantization int8` does (default: none).")
    parser.add_argument("--on-disk", action="store_true",
                        help="Vectors on disk (memory-mapped), as `mmindex ingest --on-disk`.")
    parser.add_argument("--hnsw-ef", type=int, default=None,
                        help="Search beam, as `mmindex query --hnsw-ef` (default: the engine's).")
    parser.add_argument("--recall-queries", type=int, default=100,
                        help="Queries checked against exact brute-force top-10 (0: skip the recall check).")
    parser.add_argument("--keep", default=None,
                        help="Build into (or reuse) this folder instead of a temporary one. A finished build is "
                             "reused by a later run with the same --points, --dim, --quantization and --on-disk.")
    args = parser.parse_args()
    options = CollectionOptions(on_disk=args.on_disk,
                                quantization=None if args.quantization == "none" else args.quantization)
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp())
    layout = ", ".join(f"{k}={v}" for k, v in options.to_dict().items()) or "float32 in RAM"
    print(f"machine: {machine()}; {args.points:,} points × {args.dim}-d, cosine, keyword index on 'color'; "
          f"layout: {layout}; hnsw_ef {args.hnsw_ef or 'default'}", flush=True)
    wanted = {"points": args.points, "dim": args.dim, "seed": 0, "options": options.to_dict()}
    try:
        marker = folder / MARKER
        if marker.is_file():
            built = json.loads(marker.read_text())
            recorded = {name: built.get(name) for name in wanted}
            if recorded != wanted:
                raise SystemExit(f"{folder} holds a store built for {recorded}, not {wanted}: pass the same "
                                 "options, or another --keep folder")
            print(f"reusing the store in {folder} (built earlier: upsert {built['upsert_s']:.1f}s, HNSW build "
                  f"{built['index_s']:.1f}s, peak RSS {built['peak_rss_build_mb']:.0f} MB, of it anonymous "
                  f"{built.get('peak_anon_build_mb', float('nan')):.0f} MB)")
        else:
            if (folder / COLLECTION).exists():
                raise SystemExit(f"{folder / COLLECTION} exists but no finished build is recorded in {marker} "
                                 "(a build was stopped, or is still running): remove it to build again")
            built = build(folder, args.points, args.dim, options)
            marker.write_text(json.dumps(built, indent=2))
            print(f"upsert {built['upsert_s']:.1f}s, HNSW build (optimize) {built['index_s']:.1f}s; "
                  f"peak RSS so far {built['peak_rss_build_mb']:.0f} MB (peak anonymous "
                  f"{built['peak_anon_build_mb']:.0f} MB, peak file-backed {built['peak_file_build_mb']:.0f} MB)",
                  flush=True)
        allocated, apparent = disk_usage(folder / COLLECTION)
        print(f"store on disk: {allocated / 2**30:.2f} GiB allocated ({apparent / 2**30:.2f} GiB apparent)")
        peaks = MemoryPeaks()
        store = open_store(folder, options)
        _, load_seconds = timed(store._open)
        info = store.info()
        print(f"load (open the shard): {load_seconds * 1000:.0f} ms; {info.points:,} points; "
              f"recorded options {info.options or '{}'}", flush=True)
        queries = query_vectors(args.queries, args.dim)
        plain = latencies(store, queries, None, args.hnsw_ef)
        filtered = latencies(store, queries, BLUE, args.hnsw_ef)
        serving, peak_rss, serving_peaks = memory_mb(), peak_rss_mb(), peaks.stop()
        for name, values in (("unfiltered", plain), ("color = blue", filtered)):
            print(f"{name:<14} p50 {np.percentile(values, 50):6.2f} ms   p99 {np.percentile(values, 99):6.2f} ms")
        print(f"filtered ÷ unfiltered p99: {np.percentile(filtered, 99) / np.percentile(plain, 99):.2f} (target ≤ 2)")
        print(f"p99 unfiltered {np.percentile(plain, 99):.2f} ms (target ≤ 20 ms); peak RSS {peak_rss:.0f} MB; "
              f"load + searches: peak anonymous {serving_peaks['RssAnon']:.0f} MB, RSS after them "
              f"{serving['VmRSS']:.0f} MB ({serving['RssAnon']:.0f} anonymous + {serving['RssFile']:.0f} "
              "file-backed)", flush=True)
        if args.recall_queries:
            sample = query_vectors(args.recall_queries, args.dim)  # the first queries timed above
            truth, seconds = timed(exact_top, sample, info.points, args.dim, 0)
            print(f"Recall@10 over {len(sample)} queries (exact top-10 by numpy brute force, {seconds:.1f}s): "
                  f"unfiltered {recall(store, sample, truth['all'], None, args.hnsw_ef):.4f}, "
                  f"color = blue {recall(store, sample, truth['blue'], BLUE, args.hnsw_ef):.4f}")
        store.close()
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
