"""`ingest --on-duplicate skip` against `keep` on data with 30 % near duplicates, side by side in one run.

Data: the labelled duplicates set (tests/helpers/duplicate_data.py): its originals and similar shots (distinct
content), plus near duplicates of them (resized, recompressed, cropped, recoloured, captioned, mirrored) making up
``--near-share`` of the rows, shuffled. Each round ingests the same file into a fresh embedded collection once with
``keep`` and once with ``skip`` (the order alternates by round, so drift in the machine's load falls on both), and
the table gives rows/s per mode and round, the 1-minute load average before each, and skip's rate over keep's
(the issue's bar: a drop of at most 10 %). ``skip``'s summary must add up, every skipped row naming a point of its
own group.

    python bench/ingest_duplicates.py                           # the full run (the lead runs it on a quiet machine)
    python bench/ingest_duplicates.py --originals 6 --rounds 1  # a quick check that it works
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the data set lives with the tests that keep it
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from helpers.duplicate_data import NEAR_KINDS, make_duplicate_set  # noqa: E402


def write_data(folder: Path, originals: int, near_share: float, seed: int) -> tuple[Path, dict[str, str], int]:
    """(the Parquet file, id → group, near-duplicate rows): distinct rows plus near duplicates making
    ``near_share`` of the rows."""
    data = make_duplicate_set(originals, seed)
    distinct = [i for i in data.images if i == data.group[i] or i.endswith("-similar")]
    near = [i for i in data.images if i.endswith(tuple(f"-{kind}" for kind in NEAR_KINDS))]
    rng = random.Random(seed)
    wanted = min(len(near), round(len(distinct) * near_share / (1 - near_share)))
    ids = distinct + rng.sample(near, wanted)
    rng.shuffle(ids)
    path = folder / "rows.parquet"
    pq.write_table(pa.table({
        "id": ids, "image": pa.array([data.images[i] for i in ids], pa.binary()),
        "caption": [data.captions[i] for i in ids], "group": [data.group[i] for i in ids],
    }), path)
    return path, {i: data.group[i] for i in ids}, wanted


def run_once(path: Path, encoder, mode: str, batch_size: int, workers: int,
             groups: dict[str, str]) -> tuple[float, object]:
    from mmindex.connectors.qdrant_edge import QdrantEdgeStore
    from mmindex.pipeline.ingest.options import IngestOptions
    from mmindex.pipeline.ingest.run import ingest

    data_dir = tempfile.mkdtemp()
    try:
        store = QdrantEdgeStore("bench", data_dir=data_dir)
        started = time.perf_counter()
        summary = ingest([str(path)], store, encoder, IngestOptions(batch_size=batch_size, workers=workers,
                                                                    optimize=False, on_duplicate=mode))
        seconds = time.perf_counter() - started
        if mode == "skip":
            check(store, summary, groups)
        store.close()
        return summary.read / seconds, summary
    finally:
        shutil.rmtree(data_dir)


def check(store, summary, groups: dict[str, str]) -> None:
    """The summary adds up and every skipped row names a stored point of its own group."""
    assert summary.adds_up() and summary.read == summary.upserted + summary.skipped_duplicates, summary
    stored = {p.id: p.payload["group"] for p in store.retrieve([d.duplicate_of for d in summary.duplicates])}
    wrong = [d for d in summary.duplicates if stored.get(d.duplicate_of) != groups[d.id]]
    assert not wrong, wrong[:3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--originals", type=int, default=300, help="originals of the labelled set (rows ≈ 2.9×)")
    parser.add_argument("--near-share", type=float, default=0.3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default=str(ROOT / "demo" / "shapes-clip"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    from mmindex.pipeline.models.encoder import Encoder

    folder = Path(tempfile.mkdtemp())
    try:
        path, groups, near = write_data(folder, args.originals, args.near_share, args.seed)
        rows = len(groups)
        encoder = Encoder(args.model, device="cpu", batch_size=args.batch_size)
        run_once(path, encoder, "keep", args.batch_size, args.workers, groups)  # warm-up: model, caches
        print(f"{rows:,} rows, {near:,} near duplicates ({near / rows:.0%}); model {encoder.name}; "
              f"batch {args.batch_size}, {args.workers} workers")
        print(f"{'round':>5} {'mode':>5} {'rows/s':>9} {'load':>5} {'skipped':>8}")
        rates: dict[str, list[float]] = {"keep": [], "skip": []}
        for number in range(args.rounds):
            for mode in (("keep", "skip") if number % 2 == 0 else ("skip", "keep")):
                load = os.getloadavg()[0]
                rate, summary = run_once(path, encoder, mode, args.batch_size, args.workers, groups)
                rates[mode].append(rate)
                print(f"{number + 1:>5} {mode:>5} {rate:>9.1f} {load:>5.2f} {summary.skipped_duplicates:>8,}")
        keep, skip = statistics.median(rates["keep"]), statistics.median(rates["skip"])
        print(f"median rows/s: keep {keep:.1f}, skip {skip:.1f}; skip/keep {skip / keep:.3f} "
              f"(a drop of {max(0.0, 1 - skip / keep):.1%})")
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
