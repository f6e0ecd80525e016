"""Diversity (`--diversity`, MMR over a candidate pool) on data with near-identical rows, against plain search.

Data: `mmindex sample` rows (`--rows`, `--seed`), each written `--copies` times under its own id with a tiny
jitter of its image (every pixel ±2 grey levels at random, JPEG quality 95), as the same photo uploaded several
times; a `source` column names the row it came from. Ingested with demo/shapes-clip into an embedded collection.

Queries (text → image, as `mmindex query` runs them, through `search()`):
- each source row's caption: relevant is a copy of that row (R@1: the first hit is one; R@10: one is in the top
  10), and, for precision@10, every hit with the row's colour and shape;
- "a {color} {shape}" for every colour × shape present: relevant is a hit with that colour and shape.
Reported per method, averaged over queries: distinct source images and distinct colour+shape pairs in the top 10
(what diversity is for), R@1, R@10 and P@10 (what it may cost).

    python bench/diversity.py [--rows 300] [--copies 5] [--seed 0] [--diversity 0.1,0.2,0.3,0.5,0.75]
"""
from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import common  # the benchmarks' environment (offline Hub) and the machine line
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.pipeline.ingest.run import ingest
from mmindex.pipeline.ingest.sample import write_sample
from mmindex.pipeline.models.encoder import Encoder
from mmindex.pipeline.query.plan import SearchOptions
from mmindex.pipeline.query.search import search

MODEL = Path(__file__).resolve().parent.parent / "demo" / "shapes-clip"


def jittered(image: bytes, rng: np.random.Generator) -> bytes:
    """The same picture, every pixel moved by at most 2 grey levels, re-encoded as JPEG (quality 95)."""
    pixels = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"), dtype=np.int16)
    pixels = np.clip(pixels + rng.integers(-2, 3, size=pixels.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=95)
    return out.getvalue()


def duplicated_sample(folder: Path, rows: int, copies: int, seed: int) -> Path:
    """``rows`` sample rows, each ``copies`` times (ids ``<id>~<k>``, images jittered, ``source`` = the row's id)."""
    write_sample(folder / "original", rows=rows, seed=seed)
    table = pq.read_table(folder / "original")
    rng = np.random.default_rng(seed)
    columns = {name: [] for name in table.column_names}
    columns["source"] = []
    for row in table.to_pylist():
        for copy in range(copies):
            for name in table.column_names:
                columns[name].append(row[name])
            columns["id"][-1] = f"{row['id']}~{copy}"
            columns["image"][-1] = jittered(row["image"], rng)
            columns["source"].append(row["id"])
    schema = table.schema.append(pa.field("source", pa.string()))
    (folder / "duplicated").mkdir()
    pq.write_table(pa.Table.from_pydict(columns, schema=schema), folder / "duplicated" / "part-00000.parquet")
    return folder / "duplicated"


def queries(table: pa.Table) -> list[dict]:
    """Each source row's caption, and "a {color} {shape}" for every pair present."""
    rows = table.select(["id", "caption", "color", "shape"]).to_pylist()
    found = [{"kind": "caption", "text": r["caption"], "source": r["id"], "label": (r["color"], r["shape"])}
             for r in rows]
    pairs = sorted({(r["color"], r["shape"]) for r in rows})
    found += [{"kind": "short", "text": f"a {c} {s}", "source": None, "label": (c, s)} for c, s in pairs]
    return found


def measure(store, encoder: Encoder, asked: list[dict], diversity: float | None) -> dict[str, dict[str, float]]:
    """The method's averages per query kind: distinct sources and colour+shape pairs in the top 10, R@1, R@10,
    P@10 (R@ only for caption queries: the row's own copies are its relevant hits)."""
    vectors = encoder.encode_texts([q["text"] for q in asked])
    options = SearchOptions() if diversity is None else SearchOptions(diversity=diversity)
    rows: dict[str, list[dict[str, float]]] = {"caption": [], "short": []}
    for query, vector in zip(asked, vectors):
        hits = search(store, vector, limit=10, options=options)
        sources = [hit.payload["source"] for hit in hits]
        labels = [(hit.payload["color"], hit.payload["shape"]) for hit in hits]
        figures = {"sources": len(set(sources)), "pairs": len(set(labels)),
                   "P@1": float(labels[0] == query["label"]),
                   "P@10": sum(label == query["label"] for label in labels) / len(labels)}
        if query["source"] is not None:
            figures["R@1"] = float(sources[0] == query["source"])
            figures["R@10"] = float(query["source"] in sources)
        rows[query["kind"]].append(figures)
    return {kind: {name: float(np.mean([r[name] for r in found])) for name in found[0]}
            for kind, found in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=300, help="source rows (each stored --copies times)")
    parser.add_argument("--copies", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--diversity", default="0.1,0.2,0.3,0.5,0.75", help="λ values to compare with plain search")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = duplicated_sample(folder, args.rows, args.copies, args.seed)
        encoder = Encoder(str(MODEL), device="cpu")
        store = QdrantEdgeStore("diversity", data_dir=folder / "store")
        summary = ingest([str(data)], store, encoder)
        print(f"machine: {common.machine()}")
        print(f"{args.rows} rows × {args.copies} copies ({summary.upserted} points), demo/shapes-clip, "
              f"seed {args.seed}; ingested in {time.perf_counter() - started:.0f}s")
        asked = queries(pq.read_table(folder / "original"))
        methods = [("plain", None)] + [(f"diversity {d}", float(d)) for d in args.diversity.split(",")]
        results = {name: measure(store, encoder, asked, value) for name, value in methods}
        store.close()
    report(results, asked)


def report(results: dict, asked: list[dict]) -> None:
    captions = sum(q["kind"] == "caption" for q in asked)
    print(f"\ncaption queries ({captions}): top 10, text → image")
    print(f"{'method':<16} {'sources':>8} {'col+shape':>10} {'R@1':>6} {'R@10':>6} {'P@10':>6}")
    for name, found in results.items():
        f = found["caption"]
        print(f"{name:<16} {f['sources']:>8.2f} {f['pairs']:>10.2f} {f['R@1']:>6.3f} {f['R@10']:>6.3f} "
              f"{f['P@10']:>6.3f}")
    print(f"\n\"a {{color}} {{shape}}\" queries ({len(asked) - captions}): top 10")
    print(f"{'method':<16} {'sources':>8} {'col+shape':>10} {'P@1':>6} {'P@10':>6}")
    for name, found in results.items():
        f = found["short"]
        print(f"{name:<16} {f['sources']:>8.2f} {f['pairs']:>10.2f} {f['P@1']:>6.3f} {f['P@10']:>6.3f}")


if __name__ == "__main__":
    main()
