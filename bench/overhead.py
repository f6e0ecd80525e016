"""Benchmark 1 (overhead) and 3 (baseline): what the pipeline costs around the model.

overhead = end-to-end ingest rows/s ÷ encoder-only rows/s, same model and batch size, the
encoder-only side given pixel tensors and token ids already in memory (images and captions
both embedded, as ingest does). baseline = end-to-end ÷ a naive loop that decodes one row,
encodes it and upserts it, as the textbook example does.

    python bench/overhead.py [--rows 512] [--batch-size 64] [--model-size base] [--device auto]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile

import common  # noqa: F401  (sets up the path)
from common import ingest_rate, machine, model, sample_data, timed

from mmindex.connectors.base import PointRecord
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.pipeline.ingest.images import decode_image
from mmindex.pipeline.ingest.source import open_source
from mmindex.pipeline.models.encoder import Encoder


def encoder_only(encoder, rows, batch_size):
    images = [decode_image(r.image.data, encoder.image_size) for r in rows]
    batches = [(encoder.preprocess(images[i:i + batch_size]),
                encoder.preprocess([r.caption for r in rows[i:i + batch_size]]))
               for i in range(0, len(rows), batch_size)]
    encoder.forward(batches[0][0])  # warm-up

    def run():
        for pixels, tokens in batches:
            encoder.forward(pixels)
            encoder.forward(tokens)

    _, seconds = timed(run)
    return len(rows) / seconds


def naive_loop(encoder, folder, limit):
    """Decode one row, encode it, upsert it: the textbook loop."""
    data_dir = tempfile.mkdtemp()
    try:
        store = QdrantEdgeStore("naive", data_dir=data_dir)
        from mmindex.connectors.base import CollectionSpec

        store.ensure_collection(CollectionSpec(encoder.name, encoder.dim))
        rows = _rows(folder, encoder)[:limit]

        def run():
            for row in rows:
                image = decode_image(row.image.data, encoder.image_size)
                vectors = {"image": encoder.encode_images([image])[0], "text": encoder.encode_texts([row.caption])[0]}
                store.upsert([PointRecord(row.id, vectors, row.payload)])

        _, seconds = timed(run)
        store.close()
        return len(rows) / seconds
    finally:
        shutil.rmtree(data_dir)


def _rows(folder, encoder):
    from mmindex.pipeline.ingest.summary import IngestSummary
    from mmindex.pipeline.training.evaluate import collect_rows

    return collect_rows(open_source([str(folder)]), encoder.name, IngestSummary("bench"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model-size", default="base")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--naive-rows", type=int, default=128)
    args = parser.parse_args()
    import os

    workers = args.workers or os.cpu_count()
    folder = sample_data(args.rows)
    encoder = Encoder(str(model(args.model_size)), device=args.device, batch_size=args.batch_size)
    print(f"machine: {machine()}; model {args.model_size} ({encoder.dim}-d, {encoder.image_size}px) on "
          f"{encoder.device}; {args.rows} rows of 640x480 JPEG; batch {args.batch_size}; {workers} decode workers")
    only = encoder_only(encoder, _rows(folder, encoder), args.batch_size)
    e2e = ingest_rate(encoder, folder, args.batch_size, workers)
    naive = naive_loop(encoder, folder, args.naive_rows)
    print(f"encoder only      {only:8.1f} rows/s")
    print(f"end to end        {e2e:8.1f} rows/s")
    print(f"naive loop        {naive:8.1f} rows/s  ({args.naive_rows} rows)")
    print(f"overhead ratio    {e2e / only:8.3f}  (end-to-end ÷ encoder-only; target ≥ 0.90)")
    print(f"baseline ratio    {e2e / naive:8.2f}x (end-to-end ÷ naive loop)")


if __name__ == "__main__":
    main()
