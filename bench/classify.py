"""Classification on the demo (issue 26's acceptance): zero-shot labels against a linear probe trained on half the
points, scored on the other half, for the sample's ``shape`` and ``color`` columns — exactly what
``mmindex eval --task classify`` runs (``pipeline/classify/evaluate.py``: the split by point id, the probe with its
C chosen on a validation share of the training half, the metrics of ``pipeline/training/classification.py``).
The figures of docs/classify.md ("Measuring") and bench/README.md §14.

    python bench/classify.py                          # 600 and 2000 rows, seed 1; splits 0, 1, 2
    python bench/classify.py --rows 600 --splits 0

The same for one collection and one split, from the shell:

    mmindex sample data --rows 600 --seed 1
    mmindex ingest data -c shapes --model demo/shapes-clip
    mmindex eval --task classify -c shapes --label-col shape --labels shapes.txt --plot shape.png
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.pipeline.classify.evaluate import evaluate_classifiers
from mmindex.pipeline.classify.labels_file import DEFAULT_TEMPLATES
from mmindex.pipeline.ingest.options import IngestOptions
from mmindex.pipeline.ingest.run import ingest
from mmindex.pipeline.ingest.sample import COLORS, SHAPES, write_sample

ROOT = Path(__file__).resolve().parents[1]
LABELS = {"shape": list(SHAPES), "color": list(COLORS)}


def measure(store, column: str, templates: list[str], splits: list[int]) -> list[dict]:
    """One row per split seed: zero-shot and probe accuracy and macro F1 on the held-out half."""
    rows = []
    for seed in splits:
        started = time.perf_counter()
        evaluation = evaluate_classifiers(store, column, LABELS[column], templates, holdout=0.5, seed=seed)
        zero_shot, probe = (result.report for result in evaluation.results)
        rows.append({"split": seed, "train": evaluation.train_points, "heldout": evaluation.heldout_points,
                     "zs_acc": zero_shot.accuracy, "zs_f1": zero_shot.macro_f1, "probe_acc": probe.accuracy,
                     "probe_f1": probe.macro_f1, "c": evaluation.results[1].labeler["c"],
                     "seconds": time.perf_counter() - started})
    return rows


def print_rows(rows_count: int, column: str, template_name: str, rows: list[dict]) -> None:
    """One table row: accuracy (mean over the splits) and macro F1 per split and its mean, for both."""
    mean = {key: statistics.mean(row[key] for row in rows) for key in ("zs_acc", "zs_f1", "probe_acc", "probe_f1")}
    zs = " / ".join(f"{row['zs_f1']:.3f}" for row in rows)
    probe = " / ".join(f"{row['probe_f1']:.3f}" for row in rows)
    gap = mean["probe_f1"] - mean["zs_f1"]
    print(f"| {rows_count} | {column} | `{template_name}` | {rows[0]['train']}/{rows[0]['heldout']} | "
          f"{mean['zs_acc']:.3f} | {zs} → **{mean['zs_f1']:.3f}** | {mean['probe_acc']:.3f} | {probe} → "
          f"**{mean['probe_f1']:.3f}** | {'probe' if gap > 0 else 'zero-shot'} by {abs(gap):.3f} | "
          f"{', '.join(format(row['c'], 'g') for row in rows)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="600,2000", help="sample sizes, comma-separated")
    parser.add_argument("--seed", type=int, default=1, help="seed of the sample")
    parser.add_argument("--splits", default="0,1,2", help="seeds of the held-out split, comma-separated")
    parser.add_argument("--model", default=str(ROOT / "demo" / "shapes-clip"))
    args = parser.parse_args()
    splits = [int(s) for s in args.splits.split(",")]
    templates = {"a photo of a {}. (default)": list(DEFAULT_TEMPLATES), "{} + a {}": ["{}", "a {}"]}
    print(f"model {Path(args.model).name}; sample seed {args.seed}; {os.cpu_count()} cores, load average at start "
          f"{os.getloadavg()[0]:.2f}\n")
    print(f"splits (held-out seeds) {args.splits}: accuracy is their mean; macro F1 per split → mean\n")
    print("| rows | column | zero-shot templates | fit/scored (split 1st) | zero-shot acc | zero-shot macro F1 | "
          "probe acc | probe macro F1 | higher macro F1 | probe C per split |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for rows_count in [int(r) for r in args.rows.split(",")]:
        with tempfile.TemporaryDirectory() as folder:
            write_sample(Path(folder) / "data", rows=rows_count, seed=args.seed)
            store = QdrantEdgeStore("demo", data_dir=str(Path(folder) / "store"))
            try:
                ingest([str(Path(folder) / "data")], store, args.model, IngestOptions(source_name="demo"))
                for column in LABELS:
                    for name, chosen in templates.items():
                        print_rows(rows_count, column, name, measure(store, column, chosen, splits))
            finally:
                store.close()
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
