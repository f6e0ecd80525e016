"""Benchmark 5 (query): Recall@10 against search latency on the embedded store, ann-benchmarks style.

For each store setting (float32; int8 scalar quantization with rescoring; vectors on disk; binary quantization
where the connectors offer it; HNSW m and ef_construct as options) the store is built as `mmindex ingest` lays it
out, then one top-10 search per held-out query is timed at each `hnsw_ef` of a sweep (and each oversampling, on a
quantized store). Per setting and ef: Recall@10 against the exact top-10 (numpy, in blocks), p50/p99 latency (ms)
and QPS (one client, 1 / mean latency); per setting: upsert and index build time, peak memory, disk, load time.
Side by side in the same run: exact search in numpy (one query at a time, one thread and all) and qdrant-client's
local mode. Text encoding is excluded. Each setting runs in a process of its own (clean memory figures).

Vectors (`--vectors`, bench/vector_sets.py): `clustered` (default), a Gaussian mixture shaped like CLIP image
vectors, its statistics printed beside the figures; `uniform`, random unit vectors (the old benchmark: no
neighbourhood structure, HNSW's worst case); `demo`, demo/shapes-clip's own 128-d vectors of `mmindex sample` images.

    python bench/query.py --points 100000 --keep /tmp/q100k --json q100k.json
    python bench/query.py --points 1000000 --settings int8 --ef 64,128,256 --peers numpy --keep /tmp/q1m
    python bench/query.py --vectors demo --points 25000 --settings f32,int8
    python bench/query.py --vectors uniform --points 100000 --settings f32 --ef default,512

Under ~10 MB of vectors (about 5,000 of 512-d, 20,000 of 128-d) the engine builds no HNSW index and scans every
point: recall is then 1 at any ef. Figures and their reading: bench/README.md §5.

With --keep, each setting's finished build is recorded in DIR/SETTING/bench.json and a later run with the same
vectors, points, dim, seed and options reuses it: it only re-measures load, latency and recall.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from importlib import metadata
from multiprocessing import get_context

import numpy as np
from query_peers import numpy_rows, qdrant_local_row
from query_store import LAYOUTS, load_average, parse_setting, row_line, run_setting
from vector_sets import KINDS, exact_top, statistics, vector_set

DEFAULT_EFS = "default,16,32,64,128,256,512"
HEADER = f"{'setting':<28} {'hnsw_ef':>7} {'ovs':>4} {'Recall@10':>9} {'p50 ms':>8} {'p99 ms':>8} {'QPS':>8}"


def machine() -> str:
    with open("/proc/meminfo") as handle:
        memory_gb = int(handle.readline().split()[1]) / 2 ** 20
    return (f"{platform.machine()}, {os.cpu_count()} cores, {memory_gb:.0f} GB; numpy {np.__version__}, "
            f"qdrant-edge-py {metadata.version('qdrant-edge-py')}, qdrant-client {metadata.version('qdrant-client')}")


def in_child(function, job: dict, in_process: bool):
    """``function(job)`` in a fresh process (its memory figures are its own), or here with ``in_process``."""
    if in_process:
        return function(job)
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, job).result()


def parse_efs(text: str) -> list[int | None]:
    """``16,32,default`` → [16, 32, None] (None: the engine's default beam); ValueError naming --ef otherwise."""
    try:
        return [None if part.strip() == "default" else int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--ef {text}: each value must be a whole number or `default`") from None


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", choices=KINDS, default="clustered", help="Which vectors (default: clustered).")
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512, help="Vector size (the demo vectors are 128-d whatever it says).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the points (queries are held-out draws).")
    parser.add_argument("--queries", type=int, default=1000, help="Held-out queries timed and scored per sweep point.")
    parser.add_argument("--settings", default="f32,int8,int8-disk",
                        help=f"Comma-separated store settings, each NAME[:m=M][:efc=E], NAME one of "
                             f"{', '.join(LAYOUTS)} (binary only where connectors/ offers it), or none. "
                             "Example: f32,int8,f32:m=32:efc=200")
    parser.add_argument("--ef", default=DEFAULT_EFS, help=f"hnsw_ef sweep, `default` for the engine's (default {DEFAULT_EFS}).")
    parser.add_argument("--oversampling", default="2,4",
                        help="Oversampling values swept on quantized settings (candidates per result rescored; "
                             "4 is the store's default). Example: 2,4,8")
    parser.add_argument("--filtered", action="store_true", help="Also time each sweep point with color = blue (10%%).")
    parser.add_argument("--peers", default="numpy,local",
                        help="Baselines in the same run: numpy (exact, 1 thread and all), local (qdrant-client local "
                             "mode), or none.")
    parser.add_argument("--peer-queries", type=int, default=200, help="Queries timed for each baseline.")
    parser.add_argument("--local-max-points", type=int, default=200_000,
                        help="Skip qdrant-client's local mode above this many points (its upsert and scan are Python).")
    parser.add_argument("--local-path-points", type=int, default=10_000,
                        help="Points upserted into qdrant-client's on-disk local mode (path=) to time its upsert.")
    parser.add_argument("--keep", default=None, help="Build into (or reuse) DIR/SETTING instead of temporary folders.")
    parser.add_argument("--json", default=None, help="Also write every figure to this JSON file.")
    parser.add_argument("--in-process", action="store_true", help="Run every setting in this process (tests).")
    args = parser.parse_args(argv)
    try:
        args.setting_list = [] if args.settings == "none" else [parse_setting(s).label for s in args.settings.split(",")]
        args.efs = parse_efs(args.ef)
        try:
            args.oversamplings = [float(v) for v in args.oversampling.split(",")]
        except ValueError:
            raise ValueError(f"--oversampling {args.oversampling}: each value must be a number") from None
        check_counts(args)
    except ValueError as error:
        parser.error(str(error))
    return args


def check_counts(args: argparse.Namespace) -> None:
    """The sizes and sweep values a top-10 benchmark can run with (as `mmindex query` bounds them); ValueError
    naming the option otherwise."""
    if args.points < 10:
        raise ValueError(f"--points {args.points}: Recall@10 needs at least 10 points")
    for option, value in (("--queries", args.queries), ("--peer-queries", args.peer_queries), ("--dim", args.dim)):
        if value < 1:
            raise ValueError(f"{option} {value}: must be at least 1")
    if any(ef is not None and ef < 1 for ef in args.efs):
        raise ValueError(f"--ef {args.ef}: each hnsw_ef must be at least 1 (or `default`)")
    unknown = set(args.peers.split(",")) - {"numpy", "local", "none"}
    if unknown:
        raise ValueError(f"--peers {args.peers}: {', '.join(sorted(unknown))} is not numpy, local or none")
    if any(not 1 <= value < float("inf") for value in args.oversamplings):
        raise ValueError(f"--oversampling {args.oversampling}: each value must be at least 1 (candidates per result)")


def main(argv: list[str] | None = None) -> dict:
    args = arguments(argv)
    vectors = vector_set(args.vectors, args.points, args.dim, args.seed)
    spec = {"kind": args.vectors, "points": args.points, "dim": vectors.dim, "seed": args.seed}
    print(f"machine: {machine()}; load average {load_average()}", flush=True)
    print(f"{args.points:,} points: {vectors.describe()}; {args.queries} queries; top-10, cosine", flush=True)
    queries = vectors.queries(args.queries)
    started = time.perf_counter()
    truth = exact_top(vectors, queries)
    exact_seconds = time.perf_counter() - started
    stats = statistics(vectors, truth["all"][0][:, 0])
    print(f"exact top-10 of {len(queries)} queries (numpy, blocks of 50k points, all threads): {exact_seconds:.1f}s "
          f"({len(queries) / exact_seconds:.0f} queries/s batched)", flush=True)
    print("statistics: " + statistics_line(stats), flush=True)
    result = {"machine": machine(), "load_avg_start": list(load_average()), "vectors": vectors.describe(),
              "spec": spec, "arguments": {k: v for k, v in vars(args).items() if k != "setting_list"},
              "statistics": stats, "exact_batched_s": exact_seconds, "settings": [], "peers": []}
    job = {"vectors": spec, "queries": args.queries, "truth": truth["all"][1], "truth_blue": truth["blue"][1],
           "efs": args.efs, "oversamplings": args.oversamplings, "filtered": args.filtered, "keep": args.keep}
    for label in args.setting_list:
        result["settings"].append(in_child(run_setting, {**job, "setting": label}, args.in_process))
    result["peers"] = run_peers(args, job)
    result["load_avg_end"] = list(load_average())
    print_report(result)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2, default=lambda value: value.tolist())
    return result


def run_peers(args: argparse.Namespace, job: dict) -> list[dict]:
    peers, wanted = [], set(args.peers.split(",")) - {"none"}
    job = {**job, "count": min(args.peer_queries, args.queries), "path_points": args.local_path_points}
    if "numpy" in wanted:
        print(f"  numpy exact search, one query at a time: load average {load_average()[0]:.2f}", flush=True)
        peers += in_child(numpy_rows, job, args.in_process)
    if "local" in wanted and args.points <= args.local_max_points:
        print(f"  qdrant-client local mode: load average {load_average()[0]:.2f}", flush=True)
        peers.append(in_child(qdrant_local_row, job, args.in_process))
    elif "local" in wanted:
        print(f"  qdrant-client local mode: not run at {args.points:,} points (above --local-max-points "
              f"{args.local_max_points:,}): its upsert and its scan per query run in Python", flush=True)
    return peers


def statistics_line(stats: dict) -> str:
    return (f"pairwise cosine mean {stats['pair_cos_mean']:.3f} (sd {stats['pair_cos_sd']:.3f}); nearest-neighbour "
            f"cosine of the queries p10/p50/p90 {stats['nn_cos_p10']:.3f}/{stats['nn_cos_p50']:.3f}/"
            f"{stats['nn_cos_p90']:.3f}; participation ratio {stats['participation_ratio']:.1f}")


def print_report(result: dict) -> None:
    print(f"\nRecall@10 and latency ({result['spec']['points']:,} points; QPS = 1 / mean latency, one client):")
    print(HEADER)
    for setting in result["settings"]:
        for row in setting["rows"]:
            print(row_line(setting["setting"], row))
    for peer in result["peers"]:
        print(row_line(peer["setting"], peer))
    print(f"\n{'setting':<28} {'upsert s':>9} {'index s':>9} {'peak anon MB':>13} {'peak file MB':>13} "
          f"{'disk GiB':>9} {'load ms':>8} {'search anon MB':>15}")
    for setting in result["settings"]:
        build = setting["build"]
        print(f"{setting['setting']:<28} {build['upsert_s']:>9.1f} {build['index_s']:>9.1f} "
              f"{build['peak_anon_build_mb']:>13.0f} {build['peak_file_build_mb']:>13.0f} {setting['disk_gib']:>9.2f} "
              f"{setting['load_ms']:>8.0f} {setting['search_peak_anon_mb']:>15.0f}"
              + ("  (build reused)" if build.get("reused") else ""))
    for peer in result["peers"]:
        if "build" in peer:
            print(f"{peer['setting']:<28} {peer['build']['upsert_s']:>9.1f} {'-':>9} {peer['peak_anon_mb']:>13.0f}"
                  f"  (in memory; on disk: {peer['build']['path_upsert_s']:.1f}s for {peer['build']['path_points']:,} "
                  "points)")
    print(f"load average at the end {result['load_avg_end']}")


if __name__ == "__main__":
    main()
