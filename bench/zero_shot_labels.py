"""Zero-shot labels (``mmindex label``, issue 26) on the demo: accuracy and macro F1 of the demo model's labels for
the sample's ``shape`` and ``color`` columns, with a few prompt templates, through the same library calls the
command makes (stored image vectors, the collection's own text model), scored by
``pipeline/training/classification.py``: the figures of docs/classify.md, "Zero-shot labels".

    python bench/zero_shot_labels.py --rows 400 --seed 1
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.pipeline.classify.predictions import label_collection
from mmindex.pipeline.classify.zero_shot import zero_shot_labeler
from mmindex.pipeline.ingest.options import IngestOptions
from mmindex.pipeline.ingest.run import ingest
from mmindex.pipeline.ingest.sample import COLORS, SHAPES, write_sample
from mmindex.pipeline.training.classification import classification_report

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = {
    "{}": ["{}"],
    "a {}": ["a {}"],
    "a photo of a {}.": ["a photo of a {}."],
    "{}" + ", a {}": ["{}", "a {}"],
    "mean of the three": ["{}", "a {}", "a photo of a {}."],
}


def measure(store, column: str, labels: list[str], templates: list[str]) -> tuple[float, float]:
    """(accuracy, macro F1) of the labels written for ``labels`` against the payload ``column``."""
    labeler = zero_shot_labeler(store, labels, templates)
    label_collection(store, labeler, field="guess", top_k=1, resume=False)
    truth, predicted, cursor = [], [], None
    while True:
        points, cursor = store.scroll(limit=512, offset=cursor)
        truth += [p.payload[column] for p in points]
        predicted += [p.payload["guess"] for p in points]
        if cursor is None:
            break
    report = classification_report(truth, predicted, labels)
    return report.accuracy, report.macro_f1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--model", default=str(ROOT / "demo" / "shapes-clip"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        write_sample(Path(folder) / "data", rows=args.rows, seed=args.seed)
        store = QdrantEdgeStore("demo", data_dir=str(Path(folder) / "store"))
        try:
            ingest([str(Path(folder) / "data")], store, args.model, IngestOptions(source_name="demo"))
            print(f"{args.rows} rows, seed {args.seed}, model {Path(args.model).name}\n")
            print("| templates | shape accuracy | shape macro F1 | colour accuracy | colour macro F1 |")
            print("|---|---|---|---|---|")
            for name, templates in TEMPLATES.items():
                shape = measure(store, "shape", list(SHAPES), templates)
                color = measure(store, "color", list(COLORS), templates)
                print(f"| `{name}` | {shape[0]:.3f} | {shape[1]:.3f} | {color[0]:.3f} | {color[1]:.3f} |")
        finally:
            store.close()


if __name__ == "__main__":
    main()
