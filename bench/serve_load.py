"""Benchmark: the HTTP service under load, text search on loopback.

Starts `mmindex serve` on the embedded store with the bundled demo model (after ingesting a
sample), then drives POST /search with 1 and 16 concurrent clients for a fixed time each
and reports requests/s and p50/p99 latency side by side, plus how many queries the
micro-batcher put in each forward pass.

    python bench/serve_load.py [--rows 2000] [--seconds 15] [--clients 1,16] [--backends torch,auto]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401
import httpx
from common import machine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from serving import start  # noqa: E402

QUERIES = [f"a {c} {s}" for c in ("red", "blue", "green", "yellow", "purple", "orange", "black", "white")
           for s in ("circle", "square", "triangle", "star", "ring", "cross", "diamond", "hexagon")]


async def drive(url: str, clients: int, seconds: float) -> tuple[int, list[float], int]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(index: int) -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=url, timeout=30) as session:
            i = index
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await session.post("/search", json={"text": QUERIES[i % len(QUERIES)], "limit": 10})
                latencies.append(time.perf_counter() - started)
                errors += response.status_code != 200
                i += clients

    await asyncio.gather(*[client(i) for i in range(clients)])
    return len(latencies), latencies, errors


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def batch_sizes(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    total = float(next(line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith("mmindex_encode_batch_size_sum")))
    count = float(next(line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith("mmindex_encode_batch_size_count")))
    return total, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="points ingested (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=15, help="seconds per load level (default: %(default)s)")
    parser.add_argument("--clients", default="1,16", help="concurrent clients per level (default: %(default)s)")
    parser.add_argument("--backends", default="torch,auto",
                        help="serve --backend values to measure one after the other (auto: onnx on the CPU)")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    from click.testing import CliRunner

    from mmindex.pipeline.cli import main as cli
    from mmindex.pipeline.ingest.sample import write_sample

    work = Path(tempfile.mkdtemp())
    os.environ["MMINDEX_CACHE"] = str(work / "cache")  # the demo model's ONNX export, made by the ingest below
    try:
        write_sample(work / "data", rows=args.rows, seed=5, files=2)
        model = str(ROOT / "demo" / "shapes-clip")
        result = CliRunner().invoke(cli, ["ingest", str(work / "data"), "-c", "bench", "--data-dir", str(work / "store"),
                                          "--model", model, "-q"])
        assert result.exit_code == 0, result.output
        print(f"machine: {machine()}; {args.rows:,} points, demo model, embedded store, {args.seconds:.0f} s per level")
        p50 = {}
        for backend in args.backends.split(","):
            served = start(work / "store", "bench", model, "--backend", backend, log=work / f"serve-{backend}.log")
            try:
                asyncio.run(drive(served.url, 4, 2))  # warm up
                rates = {}
                for clients in (int(c) for c in args.clients.split(",")):
                    before = batch_sizes(served.url)
                    count, latencies, errors = asyncio.run(drive(served.url, clients, args.seconds))
                    after = batch_sizes(served.url)
                    per_batch = (after[0] - before[0]) / max(1.0, after[1] - before[1])
                    rates[clients] = count / args.seconds
                    p50[(backend, clients)] = percentile(latencies, 0.5)
                    print(f"--backend {backend:<5} {clients:>3} client(s)  {rates[clients]:8.1f} req/s   "
                          f"p50 {p50[(backend, clients)]:7.2f} ms   p99 {percentile(latencies, 0.99):7.2f} ms   "
                          f"errors {errors}   queries per forward pass {per_batch:.1f}")
                levels = sorted(rates)
                if len(levels) > 1:
                    print(f"--backend {backend}: throughput ratio {levels[-1]} vs {levels[0]} clients: "
                          f"{rates[levels[-1]] / rates[levels[0]]:.2f}x")
            finally:
                served.stop()
        backends = args.backends.split(",")
        if len(backends) > 1:
            for clients in (int(c) for c in args.clients.split(",")):
                print(f"p50 {clients} client(s), {backends[-1]} ÷ {backends[0]}: "
                      f"{p50[(backends[-1], clients)] / p50[(backends[0], clients)]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
