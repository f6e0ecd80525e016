"""The same points in every store give the same answers: Qdrant Edge, qdrant-client's ':memory:' and (with
QDRANT_URL) a real server answer each search, count, scroll and retrieve alike — ids, payloads and offsets
exactly, scores and vectors within 1e-5 — for searches on each named vector, with filters, pages and a
score threshold (qdrant-client's congruence tests hold its local mode to a server the same way)."""
from __future__ import annotations

import pytest

from mmindex.connectors.base import SearchRequest
from mmindex.pipeline.query.where import parse_where
from helpers.congruence import SPEC, compare_store_results, points, vector

ROWS = 60
WHERE = [
    None,
    "year >= 2020",
    "color = 'red'",
    "color != 'red' and year < 2022",
    "color in ('green', 'blue') or year = 2016",
    "tags = 'green'",
    "created < '2013-01-01T00:00:00Z'",
    "year not in (2015, 2016, 2017)",
]


def where_filter(where: str | None):
    return parse_where(where, SPEC.payload_types) if where else None


@pytest.fixture
def filled(every_store):
    """The same 60 points (a quarter without a caption vector) and payload indexes in every store."""
    data = points(ROWS)
    for store in every_store:
        store.ensure_collection(SPEC)
        store.create_payload_index("year", "integer")
        store.create_payload_index("color", "keyword")
        store.upsert(data)
        store.finish()
    return every_store


@pytest.mark.parametrize("where", WHERE, ids=lambda w: w or "no filter")
@pytest.mark.parametrize("using", ["image", "text"])
def test_searches_agree(filled, using, where):
    for seed in (5, 77, 2024):
        for shape in ({"limit": 10}, {"limit": 5, "offset": 3}, {"limit": ROWS, "score_threshold": 0.1},
                      {"limit": 10, "exact": True}):
            request = SearchRequest(vector=vector(seed), using=using, filter=where_filter(where), **shape)
            hits = compare_store_results(filled, lambda store: store.search(request))
            assert len(hits) <= shape["limit"]


def test_searches_find_something_to_compare(filled):
    """The comparisons above are not vacuous: the stores return hits, and filters leave some out."""
    every = compare_store_results(filled, lambda store: store.search(SearchRequest(vector=vector(5), limit=ROWS)))
    some = compare_store_results(filled, lambda store: store.search(
        SearchRequest(vector=vector(5), filter=where_filter("color = 'red'"), limit=ROWS)))
    assert len(every) == ROWS and 0 < len(some) < ROWS


@pytest.mark.parametrize("where", WHERE, ids=lambda w: w or "no filter")
def test_counts_agree(filled, where):
    count = compare_store_results(filled, lambda store: store.count(where_filter(where)))
    assert 0 < count <= ROWS


@pytest.mark.parametrize("where", [None, "year >= 2020", "color = 'blue'"], ids=lambda w: w or "no filter")
def test_scroll_pages_agree(filled, where):
    """Every page of a scroll, its next offset and the vectors on it, page by page."""

    def pages(store):
        found, offset = [], None
        while True:
            page, offset = store.scroll(filter=where_filter(where), limit=16, offset=offset, with_vectors=True)
            found.append((page, offset))
            if offset is None:
                return found

    found = compare_store_results(filled, pages)
    assert sum(len(page) for page, _ in found) == compare_store_results(
        filled, lambda store: store.count(where_filter(where)))


def test_retrieve_agrees(filled):
    data = points(ROWS)
    ids = [data[i].id for i in (0, 3, 4, 17, 59)] + ["00000000-0000-0000-0000-000000000000"]
    got = compare_store_results(filled, lambda store: sorted(store.retrieve(ids, with_vectors=True),
                                                             key=lambda point: point.id))
    assert len(got) == 5
