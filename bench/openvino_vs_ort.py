"""Benchmark: OpenVINO against ONNX Runtime on mmindex's exported image tower (is a third backend worth it?).

Exports (or reuses) the ViT-B/32-shaped random model's towers with mmindex's ONNX backend, then runs
the image tower on the same batch with ONNX Runtime (mmindex's session settings) and with OpenVINO
(`core.compile_model` on the same .onnx file, throughput and latency hints), interleaved over the
rounds, and prints images/s and how far OpenVINO's vectors are from ONNX Runtime's.

    pip install openvino          # not a dependency of mmindex
    python bench/openvino_vs_ort.py [--rounds 3] [--batch 32]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import common  # noqa: F401
import numpy as np
from common import CACHE, machine, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=32, help="images per forward pass (default: %(default)s)")
    args = parser.parse_args()
    import openvino

    from mmindex.pipeline.models.onnx_model import OnnxModel, open_session, run_session

    exported = OnnxModel(str(model("base")), "cpu", cache_root=CACHE / "mmindex").cache_dir
    work = Path(tempfile.mkdtemp())
    try:
        # A private copy: the bench cache hard-links these files for FastEmbed, and onnx refuses hard-linked data.
        shutil.copytree(exported, work / "fp32")
        path = work / "fp32" / "image.onnx"
        ort = open_session(path, None, ["CPUExecutionProvider"])
        core = openvino.Core()
        started = time.perf_counter()
        hints = {hint: core.compile_model(str(path), "CPU", {"PERFORMANCE_HINT": hint})
                 for hint in ("THROUGHPUT", "LATENCY")}
        compiled = time.perf_counter() - started
        pixels = np.random.default_rng(0).standard_normal((args.batch, 3, 224, 224)).astype(np.float32)
        runs = {"onnxruntime": lambda x: run_session(ort, {"pixel_values": x}),
                **{f"openvino {hint.lower()}": (lambda m: lambda x: m([x])[0])(m) for hint, m in hints.items()}}
        rates: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, run in runs.items():
                started = time.perf_counter()
                run(pixels)
                rates[name].append(args.batch / (time.perf_counter() - started))
        unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
        gap = float(np.abs(unit(runs["openvino throughput"](pixels)) - unit(runs["onnxruntime"](pixels))).max())
        print(f"machine: {machine()}; openvino {openvino.__version__}; image tower of model base (ViT-B/32 shape), "
              f"batch {args.batch}, {args.rounds} interleaved rounds; OpenVINO compiled both in {compiled:.2f} s")
        for name, values in rates.items():
            print(f"{name:<22} " + " / ".join(f"{v:.1f}" for v in values) + f" images/s (median {np.median(values):.1f})")
        print(f"openvino vs onnxruntime: max difference of unit vectors {gap:.2g}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
