"""The keyword vector (pipeline/query/keywords.py): qdrant-edge's BM25 document weights against the formula, the
engines' keyword ranking against a plain-Python BM25 with Qdrant's IDF on both stores, the tokenizer's cases, the
text of a point (caption, list and nested fields, non-text refused) and the query's errors."""
from __future__ import annotations

import itertools
import re
import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.congruence import compare_store_results
from helpers.keyword_data import oracle_scores, oracle_weights, token_ids
from mmindex.connectors.base import CollectionSpec, PointRecord, SearchRequest
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.qdrant_server import QdrantServerStore
from mmindex.connectors.queries import KEYWORDS, Nearest, SparseVector
from mmindex.errors import CollectionMismatchError, InputError, UsageError
from mmindex.pipeline.query.keywords import (
    BACKFILL_KEY,
    DEFAULT_AVG_LEN,
    SETTINGS_KEY,
    KeywordSettings,
    ingest_record,
    keyword_document,
    keyword_query,
    keyword_text,
    new_settings,
    text_field_keys,
    with_keyword_vectors,
)

RULE = KeywordSettings()
# One token each, all distinct (checked below); "the", "of", "a", "and" are stopwords, "XJ"/"9000" a part number.
VOCABULARY = ["red", "blue", "green", "circle", "square", "star", "part", "xj", "9000", "okafor", "knurled",
              "the", "of", "a", "and"]
STOPWORDS = {"the", "of", "a", "and"}
SPEC = CollectionSpec("test-model", 4, {"title": "keyword", "tags": "keyword", "year": "integer"})
META = {"sparse_vectors": [KEYWORDS], SETTINGS_KEY: RULE.to_record()}
counter = itertools.count()
shared = {}  # one ':memory:' instance for the module's collections (a new one per example is slow)


def point_id(index: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, str(index)))


def words_to_points(documents: list[list[str]]) -> list[PointRecord]:
    points = []
    for index, words in enumerate(documents):
        vectors = {"image": np.full(4, 0.5, dtype=np.float32)}
        vector = keyword_document(" ".join(words), {}, (), RULE)
        if vector is not None:
            vectors[KEYWORDS] = vector
        points.append(PointRecord(point_id(index), vectors, {"caption": " ".join(words), "n": index}))
    return points


def both_stores(folder, points):
    """The same points in a fresh Edge collection and a fresh ':memory:' one."""
    name = f"k{next(counter)}"
    memory = QdrantServerStore(name, url=":memory:", client=shared.get("client"))
    shared["client"] = memory.client
    stores = [QdrantEdgeStore(name, data_dir=folder), memory]
    for store in stores:
        store.ensure_collection(SPEC)
        store.upsert(points)
    return stores


def test_the_vocabulary_is_one_token_a_word():
    ids = token_ids(RULE, [w for w in VOCABULARY if w not in STOPWORDS])
    assert len(ids) == len(set(ids)) == len(VOCABULARY) - len(STOPWORDS)
    assert token_ids(RULE, sorted(STOPWORDS)) == []


@given(st.lists(st.sampled_from(VOCABULARY), max_size=30))
def test_document_weights_are_bm25(words):
    """qdrant-edge's embed_document, probed: tf·(k+1)/(tf + k·(1 − b + b·|d|/avg_len)), |d| counted after stopwords."""
    vector = keyword_document(" ".join(words), {}, (), RULE)
    expected = oracle_weights(token_ids(RULE, words), RULE)
    if not expected:
        assert vector is None  # no token: no vector (not even an empty one)
        return
    assert dict(zip(vector.indices, vector.values)) == pytest.approx(expected, rel=1e-6)


DOCUMENTS = st.lists(st.lists(st.sampled_from(VOCABULARY), max_size=8), min_size=1, max_size=12)
QUERIES = st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=4)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(documents=DOCUMENTS, query=QUERIES)
def test_keyword_ranking_equals_a_plain_bm25_on_both_stores(tmp_path, documents, query):
    check_against_oracle(tmp_path, documents, query)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(documents=DOCUMENTS, query=QUERIES)
def test_keyword_ranking_equals_a_plain_bm25_on_both_stores_many_cases(tmp_path, documents, query):
    check_against_oracle(tmp_path, documents, query)


def check_against_oracle(folder, documents: list[list[str]], query: list[str]) -> None:
    """Both engines return exactly the points sharing a query token, each scored as the oracle scores it (Qdrant's
    IDF over the points with a keyword vector × the BM25 weight), best first."""
    if not set(query) - STOPWORDS:
        with pytest.raises(UsageError, match="no word keyword search can use"):
            keyword_query(" ".join(query), META, "k")
        return
    stores = both_stores(folder, words_to_points(documents))
    expected = oracle_scores({point_id(i): token_ids(RULE, words) for i, words in enumerate(documents)},
                             token_ids(RULE, query), RULE)
    request = SearchRequest(query=Nearest(keyword_query(" ".join(query), META, "k"), KEYWORDS),
                            limit=len(documents), with_payload=False)
    try:
        for store in stores:
            hits = store.search(request)
            assert {hit.id for hit in hits} == set(expected), type(store).__name__
            for hit in hits:
                assert hit.score == pytest.approx(expected[hit.id], rel=1e-4, abs=1e-6), type(store).__name__
            scores = [hit.score for hit in hits]
            assert scores == sorted(scores, reverse=True)
    finally:
        release(stores)


def release(stores) -> None:
    """Close the Edge store; drop the ':memory:' collection (closing would close the shared instance)."""
    stores[0].close()
    stores[1].client.delete_collection(stores[1].collection)


def test_edge_and_server_agree_on_keyword_search(tmp_path):
    documents = [["red", "circle", "part", "xj", "9000"], ["red", "circle"], ["blue", "square", "square"],
                 ["the", "of"], ["green", "star", "okafor", "knurled"], ["red", "red", "red", "star"],
                 ["circle", "part", "9000"], []]
    stores = both_stores(tmp_path, words_to_points(documents))
    try:
        for text in ("red circle", "XJ-9000", "knurled Okafor's star", "square", "circles of the part"):
            vector = keyword_query(text, META, "k")
            compare_store_results(stores, lambda s: s.search(SearchRequest(query=Nearest(vector, KEYWORDS), limit=5)))
            compare_store_results(stores, lambda s: s.search(SearchRequest(
                query=Nearest(vector, KEYWORDS), limit=2, offset=1,
                filter={"must": [{"key": "n", "range": {"gte": 1}}]})))
    finally:
        release(stores)


@pytest.mark.parametrize("document, query", [
    ("Café Zürich", "cafe zurich"),  # lowercase and ASCII folding
    ("running foxes", "the fox runs"),  # Snowball stems; stopwords dropped
    ("part XJ-9000", "xj 9000"),  # punctuation splits a part number into its tokens
    ("XJ9000", "xj9000"),
])
def test_the_tokenizer_matches_what_people_type(document, query):
    stored = keyword_document(document, {}, (), RULE)
    asked = keyword_query(query, META, "k")
    assert set(asked.indices) <= set(stored.indices)


def test_a_points_text_joins_the_caption_and_its_fields_at_any_depth():
    payload = {"title": "Okafor bracket", "tags": ["knurled", None, "steel"], "meta": {"maker": ["Sato", "Novak"]},
               "items": [{"name": "bolt"}, {"name": "nut"}], "empty": None}
    keys = ("title", "tags", "meta.maker", "items[].name", "empty")
    joined = "a red circle Okafor bracket knurled steel Sato Novak bolt nut"
    assert keyword_text("a red circle", payload, keys) == joined
    assert keyword_text(None, {}, ("title",)) == ""
    assert keyword_document(None, {}, ("title",), RULE) is None
    assert keyword_document("the of and", {}, (), RULE) is None


@pytest.mark.parametrize("value", [2020, 1.5, True, {"a": "b"}])
def test_a_number_or_boolean_in_a_text_field_is_refused_naming_it(value):
    with pytest.raises(InputError, match="field 'sku' holds .* not text"):
        keyword_text("a red circle", {"sku": value}, ("sku",), ("sku",))


def test_text_fields_are_checked_against_the_recorded_types():
    types = {"title": "keyword", "year": "integer", "meta": "struct<t: string>", '"meta".t': "keyword",
             "when": "datetime"}
    assert text_field_keys(["title", "meta.t"], types) == ("title", "meta.t")
    with pytest.raises(UsageError, match="'year' holds integer values, not text"):
        text_field_keys(["year"], types)
    with pytest.raises(UsageError, match="'when' holds datetime"):
        text_field_keys(["when"], types)
    with pytest.raises(UsageError, match="unknown field nope"):
        text_field_keys(["nope"], types)
    with pytest.raises(UsageError, match="caption is always"):
        text_field_keys(["caption"], types)
    with pytest.raises(UsageError, match="--text-fields"):
        text_field_keys(["meta"], types)  # a struct as a whole


def test_points_get_keyword_vectors_only_with_text():
    settings = new_settings(["title"], {"title": "keyword"})
    points = [PointRecord("a", {}, {"caption": "a red circle"}), PointRecord("b", {}, {"title": "XJ-9000"}),
              PointRecord("c", {}, {"caption": "the"})]
    with_keyword_vectors(points, settings)
    assert isinstance(points[0].vectors[KEYWORDS], SparseVector) and KEYWORDS in points[1].vectors
    assert KEYWORDS not in points[2].vectors
    assert with_keyword_vectors(points[:1], None) == points[:1]  # a collection made before keyword search


def test_the_record_keeps_the_rule_and_reads_back():
    settings = new_settings(["title", "tags"], {"title": "keyword", "tags": "keyword"})
    record = settings.to_record()
    assert record["avg_len"] == DEFAULT_AVG_LEN and record["fields"] == ["title", "tags"]
    assert record["engine"].startswith("qdrant-edge ") and len(record["fingerprint"]) == 16
    assert KeywordSettings.from_record(record).same_rule(settings)
    assert not KeywordSettings.from_record({**record, "avg_len": 20.0}).same_rule(settings)


def test_ingest_records_the_rule_once_and_refuses_other_fields():
    types = {"title": "keyword", "tags": "keyword"}
    first = ingest_record(None, types, ["title"], "c")
    assert first["fields"] == ["title"]
    meta = {"sparse_vectors": [KEYWORDS], SETTINGS_KEY: first}
    assert ingest_record(meta, types, None, "c") is None  # not given: the recorded fields
    assert ingest_record(meta, types, ["title"], "c") is None
    with pytest.raises(CollectionMismatchError, match=r"--text-fields title; this run names --text-fields tags.*"
                                                      r"mmindex keywords -c c --text-fields tags"):
        ingest_record(meta, types, ["tags"], "c")
    old = {"model": "m"}  # made before keyword search
    assert ingest_record(old, types, None, "c") is None
    with pytest.raises(UsageError, match="made before keyword search.*mmindex keywords -c c --text-fields title"):
        ingest_record(old, types, ["title"], "c")


@pytest.mark.parametrize("meta, message", [
    ({"model": "m"}, "has no keyword vectors.*mmindex keywords -c photos"),
    ({"sparse_vectors": [KEYWORDS]}, "has no keyword vectors"),
    ({**META, BACKFILL_KEY: {"next": "x", "done": 1200}}, "being made \\(1,200 points so far\\).*mmindex keywords"),
    ({**META, SETTINGS_KEY: {**RULE.to_record(), "fingerprint": "0" * 16}}, "another BM25 tokenizer"),
])
def test_a_keyword_query_on_a_collection_without_vectors_says_what_to_run(meta, message):
    with pytest.raises(UsageError, match=message):
        keyword_query("red circle", meta, "photos")


@pytest.mark.parametrize("text", ["the of and", "?!", ""])
def test_a_query_with_no_indexable_word_is_refused_naming_it(text):
    with pytest.raises(UsageError, match=re.escape(f"the query {text!r} has no word")):
        keyword_query(text, META, "photos")
