"""The relevance cutoff (`--cutoff auto`, pipeline/query/cutoff.py) against the best single global score threshold.

Data: `mmindex sample DIR --rows 500 --seed S` for S = 0, 1, 2, each ingested with demo/shapes-clip into its own
embedded collection. Queries: the text "a {color} {shape}" for every colour × shape present, and every row's
stored image vector ("more like this": the point itself left out). A hit is relevant when its colour AND shape
are the query's. Each query's top `CANDIDATES` hits come from the store's search and its background scores from
`cutoff.background_scores` (the path `--cutoff auto` takes).

Compared, per query then averaged over queries (macro): precision, recall and F1 of
- auto: the first `relevant_count(scores, background)` hits;
- threshold: the hits scoring at least t, with t the one value that gives the best macro F1 on seed 0 over all
  queries; and, a stronger baseline, one t per query kind (text, image) chosen the same way.
Seed 0 chooses every parameter (the thresholds here, `cutoff.CALIBRATION` with --fit); seeds 1 and 2 are held
out. A query with no relevant point scores F1 = 1 when it returns nothing and 0 otherwise.

    python bench/cutoff.py [--rows 500] [--fit]

--fit prints the logistic calibration (a, b) fitted on seed 0 (Newton's method on the z-scores of the top
`CANDIDATES` hits of every query), the values `cutoff.CALIBRATION` holds.
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import common  # noqa: F401
import numpy as np

from mmindex.connectors.base import SearchRequest
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.pipeline.ingest.run import ingest
from mmindex.pipeline.ingest.sample import write_sample
from mmindex.pipeline.models.encoder import Encoder
from mmindex.pipeline.query import cutoff

MODEL = Path(__file__).resolve().parent.parent / "demo" / "shapes-clip"
SEEDS = (0, 1, 2)
THRESHOLDS = np.round(np.arange(0.30, 0.95, 0.005), 3)


def seed_queries(folder: Path, seed: int, rows: int, encoder: Encoder) -> list[dict]:
    """Every query of one seed's collection: kind, hit scores and relevance flags, relevant total, background."""
    write_sample(folder / f"sample-{seed}", rows=rows, seed=seed)
    store = QdrantEdgeStore(f"cutoff-{seed}", data_dir=folder / "store")
    ingest([str(folder / f"sample-{seed}")], store, encoder)
    points, offset = [], None
    while True:
        page, offset = store.scroll(limit=256, offset=offset, with_vectors=True)
        points.extend(page)
        if offset is None:
            break
    labels = {p.id: (p.payload["color"], p.payload["shape"]) for p in points}
    counts: dict[tuple, int] = {}
    for label in labels.values():
        counts[label] = counts.get(label, 0) + 1
    combos = sorted(counts)
    texts = encoder.encode_texts([f"a {color} {shape}" for color, shape in combos])
    queries = [("text", vector, label, None) for vector, label in zip(texts, combos)]
    queries += [("image", p.vectors["image"], labels[p.id], p.id) for p in points]
    found = []
    for kind, vector, label, itself in queries:
        hits = store.search(SearchRequest(vector=list(map(float, vector)), using="image", with_payload=False,
                                          limit=cutoff.CANDIDATES + (itself is not None)))
        hits = [h for h in hits if h.id != itself][:cutoff.CANDIDATES]
        found.append({"kind": kind, "scores": np.array([h.score for h in hits]),
                      "relevant": np.array([labels[h.id] == label for h in hits]),
                      "total": counts[label] - (itself is not None),
                      "background": cutoff.background_scores(store, vector, "image")})
    store.close()
    return found


def scores_of(kept: int, relevant: np.ndarray, total: int) -> tuple[float, float, float]:
    """Precision, recall and F1 of returning the first ``kept`` hits."""
    if total == 0:
        return (1.0, 1.0, 1.0) if kept == 0 else (0.0, 1.0, 0.0)
    found = int(relevant[:kept].sum())
    precision = found / kept if kept else 0.0
    recall = found / total
    return precision, recall, (2 * precision * recall / (precision + recall) if found else 0.0)


def macro(queries: list[dict], kept_of) -> np.ndarray:
    """Mean (precision, recall, F1) over ``queries``, each keeping ``kept_of(query)`` hits."""
    return np.mean([scores_of(kept_of(q), q["relevant"], q["total"]) for q in queries], axis=0)


def best_threshold(queries: list[dict]) -> float:
    return max(THRESHOLDS, key=lambda t: macro(queries, lambda q: int((q["scores"] >= t).sum()))[2])


def fit_calibration(queries: list[dict], steps: int = 50) -> tuple[float, float]:
    """(a, b) of the logistic p = 1 / (1 + exp(-(a + b log10 e))), e the chance count, by Newton's method (maximum
    likelihood)."""
    evidence = np.concatenate([np.log10(np.maximum(cutoff.chance_counts(q["scores"], q["background"]), 1e-300))
                               for q in queries])
    y = np.concatenate([q["relevant"] for q in queries]).astype(float)
    design = np.stack([np.ones_like(evidence), evidence], axis=1)
    weights = np.zeros(2)
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-design @ weights))
        gradient = design.T @ (y - p)
        hessian = (design * (p * (1 - p))[:, None]).T @ design
        weights += np.linalg.solve(hessian, gradient)
    return float(weights[0]), float(weights[1])


def noise_check(points: int, trials: int = 30, seed: int = 0) -> float:
    """Mean hits kept out of the top ``CANDIDATES`` when a query's scores over ``points`` points are pure noise
    (normal draws: nothing relevant), with a background of ``BACKGROUND_SIZE`` of them."""
    rng, kept = np.random.default_rng(seed), []
    for _ in range(trials):
        scores = rng.normal(0.0, 0.1, points)
        top = np.sort(scores)[::-1][:cutoff.CANDIDATES]
        background = cutoff.Background(scores[:cutoff.BACKGROUND_SIZE], points)
        kept.append(cutoff.relevant_count(top, background))
    return float(np.mean(kept))


def report(by_seed: dict[int, list[dict]]) -> None:
    """The table: per seed and query kind, P / R / F1 of auto, one global threshold, and one per kind."""
    kinds = {"all": ("text", "image"), "text": ("text",), "image": ("image",)}
    overall = best_threshold(by_seed[0])
    per_kind = {kind: best_threshold([q for q in by_seed[0] if q["kind"] == kind]) for kind in ("text", "image")}
    print(f"threshold chosen on seed 0: {overall:.3f} for all queries; per kind: text {per_kind['text']:.3f}, "
          f"image {per_kind['image']:.3f}")
    print(f"{'seed':>4} {'queries':<7} {'n':>4}  {'auto P':>6} {'R':>5} {'F1':>5}  {'thr P':>6} {'R':>5} {'F1':>5}  "
          f"{'kind-thr P':>10} {'R':>5} {'F1':>5}  {'auto hits':>9}")
    for seed, queries in by_seed.items():
        for name, members in kinds.items():
            chosen = [q for q in queries if q["kind"] in members]
            auto = macro(chosen, lambda q: cutoff.relevant_count(q["scores"], q["background"]))
            flat = macro(chosen, lambda q: int((q["scores"] >= overall).sum()))
            kind = macro(chosen, lambda q: int((q["scores"] >= per_kind[q["kind"]]).sum()))
            mean_kept = np.mean([cutoff.relevant_count(q["scores"], q["background"]) for q in chosen])
            print(f"{seed:>4} {name:<7} {len(chosen):>4}  {auto[0]:>6.3f} {auto[1]:>5.3f} {auto[2]:>5.3f}  "
                  f"{flat[0]:>6.3f} {flat[1]:>5.3f} {flat[2]:>5.3f}  {kind[0]:>10.3f} {kind[1]:>5.3f} {kind[2]:>5.3f}"
                  f"  {mean_kept:>9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500, help="rows per seed")
    parser.add_argument("--fit", action="store_true", help="print the calibration fitted on seed 0")
    args = parser.parse_args()
    started = time.perf_counter()
    encoder = Encoder(str(MODEL), device="cpu")
    with tempfile.TemporaryDirectory(prefix="bench-cutoff-") as folder:
        by_seed = {seed: seed_queries(Path(folder), seed, args.rows, encoder) for seed in SEEDS}
    print(f"demo/shapes-clip, {args.rows} rows per seed, top {cutoff.CANDIDATES} hits judged, "
          f"background {cutoff.BACKGROUND_SIZE} points; calibration (a, b) = {cutoff.CALIBRATION}")
    if args.fit:
        a, b = fit_calibration(by_seed[0])
        print(f"fitted on seed 0: CALIBRATION = ({a:.2f}, {b:.2f}); p = 1/2 at chance count e = {10 ** (-a / b):.2f}")
    report(by_seed)
    print("pure noise (nothing relevant), hits kept of the top 100: " + ", ".join(
        f"{points:,} points {noise_check(points):.1f}" for points in (500, 2_000, 20_000, 100_000)))
    print(f"({math.ceil(time.perf_counter() - started)} s)")


if __name__ == "__main__":
    main()
