"""One store setting of bench/query.py: build the collection as `mmindex ingest` lays it out (or reuse a kept
build), then time top-10 searches over an ``hnsw_ef`` (and oversampling) sweep and count Recall@10 against the
exact answers. Run in a process of its own per setting, so that each setting's memory figures are its own."""
from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from common import timed
from vector_sets import vector_set

from mmindex.connectors.base import QUANTIZATIONS, CollectionOptions, CollectionSpec, PointRecord, SearchRequest
from mmindex.connectors.queries import OVERSAMPLING
from mmindex.pipeline.config import StoreSettings
from mmindex.pipeline.ingest.records import point_id_from_key

COLORS = ["red", "green", "blue", "yellow", "orange", "purple", "pink", "white", "black", "cyan"]
COLLECTION = "bench"
BLUE = {"must": [{"key": "color", "match": {"value": "blue"}}]}  # index % 10 == 2: vector_sets.exact_top's "blue"
MARKER = "bench.json"  # written once a build has finished: what a --keep run may reuse
WARM_UP = 20  # searches before each timed sweep point
# Setting name → CollectionOptions fields (the layouts `mmindex ingest --quantization/--on-disk` makes).
LAYOUTS = {"f32": {}, "f32-disk": {"on_disk": True}, "int8": {"quantization": "int8"},
           "int8-disk": {"quantization": "int8", "on_disk": True}, "binary": {"quantization": "binary"},
           "binary-disk": {"quantization": "binary", "on_disk": True}}
HNSW_KEYS = {"m": "hnsw_m", "efc": "hnsw_ef_construct"}


@dataclass(frozen=True)
class Setting:
    """A store setting as the command line names it (``int8-disk:m=32:efc=200``) and the options it lays out."""

    label: str
    options: CollectionOptions

    @property
    def quantized(self) -> bool:
        return self.options.quantization is not None

    @property
    def folder_name(self) -> str:
        return re.sub(r"[^A-Za-z0-9_-]+", "_", self.label)


def parse_setting(text: str) -> Setting:
    """``NAME[:m=M][:efc=E]`` → Setting; NAME is a key of ``LAYOUTS``. Raises ValueError naming what is wrong."""
    name, *extras = text.strip().split(":")
    if name not in LAYOUTS:
        raise ValueError(f"setting {text!r}: the layout must be one of {', '.join(LAYOUTS)}")
    fields = dict(LAYOUTS[name])
    if fields.get("quantization") not in (None, *QUANTIZATIONS):
        raise ValueError(f"setting {text!r}: this tree's connectors offer no {fields['quantization']} quantization "
                         f"(connectors/base.py QUANTIZATIONS = {QUANTIZATIONS})")
    for extra in extras:
        key, _, value = extra.partition("=")
        if key not in HNSW_KEYS or not value.isdigit():
            raise ValueError(f"setting {text!r}: {extra!r} is not m=INT or efc=INT")
        fields[HNSW_KEYS[key]] = int(value)
    return Setting(text.strip(), CollectionOptions(**fields))


def open_store(folder: Path, options: CollectionOptions):
    """The store as `mmindex ingest --data-dir FOLDER --collection bench` with these options opens it."""
    return StoreSettings(collection=COLLECTION, data_dir=str(folder), options=options).open()


def build(folder: Path, vectors, options: CollectionOptions) -> dict:
    """Upsert every point (payload ``color``, keyword-indexed) and build the HNSW index once; times and peaks."""
    peaks = MemoryPeaks()
    store = open_store(folder, options)
    store.ensure_collection(CollectionSpec(vectors.kind, vectors.dim, {"color": "keyword"}))
    store.create_payload_index("color", "keyword")
    started = time.perf_counter()
    step = max(1, vectors.points // 5)
    reported = 0
    for start, chunk in vectors.chunks():
        store.upsert([PointRecord(point_id_from_key(start + i), {"image": chunk[i]}, {"color": COLORS[(start + i) % 10]})
                      for i in range(len(chunk))])
        done = start + len(chunk)
        if done - reported >= step or done == vectors.points:
            reported = done
            print(f"    upserted {done:,}/{vectors.points:,} in {time.perf_counter() - started:.1f}s; "
                  f"RSS {memory_mb().get('VmRSS', float('nan')):.0f} MB", flush=True)
    upsert_seconds = time.perf_counter() - started
    print(f"    building the HNSW index (optimize), started {time.strftime('%H:%M:%S')}", flush=True)
    _, index_seconds = timed(store.finish, optimize=True)
    store.close()
    peak = peaks.stop()
    return {"upsert_s": upsert_seconds, "index_s": index_seconds, "peak_anon_build_mb": peak["RssAnon"],
            "peak_file_build_mb": peak["RssFile"], "load_avg_after_build": list(load_average())}


def sweep_point(store, queries: np.ndarray, truth: list[set[str]], hnsw_ef: int | None, oversampling: float | None,
                where: dict | None = None) -> dict:
    """Time one top-10 search per query (sequential, one client) and count Recall@10: the share of each query's
    exact top-10 (``truth``: point ids) among the ids the store returned, over all queries."""
    def request(vector):
        return SearchRequest(vector=vector, using="image", limit=10, filter=where, hnsw_ef=hnsw_ef,
                             oversampling=oversampling or OVERSAMPLING)

    for vector in queries[:WARM_UP]:
        store.search(request(vector))
    times, found = [], 0
    for vector, expected in zip(queries, truth):
        started = time.perf_counter()
        hits = store.search(request(vector))
        times.append(time.perf_counter() - started)
        found += len(expected & {hit.id for hit in hits})
    milliseconds = np.asarray(times) * 1000
    return {"hnsw_ef": hnsw_ef, "oversampling": oversampling, "recall": found / sum(len(t) for t in truth),
            "p50_ms": float(np.percentile(milliseconds, 50)), "p99_ms": float(np.percentile(milliseconds, 99)),
            "qps": float(1000 / milliseconds.mean()), "queries": len(queries)}


def point_ids(indices: np.ndarray) -> list[set[str]]:
    return [{point_id_from_key(int(i)) for i in row} for row in indices]


def run_setting(job: dict) -> dict:
    """Build (or reuse) one setting's store and sweep it. ``job``: vectors (kind, points, dim, seed), setting (its
    text), keep (a folder or None), efs, oversamplings, queries (count), truth and truth_blue (index arrays),
    filtered (bool). Returns the build figures, load, memory and one row per sweep point."""
    setting = parse_setting(job["setting"])
    vectors = vector_set(**job["vectors"])
    root = Path(job["keep"]) / setting.folder_name if job["keep"] else Path(tempfile.mkdtemp())
    wanted = {**job["vectors"], "options": setting.options.to_dict()}
    print(f"  {setting.label}: {setting.options.to_dict() or 'float32 in RAM, engine defaults'}; "
          f"load average {load_average()[0]:.2f}", flush=True)
    try:
        built = reuse_or_build(root, vectors, setting, wanted)
        result = {"setting": setting.label, "options": setting.options.to_dict(), "build": built,
                  "disk_gib": disk_usage(root / COLLECTION) / 2 ** 30, "load_avg_start": list(load_average())}
        result.update(measure(root, vectors, setting, job))
        result["load_avg_end"] = list(load_average())
        return result
    finally:
        if not job["keep"]:
            shutil.rmtree(root, ignore_errors=True)


def reuse_or_build(root: Path, vectors, setting: Setting, wanted: dict) -> dict:
    marker = root / MARKER
    if marker.is_file():
        built = json.loads(marker.read_text())
        recorded = {name: built.get(name) for name in wanted}
        if recorded != wanted:
            raise RuntimeError(f"{root} holds a store built for {recorded}, not {wanted}: pass the same options, "
                             "or another --keep folder")
        print(f"    reusing the build in {root} (upsert {built['upsert_s']:.1f}s, HNSW build {built['index_s']:.1f}s)",
              flush=True)
        return {**built, "reused": True}
    if (root / COLLECTION).exists():
        raise RuntimeError(f"{root / COLLECTION} exists but no finished build is recorded in {marker} (a build was "
                         "stopped, or is still running): remove it to build again")
    root.mkdir(parents=True, exist_ok=True)
    built = {**wanted, **build(root, vectors, setting.options)}
    marker.write_text(json.dumps(built, indent=2))
    print(f"    upsert {built['upsert_s']:.1f}s, HNSW build (optimize) {built['index_s']:.1f}s; peak anonymous "
          f"{built['peak_anon_build_mb']:.0f} MB, peak file-backed {built['peak_file_build_mb']:.0f} MB", flush=True)
    return {**built, "reused": False}


def measure(root: Path, vectors, setting: Setting, job: dict) -> dict:
    """Open the store (timed) and run the sweep; memory while searching."""
    peaks = MemoryPeaks()
    store = open_store(root, setting.options)
    started = time.perf_counter()
    store._open()  # loading the shard is what a first search pays
    load_ms = (time.perf_counter() - started) * 1000
    queries = vectors.queries(job["queries"])
    truth = point_ids(job["truth"])
    blue = point_ids(job["truth_blue"]) if job["filtered"] else None
    oversamplings = job["oversamplings"] if setting.quantized else [None]
    # One untimed pass of every query at the widest beam first: the pages of the index and vectors a search
    # touches are then in memory, as on a store that has served for a while (load_ms is the cold part).
    widest = max((ef for ef in job["efs"] if ef is not None), default=None)
    for vector in queries:
        store.search(SearchRequest(vector=vector, using="image", limit=10, hnsw_ef=widest,
                                   oversampling=max(oversamplings, key=lambda value: value or 0) or OVERSAMPLING))
    rows = []
    for hnsw_ef in job["efs"]:
        for oversampling in oversamplings:
            new = [sweep_point(store, queries, truth, hnsw_ef, oversampling)]
            if blue is not None:
                new.append({**sweep_point(store, queries, blue, hnsw_ef, oversampling, BLUE), "filter": "color = blue"})
            for row in new:
                print("    " + row_line(setting.label, row), flush=True)
            rows += new
    store.close()
    serving, peak = memory_mb(), peaks.stop()
    return {"load_ms": load_ms, "rows": rows, "search_peak_anon_mb": peak["RssAnon"],
            "search_rss_mb": serving.get("VmRSS"), "search_file_mb": serving.get("RssFile")}


def row_line(label: str, row: dict) -> str:
    ef = "default" if row["hnsw_ef"] is None else row["hnsw_ef"]
    oversampling = "-" if row["oversampling"] is None else f"{row['oversampling']:g}"
    where = f" {row['filter']}" if row.get("filter") else ""
    return (f"{label + where:<28} {ef:>7} {oversampling:>4} {row['recall']:>9.4f} {row['p50_ms']:>8.2f} "
            f"{row['p99_ms']:>8.2f} {row['qps']:>8.0f}")


def disk_usage(folder: Path) -> int:
    """Bytes allocated under ``folder`` (the store preallocates sparse files)."""
    return sum(path.stat().st_blocks * 512 for path in folder.rglob("*") if path.is_file())


def load_average() -> tuple[float, float, float]:
    with open("/proc/loadavg") as handle:
        return tuple(float(value) for value in handle.read().split()[:3])


def memory_mb() -> dict[str, float]:
    """This process's resident memory now (MB): VmRSS, and its anonymous and file-backed parts."""
    values = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            name = line.split(":")[0]
            if name in ("VmRSS", "RssAnon", "RssFile"):
                values[name] = int(line.split()[1]) / 1024
    return values


class MemoryPeaks:
    """Peak anonymous and file-backed RSS, sampled every 0.2 s in a thread.

    Peak RSS alone counts pages of memory-mapped files, which the kernel can drop (with on-disk vectors the
    vectors are such pages); anonymous memory is what the process really holds.
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
