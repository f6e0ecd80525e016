"""Writing, reading and searching, the same on every store (tests/connectors/conftest.py: Edge,
qdrant-client ':memory:', and a real server when QDRANT_URL is set)."""
from __future__ import annotations

import uuid

import numpy as np
import pytest

from mmindex.connectors.base import PointRecord, SearchRequest, chunk_by_bytes
from helpers.congruence import DIM, SPEC, points


def test_create_write_read_count_info(make_store):
    store = make_store()
    assert not store.exists() and store.spec() is None
    store.ensure_collection(SPEC)
    store.create_payload_index("year", "integer")
    data = points(40)
    store.upsert(data)
    store.upsert(data[:10])  # same ids again: no duplicates
    store.finish()
    assert store.count() == 40
    got = store.retrieve([data[3].id, data[5].id, str(uuid.uuid4())], with_vectors=True)
    assert {p.id for p in got} == {data[3].id, data[5].id}
    by_id = {p.id: p for p in got}
    assert by_id[data[3].id].payload["caption"] == "item 3"
    np.testing.assert_allclose(by_id[data[3].id].vectors["image"], data[3].vectors["image"], atol=1e-5)
    info = store.info()
    assert (info.points, info.model, info.dim) == (40, "test-model", DIM)
    assert info.payload_types["year"] == "integer"
    assert "year" in info.indexed_fields


def test_nearest_neighbour_on_each_named_vector(make_store):
    store = make_store()
    store.ensure_collection(SPEC)
    data = points(30)
    store.upsert(data)
    hits = store.search(SearchRequest(vector=data[7].vectors["image"], using="image", limit=3))
    assert hits[0].id == data[7].id and hits[0].score == pytest.approx(1.0, abs=1e-5)
    hits = store.search(SearchRequest(vector=data[7].vectors["text"], using="text", limit=3))
    assert hits[0].id == data[7].id
    # Points without a caption have no text vector and never show up in text search.
    text_hits = store.search(SearchRequest(vector=data[8].vectors["image"], using="text", limit=30))
    assert data[8].id not in {h.id for h in text_hits} and len(text_hits) == 22
    page = store.search(SearchRequest(vector=data[7].vectors["image"], using="image", limit=2, offset=1))
    assert [h.id for h in page] == [h.id for h in store.search(
        SearchRequest(vector=data[7].vectors["image"], using="image", limit=3))][1:]
    above = store.search(SearchRequest(vector=data[7].vectors["image"], using="image", limit=30,
                                       score_threshold=0.5))
    assert above and all(h.score >= 0.5 for h in above)


def test_write_batches_are_sized_by_bytes():
    heavy = [PointRecord(str(i), {"image": np.zeros(512, np.float32)}, {"blob": "x" * 100_000}) for i in range(50)]
    chunks = list(chunk_by_bytes(heavy, max_bytes=1_000_000, max_count=1000))
    assert sum(len(c) for c in chunks) == 50
    assert all(len(c) <= 9 for c in chunks) and len(chunks) >= 6
