"""GPU throughput: ingest images/s for ViT-B/32- and ViT-L/14-shaped CLIPs, JPEGs decoded on the CPU vs the GPU.

For each model shape (random weights, built by ``mmindex.pipeline.training.scratch``): the encoder alone (forward passes
on ready pixel tensors, the model thread's ceiling), then end-to-end ``ingest`` (Parquet → decode → embed →
embedded Qdrant Edge store, no index build) with ``decode="cpu"`` (Pillow in the workers) and
``decode="gpu"`` (torchvision on the device; skipped, saying why, without torchvision). One table at the end.
Run through ``bench/gpu.sh`` (it checks the environment first); ``--smoke`` is a tiny run for a CPU machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

FULL = {"base": 20_000, "large": 6_000}  # rows per ingest run: ~8-20 s each at the targets (2,500/s, 300/s)
SMOKE = {"tiny": 96, "small": 48}


def encoder_only(encoder, batch_size: int, seconds: float) -> float:
    """Images/s of ``Encoder.forward`` on ready pixel tensors (host → device copy and vectors back included)."""
    import torch

    side = encoder.image_size
    pixels = torch.randn(batch_size, 3, side, side)
    if encoder.device.startswith("cuda"):
        pixels = pixels.pin_memory()
    features = {"pixel_values": pixels, "modality": "image"}
    for _ in range(3):  # warm-up: kernels chosen, memory pooled
        encoder.forward(features)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        encoder.forward(features)  # returns numpy: synchronised
        done += batch_size
    return done / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/gpu.sh", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models and rows, on whatever device there is")
    parser.add_argument("--batch-size", type=int, default=None, help="default 256 on CUDA, 32 on CPU")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--unique-images", type=int, default=None, help="distinct JPEGs the rows cycle through")
    args = parser.parse_args()

    import torch

    from mmindex.pipeline.ingest.gpu_decode import torchvision_problem
    from mmindex.pipeline.models.encoder import Encoder

    cuda = torch.cuda.is_available()
    batch = args.batch_size or (256 if cuda else 32)
    shapes = SMOKE if args.smoke else FULL
    width, height = (160, 120) if args.smoke else (640, 480)
    unique = args.unique_images or (16 if args.smoke else 1000)
    # Without CUDA (a smoke run) the torchvision path still runs, on the CPU: the same code, another device.
    decode_device = None if cuda else "cpu"
    no_torchvision = torchvision_problem()
    print(f"machine: {common.machine()}")
    print(f"batch {batch}, {args.workers} decode workers, {width}x{height} JPEG rows cycling through {unique} "
          f"images; shapes: {', '.join(f'{s} ({n:,} rows)' for s, n in shapes.items())}", flush=True)
    if no_torchvision:
        print(f"GPU decode rows skipped: {no_torchvision}", flush=True)
    table = []
    for shape, rows in shapes.items():
        started = time.perf_counter()
        folder = common.tiled_sample(rows, unique, width, height)
        model = common.model(shape)
        encoder = Encoder(str(model), batch_size=batch, backend="torch")  # the GPU decode feeds torch
        print(f"{shape}: data and model ready in {time.perf_counter() - started:.0f} s; model on {encoder.device}, "
              f"{encoder.image_size} px, {encoder.dim}-d", flush=True)
        row = {"shape": shape, "rows": rows, "encoder": encoder_only(encoder, batch, 3 if args.smoke else 10)}
        print(f"  encoder only: {row['encoder']:,.0f} images/s", flush=True)
        row["cpu"] = common.ingest_rate(encoder, folder, batch, args.workers, decode="cpu")
        print(f"  ingest, decode cpu: {row['cpu']:,.0f} rows/s", flush=True)
        if not no_torchvision:
            row["gpu"] = common.ingest_rate(encoder, folder, batch, args.workers, decode="gpu",
                                            decode_device=decode_device)
            print(f"  ingest, decode gpu{' (torchvision on the CPU)' if decode_device else ''}: "
                  f"{row['gpu']:,.0f} rows/s", flush=True)
        table.append(row)
        del encoder
        if cuda:
            torch.cuda.empty_cache()
    print()
    print(f"{'model shape':<24} {'rows':>7} {'encoder only img/s':>19} {'ingest, decode cpu':>19} "
          f"{'ingest, decode gpu':>19} {'gpu ÷ cpu':>9}")
    names = {"base": "ViT-B/32 (base)", "large": "ViT-L/14 (large)"}
    for row in table:
        gpu = f"{row['gpu']:,.0f}" if "gpu" in row else "skipped"
        ratio = f"{row['gpu'] / row['cpu']:.2f}" if "gpu" in row else "-"
        print(f"{names.get(row['shape'], row['shape']):<24} {row['rows']:>7,} {row['encoder']:>19,.0f} "
              f"{row['cpu']:>19,.0f} {gpu:>19} {ratio:>9}")
    print("(rows/s = images/s: one image and one caption per row; the whole ingest call, from reading the first "
          "row to the last point written, the GPU path's load check included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
