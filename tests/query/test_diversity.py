"""``--diversity``: maximal marginal relevance over an explicit candidate pool, held to a plain-Python MMR
(Carbonell and Goldstein, SIGIR 1998, as Qdrant states it: pick the candidate maximising (1 − λ) · sim(query, p)
− λ · max sim(p, picked), λ the diversity) on Qdrant Edge and ':memory:'; and the behaviour a user wants from it:
near-identical rows no longer fill the first page.
"""
from __future__ import annotations

import uuid

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmindex.connectors.base import CollectionSpec, PointRecord
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.qdrant_server import QdrantServerStore
from mmindex.errors import FilterError, UsageError
from mmindex.pipeline.query.plan import SearchOptions
from mmindex.pipeline.query.search import search

DIM = 8
SPEC = CollectionSpec("test-model", DIM, {"source": "integer", "year": "integer"})
SOURCES, COPIES = 8, 5  # the tiny fixed data set: each source image stored 5 times, slightly jittered


def unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def near_duplicates() -> list[PointRecord]:
    """SOURCES distinct vectors, each COPIES times with a jitter of about 1 % (the same photo under several ids);
    random vectors otherwise, so no two points score exactly alike."""
    rng = np.random.default_rng(7)
    points = []
    for source in range(SOURCES):
        base = rng.normal(size=DIM)
        for copy in range(COPIES):
            vector = unit(base + rng.normal(scale=0.01, size=DIM))
            points.append(PointRecord(str(uuid.uuid5(uuid.NAMESPACE_OID, f"dup-{source}-{copy}")),
                                      {"image": vector, "text": vector},
                                      {"source": source, "year": 2000 + (source * COPIES + copy) % 4}))
    return points


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """The near-duplicate data set in an Edge store and a ':memory:' one."""
    folder = tmp_path_factory.mktemp("diversity")
    opened = [QdrantEdgeStore("dups", data_dir=folder / "edge"), QdrantServerStore("dups", url=":memory:")]
    for store in opened:
        store.ensure_collection(SPEC)
        store.create_payload_index("year", "integer")
        store.upsert(near_duplicates())
        store.finish()
    yield opened
    for store in opened:
        store.close()


def mmr_oracle(query: np.ndarray, diversity: float, pool: int, limit: int, year: int | None) -> list[str]:
    """Plain-Python MMR: the ``pool`` points nearest to ``query`` (among those the filter keeps), then ``limit``
    greedy picks; the first of equal MMR scores in order of relevance."""
    points = [p for p in near_duplicates() if year is None or p.payload["year"] == year]
    vectors = np.array([p.vectors["image"] for p in points], dtype=np.float64)
    relevance = vectors @ np.asarray(query, dtype=np.float64)
    candidates = list(np.argsort(-relevance, kind="stable")[:pool])
    picked: list[int] = []
    while candidates and len(picked) < limit:
        def marginal(i: int) -> float:
            redundancy = max((float(vectors[i] @ vectors[j]) for j in picked), default=0.0)
            return (1 - diversity) * relevance[i] - diversity * redundancy
        best = max(candidates, key=marginal)
        picked.append(best)
        candidates.remove(best)
    return [points[i].id for i in picked]


@settings(max_examples=30, deadline=None)
@given(query=st.integers(0, 10**6), diversity=st.floats(0.0, 1.0), pool=st.integers(1, 40),
       limit=st.integers(1, 12), offset=st.integers(0, 12), year=st.sampled_from([None, 2001]))
def test_diversity_picks_as_the_python_mmr_does(stores, query, diversity, pool, limit, offset, year):
    vector = unit(np.random.default_rng(query).normal(size=DIM))
    options = SearchOptions(diversity=diversity, pool=pool)
    where = None if year is None else f"year = {year}"
    for store in stores:
        if offset + limit > pool:
            with pytest.raises(FilterError, match="chooses among the best"):
                search(store, vector, where=where, limit=limit, offset=offset, options=options)
            continue
        hits = search(store, vector, where=where, limit=limit, offset=offset, options=options)
        assert [hit.id for hit in hits] == mmr_oracle(vector, diversity, pool, offset + limit, year)[offset:]


def distinct_sources(hits) -> int:
    return len({hit.payload["source"] for hit in hits})


@pytest.mark.parametrize("kind", [0, 1], ids=["edge", "memory"])
def test_diversity_puts_more_distinct_sources_in_the_top_10(stores, kind):
    """Plain search fills the top 10 with copies of two photos; MMR shows more photos, keeping the best first."""
    store = stores[kind]
    vector = near_duplicates()[0].vectors["image"]
    plain = search(store, vector, limit=10)
    diverse = search(store, vector, limit=10, options=SearchOptions(diversity=0.5))
    assert distinct_sources(plain) == 2
    assert distinct_sources(diverse) >= 4 > distinct_sources(plain)
    assert diverse[0].id == plain[0].id  # MMR's first pick is the most relevant: R@1 is kept


@pytest.mark.parametrize("kind", [0, 1], ids=["edge", "memory"])
def test_a_pool_no_larger_than_the_page_only_reorders_it(stores, kind):
    """Why the pool is explicit: MMR over the engine's default pool (= the limit) can only reorder the plain
    hits; the default pool here (100 candidates) lets other photos in."""
    store = stores[kind]
    vector = near_duplicates()[0].vectors["image"]
    plain = {hit.id for hit in search(store, vector, limit=10)}
    reordered = search(store, vector, limit=10, options=SearchOptions(diversity=0.5, pool=10))
    assert {hit.id for hit in reordered} == plain and distinct_sources(reordered) == 2


@pytest.mark.parametrize("options, message", [
    (dict(diversity=1.5), "--diversity must be a number from 0 to 1"),
    (dict(diversity=-0.1), "--diversity must be a number from 0 to 1"),
    (dict(diversity=float("nan")), "--diversity must be a number from 0 to 1"),
    (dict(diversity=0.5, pool=0), "--pool must be a whole number of at least 1"),
    (dict(pool=50), "--pool is the candidate pool of --diversity"),
    (dict(diversity=0.5, group_by="source"), "--diversity and --group-by"),
])
def test_bad_diversity_options_are_usage_errors(options, message):
    with pytest.raises(UsageError, match=message):
        SearchOptions(**options)
