"""``backfill_keywords`` (mmindex keywords): a collection made before keyword search gains keyword vectors from its
stored captions and payloads — killed midway and resumed, it holds exactly the vectors (and gives exactly the
keyword-search results) of the same rows ingested fresh, on both stores; other fields re-do every point."""
from __future__ import annotations

import uuid

import numpy as np
import pytest

from helpers.congruence import compare_store_results
from helpers.keyword_data import create_old_style, write_part_numbers
from mmindex import IngestOptions, ingest
from mmindex.connectors.base import CollectionSpec, PointRecord, SearchRequest
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.qdrant_server import QdrantServerStore
from mmindex.connectors.queries import KEYWORDS, Nearest
from mmindex.errors import InputError, StoreError, UsageError
from mmindex.pipeline.collection.copy import copy_collection
from mmindex.pipeline.collection.keywords import backfill_keywords
from mmindex.pipeline.query.keywords import BACKFILL_KEY, SETTINGS_KEY, keyword_query

QUERIES = ["XJ-9000", "red circle", "knurled", "Okafor", "a blue star part", "Sato chamfered square"]


def open_store(kind, name, folder):
    return QdrantEdgeStore(name, data_dir=folder) if kind == "edge" else QdrantServerStore(name, url=":memory:")


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return write_part_numbers(tmp_path_factory.mktemp("parts"), rows=40, seed=3, width=32, height=32)


def keyword_vectors(store) -> dict:
    points, _ = store.scroll(limit=1000, with_vectors=True)
    return {p.id: (p.vectors or {}).get(KEYWORDS) for p in points}


def keyword_hits(store):
    """Every hit of each query as (id, score), in one order: score, then id (engines order ties as they hold them)."""
    meta = store.metadata()
    answers = []
    for text in QUERIES:
        hits = store.search(SearchRequest(query=Nearest(keyword_query(text, meta), KEYWORDS), limit=100))
        answers.append(sorted(((hit.id, hit.score) for hit in hits), key=lambda pair: (-round(pair[1], 4), pair[0])))
    return answers


def fail_after(monkeypatch, store, writes: int) -> None:
    """The store's vector writes raise after ``writes`` of them (a run killed midway)."""
    real, count = store.update_vectors, [0]

    def update_vectors(vectors):
        count[0] += 1
        if count[0] > writes:
            raise KeyboardInterrupt
        real(vectors)

    monkeypatch.setattr(store, "update_vectors", update_vectors)


@pytest.mark.parametrize("kind", ["edge", "memory"])
def test_a_killed_backfill_resumes_and_equals_a_fresh_ingest(tmp_path, encoder, parts, monkeypatch, kind):
    old, fresh = open_store(kind, "old", tmp_path), open_store(kind, "fresh", tmp_path)
    try:
        create_old_style(old, encoder.spec())
        ingest([str(parts)], old, encoder, IngestOptions(source_name="parts"))
        ingest([str(parts)], fresh, encoder, IngestOptions(source_name="parts", text_fields=["title"]))
        with monkeypatch.context() as patch:
            fail_after(patch, old, 2)
            with pytest.raises(KeyboardInterrupt):
                backfill_keywords(old, ["title"], page=8)
        mark = old.metadata()[BACKFILL_KEY]
        assert mark["done"] == 16 and mark["next"] is not None and not mark["clear"]
        with pytest.raises(UsageError, match="being made \\(16 points so far\\)"):
            keyword_query("XJ-9000", old.metadata(), "old")
        summary = backfill_keywords(old, page=8)  # the recorded fields: carries on
        assert (summary.resumed_from, summary.written, summary.points) == (mark["next"], 24, 40)
        assert BACKFILL_KEY not in old.metadata()
        assert old.metadata()[SETTINGS_KEY] == fresh.metadata()[SETTINGS_KEY]
        assert keyword_vectors(old) == keyword_vectors(fresh) and None not in keyword_vectors(old).values()
        compare_store_results([fresh, old], keyword_hits)
        again = backfill_keywords(old, ["title"])
        assert again.already_complete and again.written == 0
    finally:
        old.close()
        fresh.close()


def test_edge_and_server_agree_after_a_backfill(tmp_path, encoder, parts):
    stores = [open_store("edge", "old", tmp_path), open_store("memory", "old", tmp_path)]
    try:
        for store in stores:
            create_old_style(store, encoder.spec())
            ingest([str(parts)], store, encoder, IngestOptions(source_name="parts"))
            summary = backfill_keywords(store, page=16)
            assert summary.added_vector and summary.written == 40 and summary.fields == []
        compare_store_results(stores, keyword_vectors)
        compare_store_results(stores, keyword_hits)
    finally:
        for store in stores:
            store.close()


SPEC = CollectionSpec("test-model", 4, {"title": "keyword", "year": "integer"})


def points() -> list[PointRecord]:
    rows = [("a red circle", "Okafor XJ-9000"), (None, "Sato bracket"), ("a blue star", None), (None, None)]
    return [PointRecord(str(uuid.uuid5(uuid.NAMESPACE_OID, str(i))), {"image": np.full(4, 0.5, dtype=np.float32)},
                        {**({"caption": caption} if caption else {}), "title": title, "year": 2020})
            for i, (caption, title) in enumerate(rows)]


@pytest.mark.parametrize("kind", ["edge", "memory"])
def test_other_fields_redo_every_point_and_text_gone_takes_the_vector(tmp_path, kind):
    store = open_store(kind, "made", tmp_path)
    try:
        create_old_style(store, SPEC)
        store.upsert(points())
        first = backfill_keywords(store, ["title"])
        assert (first.added_vector, first.written, first.without_text) == (True, 3, 1)
        second = backfill_keywords(store, [])  # the caption only
        assert second.redone and (second.written, second.without_text) == (2, 2)
        vectors = keyword_vectors(store)
        assert sum(v is not None for v in vectors.values()) == 2  # "Sato bracket" alone lost its vector
        hits = store.search(SearchRequest(query=Nearest(keyword_query("Sato red", store.metadata()), KEYWORDS)))
        assert [h.payload["caption"] for h in hits] == ["a red circle"]
        assert store.search(SearchRequest(vector=[0.5] * 4, limit=10)).__len__() == 4  # dense vectors kept
    finally:
        store.close()


def test_refusals_name_what_is_wrong(tmp_path):
    with pytest.raises(StoreError, match="collection 'none' does not exist"):
        backfill_keywords(QdrantEdgeStore("none", data_dir=tmp_path))
    store = QdrantEdgeStore("made", data_dir=tmp_path)
    try:
        create_old_style(store, SPEC)
        with pytest.raises(UsageError, match="'year' holds integer values"):
            backfill_keywords(store, ["year"])
        store.update_metadata({"payload_types": None})  # types not recorded: the values themselves are checked
        store.upsert(points())
        with pytest.raises(InputError, match="point .*: text field 'year' holds int value 2020, not text"):
            backfill_keywords(store, ["year"])
    finally:
        store.close()


def test_a_copy_carries_keyword_vectors_and_their_rule_between_stores(tmp_path):
    source, target = open_store("edge", "made", tmp_path), open_store("memory", "copy", tmp_path)
    try:
        create_old_style(source, SPEC)
        source.upsert(points())
        backfill_keywords(source, ["title"])
        copy_collection(source, target, page=2)
        assert target.metadata()[SETTINGS_KEY] == source.metadata()[SETTINGS_KEY]
        compare_store_results([source, target], keyword_vectors)
        hits = [target.search(SearchRequest(query=Nearest(keyword_query(text, target.metadata()), KEYWORDS)))
                for text in ("Okafor", "blue star", "bracket")]
        assert [len(h) for h in hits] == [1, 1, 1]
    finally:
        source.close()
        target.close()
