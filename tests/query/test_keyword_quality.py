"""Hybrid search earns its place, measured with the bundled demo model (docs/retrieval-quality.md, "Hybrid search"):
on captions carrying part numbers, names and rare words (tests/helpers/keyword_data.py) hybrid R@1 is far above
dense; on the demo's ordinary captions it is no worse than dense by more than 0.01."""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helpers.keyword_data import recall_at, write_part_numbers
from mmindex import IngestOptions, ingest
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.pipeline.ingest.sample import write_sample

DEMO = Path(__file__).resolve().parents[2] / "demo" / "shapes-clip"


@pytest.fixture(scope="module")
def demo():
    from mmindex.pipeline.models.encoder import Encoder

    return Encoder(str(DEMO), device="cpu")


def measured(folder, demo, exact: bool):
    store = QdrantEdgeStore("q", data_dir=folder / "store")
    try:
        ingest([str(folder / "data")], store, demo, IngestOptions(batch_size=64))
        rows = pq.read_table(next((folder / "data").glob("*.parquet"))).to_pylist()
        payloads = {p.id: p.payload for p in store.scroll(limit=10_000)[0]}
        if exact:  # the row itself: only its part number tells it from the rows of its colour and shape
            relevant = lambda i, hit: payloads[hit.id]["caption"] == rows[i]["caption"]  # noqa: E731
        else:  # same colour and shape, as the demo model's card counts it
            relevant = lambda i, hit: (payloads[hit.id]["color"], payloads[hit.id]["shape"]) == (  # noqa: E731
                rows[i]["color"], rows[i]["shape"])
        return {fusion: recall_at(store, demo, [row["caption"] for row in rows], relevant, fusion=fusion)
                for fusion in ("rrf", "dbsf")}
    finally:
        store.close()


@pytest.mark.slow
def test_hybrid_finds_part_numbers_dense_cannot(tmp_path, demo):
    write_part_numbers(tmp_path / "data", rows=400, seed=7)
    figures = measured(tmp_path, demo, exact=True)
    dense = figures["rrf"]["dense"]["R@1"]
    assert dense < 0.3  # about 5 rows share each colour and shape: the model cannot tell them apart
    assert figures["rrf"]["keyword"]["R@1"] >= 0.95
    assert figures["rrf"]["hybrid"]["R@1"] >= dense + 0.4
    assert figures["dbsf"]["hybrid"]["R@1"] >= 0.95


@pytest.mark.slow
def test_hybrid_is_no_worse_than_dense_on_ordinary_captions(tmp_path, demo):
    write_sample(tmp_path / "data", rows=400, seed=8, width=64, height=64)
    figures = measured(tmp_path, demo, exact=False)
    for fusion in ("rrf", "dbsf"):
        assert figures[fusion]["hybrid"]["R@1"] >= figures[fusion]["dense"]["R@1"] - 0.01
