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


def test_a_text_model_of_the_same_name_with_other_files_is_named_as_such():
    """A reviewer's FastEmbed text tower from another folder of the same name: the refusal named one model twice."""
    from mmindex.connectors.base import CollectionSpec, model_mismatch

    recorded = CollectionSpec("vision", 8, fingerprint="sha256:" + "a" * 64, text_model="clip-ViT-B-32-text",
                              text_fingerprint="sha256:" + "b" * 64)
    other = CollectionSpec("vision", 8, fingerprint="sha256:" + "a" * 64, text_model="clip-ViT-B-32-text",
                           text_fingerprint="sha256:" + "c" * 64)
    message = model_mismatch(recorded, other, "f1")
    assert "names agree but the files differ" in message and "sha256:cccc" in message and "sha256:bbbb" in message
