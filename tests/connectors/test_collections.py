"""The collection record: a model or size mismatch refused on every store; a missing or damaged record
is one StoreError."""
from __future__ import annotations

import pytest

from mmindex.connectors.base import CollectionSpec
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.errors import CollectionMismatchError, StoreError
from helpers.congruence import DIM, SPEC


def test_model_or_size_mismatch_is_refused(make_store):
    store = make_store()
    store.ensure_collection(SPEC)
    with pytest.raises(CollectionMismatchError, match="test-model.*other-model"):
        store.ensure_collection(CollectionSpec("other-model", DIM))
    with pytest.raises(CollectionMismatchError, match="size 8.*size 16"):
        store.ensure_collection(CollectionSpec("test-model", 16))


def test_missing_collection_reads_are_store_errors(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        QdrantEdgeStore("nothing", data_dir=tmp_path).info()


@pytest.mark.parametrize("text", ["{garbage", '{"x": 1}', "[]"])
def test_a_damaged_collection_record_is_a_store_error(tmp_path, text):
    """A collection.json that is not a record (hand-edited, half-written by another tool) is one clear
    StoreError, which the service answers as 503, never a JSONDecodeError or KeyError (500)."""
    store = QdrantEdgeStore("c", data_dir=tmp_path)
    store.ensure_collection(SPEC)
    store.close()
    (tmp_path / "c" / "collection.json").write_text(text)
    with pytest.raises(StoreError, match="collection.json"):
        QdrantEdgeStore("c", data_dir=tmp_path).spec()
