"""Benchmark 4 (memory): peak RSS ingesting 200k rows ÷ peak RSS ingesting 20k rows.

Each size runs in a fresh process (the tiny CLIP, small JPEGs: the point is whether memory
grows with the dataset, not the model's size), once into the embedded store and once into
a store that keeps nothing, which separates the pipeline's own memory from the store's
(Qdrant Edge keeps vectors in RAM, so its share grows with the collection by design).
Target ratio ≤ 1.2.

    python bench/memory.py [--small 20000] [--large 200000]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

import common  # noqa: F401
from common import machine, model, peak_rss_mb, sample_data, timed


def child(rows: int, files: int, null_store: bool) -> None:
    from common import NullStore

    from mmindex.connectors.qdrant_edge import QdrantEdgeStore
    from mmindex.pipeline.ingest.options import IngestOptions
    from mmindex.pipeline.ingest.run import ingest
    from mmindex.pipeline.models.encoder import Encoder

    folder = sample_data(rows, width=128, height=96, files=files, seed=5)
    encoder = Encoder(str(model("tiny")), device="cpu", batch_size=256)
    with tempfile.TemporaryDirectory() as data_dir:
        store = NullStore() if null_store else QdrantEdgeStore("memory", data_dir=data_dir)
        summary, seconds = timed(ingest, [str(folder)], store, encoder,
                                 IngestOptions(batch_size=256, workers=2, optimize=False))
        store.close()
    print(json.dumps({"rows": summary.read, "upserted": summary.upserted, "seconds": seconds,
                      "peak_rss_mb": peak_rss_mb()}))


def measure(rows: int, files: int, null_store: bool = False) -> dict:
    sample_data(rows, width=128, height=96, files=files, seed=5)  # generate outside the measured process
    command = [sys.executable, __file__, "--child", str(rows), "--files", str(files)]
    out = subprocess.run(command + (["--null-store"] if null_store else []), capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=20_000)
    parser.add_argument("--large", type=int, default=200_000)
    parser.add_argument("--child", type=int, default=None)
    parser.add_argument("--files", type=int, default=None)
    parser.add_argument("--null-store", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.files, args.null_store)
        return
    model("tiny")
    print(f"machine: {machine()}; tiny CLIP, 128x96 JPEG, batch 256, 20k rows per file")
    for null_store, label in ((False, "embedded store"), (True, "no store (pipeline only)")):
        small = measure(args.small, max(1, args.small // 20_000), null_store)
        large = measure(args.large, max(1, args.large // 20_000), null_store)
        for result in (small, large):
            print(f"{label:<26} {result['rows']:>8,} rows: peak RSS {result['peak_rss_mb']:8.1f} MB  "
                  f"({result['rows'] / result['seconds']:.0f} rows/s)")
        print(f"{label:<26} memory ratio {large['peak_rss_mb'] / small['peak_rss_mb']:.3f}  "
              f"(peak RSS {args.large:,} rows ÷ {args.small:,} rows; target ≤ 1.2)")


if __name__ == "__main__":
    main()
