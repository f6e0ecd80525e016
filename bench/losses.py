"""Benchmark 13 (training losses): the same small CLIP trained from scratch with each loss of ``mmindex train``, on
the same data, seed and schedule, then measured on the same held-out set.

Contestants (``--variants``): ``infonce`` (symmetric InfoNCE, the default) and ``triplet`` (its defaults: margin
0.2, cosine distance, semi-hard negatives); a variant such as ``triplet:hardest``, ``triplet:all:euclidean`` or
``triplet:semi-hard:0.1`` sets the mining, the distance and the margin.

The recipe is the demo model's first stage (``demo/shapes-clip/README.md``: ``--from-scratch small``, batch 128,
lr 1e-3, ``--caption-style mixed`` data of seed 10, ``--group-col color,shape``, one loader worker), shrunk to fit
the 2-core machine: ``--rows`` pairs (default 2,000, not 8,000) for ``--epochs`` epochs (default 12, not 36).
Held out: ``mmindex sample heldout --rows 1000 --seed 1234 --start-index 500000`` (the card's set), measured as
``mmindex eval heldout --model M --group-col color,shape`` with short captions ("a red circle") and full ones,
plus zero-shot classification of the held-out images: each image gets the label "{colour} {shape}" whose prompt
"a {colour} {shape}" is nearest, scored by accuracy and macro F1 (``pipeline/training/classification.py``).

    python bench/losses.py [--rows 2000] [--epochs 12] [--variants infonce,triplet] [--keep DIR]

The machine's load average is printed before and after each training run.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from common import CACHE  # also sets the benchmarks' environment (offline Hub)

from mmindex.pipeline.ingest.images import decode_image
from mmindex.pipeline.ingest.sample import COLORS, SHAPES, write_sample
from mmindex.pipeline.models.encoder import Encoder
from mmindex.pipeline.training.classification import classification_report
from mmindex.pipeline.training.evaluate import evaluate
from mmindex.pipeline.training.losses import DISTANCES, MININGS
from mmindex.pipeline.training.train import TrainOptions, train

COLUMNS = (("R@1", "recall@1"), ("R@5", "recall@5"), ("R@10", "recall@10"), ("MRR", "mrr"), ("P@10", "precision@10"),
           ("mAP", "map"), ("nDCG@10", "ndcg@10"))


def sample(rows: int, seed: int, start_index: int = 0, caption_style: str = "full") -> Path:
    """``mmindex sample`` data, made once and cached."""
    folder = CACHE / "losses" / f"sample-{rows}-{seed}-{start_index}-{caption_style}"
    if not (folder / "done").exists():
        write_sample(folder, rows=rows, seed=seed, start_index=start_index, caption_style=caption_style)
        (folder / "done").write_text("ok")
    return folder


def variant_options(variant: str) -> dict:
    """``triplet:hardest:euclidean:0.1`` → TrainOptions fields (loss, mining, distance, margin)."""
    name, *settings = variant.split(":")
    fields: dict = {"loss": name}
    for setting in settings:
        key = "mining" if setting in MININGS else "distance" if setting in DISTANCES else "margin"
        fields[key] = float(setting) if key == "margin" else setting
    return fields


def load() -> str:
    return "{:.2f}".format(os.getloadavg()[0])


def zero_shot(encoder: Encoder, heldout: Path) -> dict:
    """Each held-out image labelled "{colour} {shape}" by its nearest prompt "a {colour} {shape}"."""
    # pyarrow is heavy and optional to `import mmindex`: read the held-out labels here only
    import pyarrow.parquet as pq

    table = [row for path in sorted(heldout.glob("*.parquet"))
             for row in pq.read_table(path, columns=["image", "color", "shape"]).to_pylist()]
    labels = [f"{colour} {shape}" for colour in COLORS for shape in SHAPES]
    prompts = encoder.encode_texts([f"a {label}" for label in labels])
    images = encoder.encode_images([decode_image(row["image"], encoder.image_size) for row in table])
    predicted = [labels[i] for i in (images @ prompts.T).argmax(axis=1)]
    truth = [f"{row['color']} {row['shape']}" for row in table]
    joint = classification_report(truth, predicted, labels)
    shape = classification_report([t.split()[1] for t in truth], [p.split()[1] for p in predicted], list(SHAPES))
    return {"accuracy": joint.accuracy, "macro_f1": joint.macro_f1, "shape_macro_f1": shape.macro_f1}


def measure(model: Path, heldout: Path) -> dict:
    encoder = Encoder(str(model), device="cpu", half=False)
    result = {caption: evaluate([str(heldout)], encoder, ("color", "shape"), caption_col=caption)["exact"]
              for caption in ("short_caption", "caption")}
    result["zero_shot"] = zero_shot(encoder, heldout)
    return result


def run(args) -> list[dict]:
    training = sample(args.rows, args.data_seed, caption_style="mixed")
    heldout = sample(args.heldout_rows, 1234, start_index=500_000)
    keep = Path(args.keep) if args.keep else CACHE / "losses" / "models"
    results = []
    for variant in args.variants.split(","):
        options = TrainOptions(epochs=args.epochs, batch_size=128, learning_rate=1e-3, seed=args.seed, workers=1,
                               device="cpu", group_cols=("color", "shape"), from_scratch=args.size,
                               **variant_options(variant))
        before, started = load(), time.perf_counter()
        report = train([str(training)], keep / variant.replace(":", "-"), options=options)
        seconds = time.perf_counter() - started
        print(f"{variant}: trained in {seconds:.0f} s, best epoch {report.best_epoch}/{args.epochs}, "
              f"validation score {report.best_score:.3f}; load {before} → {load()}", flush=True)
        results.append({"variant": variant, "loss": report.loss, "seconds": round(seconds, 1),
                        "best_epoch": report.best_epoch, "validation_score": report.best_score,
                        "load": [before, load()], **measure(keep / variant.replace(":", "-"), heldout)})
    return results


def print_table(results: list[dict]) -> None:
    for caption, title in (("short_caption", 'short captions ("a red circle")'), ("caption", "full captions")):
        print(f"\nheld-out, {title}; correct when colour and shape match:")
        print(f"  {'variant':<26} {'direction':<11}" + "".join(f" {name:>7}" for name, _ in COLUMNS))
        for result in results:
            for metrics in result[caption]:
                print(f"  {result['variant']:<26} {metrics['direction']:<11}"
                      + "".join(f" {metrics[key]:>7.3f}" for _, key in COLUMNS))
    print("\nzero-shot classification of the held-out images (80 labels 'colour shape', prompts 'a {colour} {shape}'):")
    print(f"  {'variant':<26} {'accuracy':>8} {'macro F1':>8} {'shape macro F1':>14}")
    for result in results:
        z = result["zero_shot"]
        print(f"  {result['variant']:<26} {z['accuracy']:>8.3f} {z['macro_f1']:>8.3f} {z['shape_macro_f1']:>14.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000, help="training pairs (the demo's stage 1: 8000)")
    parser.add_argument("--epochs", type=int, default=12, help="epochs (the demo's stage 1: 36)")
    parser.add_argument("--heldout-rows", type=int, default=1000)
    parser.add_argument("--data-seed", type=int, default=10, help="seed of the training sample (the demo's: 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the batch order")
    parser.add_argument("--size", default="small", help="--from-scratch size (the demo's: small)")
    parser.add_argument("--variants", default="infonce,triplet")
    parser.add_argument("--keep", default=None, help="folder for the trained models (default: the bench cache)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; load average at start {load()}; {args.rows} pairs × {args.epochs} epochs, "
          f"--from-scratch {args.size}, batch 128, lr 1e-3, data seed {args.data_seed}, seed {args.seed}", flush=True)
    results = run(args)
    print_table(results)
    print(f"\nload average at the end {load()}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
