"""Benchmark 2 (feed rate): can the pipeline alone keep an accelerator fed?

With a zero-cost stand-in encoder (real decoding and preprocessing into CLIP pixel tensors,
no forward pass), compares pipeline rows/s with a tight loop doing only decode+preprocess
of the same images on the same cores (the same number of threads). Target ratio ≥ 0.80.
Rows/s per core is what one CPU core can feed a GPU.

    python bench/feed_rate.py [--rows 1024] [--batch-size 64] [--workers N]
"""
from __future__ import annotations

import argparse
import os
from concurrent.futures import ThreadPoolExecutor

import common  # noqa: F401
from common import NullEncoder, ingest_rate, machine, model, sample_data, timed

from mmindex.pipeline.ingest.images import decode_image
from mmindex.pipeline.ingest.source import open_source
from mmindex.pipeline.ingest.summary import IngestSummary
from mmindex.pipeline.models.encoder import Encoder
from mmindex.pipeline.training.evaluate import collect_rows


def tight_loop(encoder, rows, batch_size, workers):
    """Decode + preprocess only, batch by batch, on `workers` threads."""
    batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]

    def work(batch):
        images = [decode_image(r.image.data, encoder.image_size) for r in batch]
        encoder.preprocess(images)
        encoder.preprocess([r.caption for r in batch])

    def run():
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(work, batches))

    _, seconds = timed(run)
    return len(rows) / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    workers = args.workers or os.cpu_count()
    folder = sample_data(args.rows)
    null = NullEncoder(Encoder(str(model("base")), device="cpu"))
    rows = collect_rows(open_source([str(folder)]), null.name, IngestSummary("feed"))
    print(f"machine: {machine()}; {args.rows} rows of 640x480 JPEG → {null.image_size}px CLIP tensors; "
          f"batch {args.batch_size}; {workers} workers")
    single = tight_loop(null, rows, args.batch_size, 1)
    raw = tight_loop(null, rows, args.batch_size, workers)
    piped = ingest_rate(null, folder, args.batch_size, workers)
    print(f"decode+preprocess, 1 thread        {single:8.1f} rows/s  (= rows/s per core)")
    print(f"decode+preprocess, {workers} threads       {raw:8.1f} rows/s")
    print(f"pipeline, zero-cost encoder        {piped:8.1f} rows/s  ({piped / workers:.1f} rows/s per core)")
    print(f"feed-rate ratio                    {piped / raw:8.3f}  (pipeline ÷ tight loop; target ≥ 0.80)")


if __name__ == "__main__":
    main()
