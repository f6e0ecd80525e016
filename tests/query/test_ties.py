"""Every ranking is a slice of one deterministic order — score descending, then id — also where the cut
falls inside a group of equal scores (milvus-io/milvus#44819, fixed in #44870 by fetching past the tie group).

The oracle is plain Python over a complete answer (every point, no cut); the engines are Qdrant Edge and
qdrant-client's ':memory:' mode, and each also behind ``ShuffledTies``, a store whose engine keeps a random
subset of a tie group at the cut, as a real engine may from one call to the next.
"""
from __future__ import annotations

import random
import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmindex.connectors.base import CollectionSpec, PointRecord, SearchRequest
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.qdrant_server import QdrantServerStore
from mmindex.errors import StoreError, UsageError
from mmindex.connectors.queries import Fusion, Nearest, Prefetch
from mmindex.pipeline.query.search import ranking, search
from helpers.ties import ShuffledTies

DIM = 8
SPEC = CollectionSpec("test-model", DIM, {"year": "integer"})


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def tied_points(n: int, distinct: int, seed: int) -> list[PointRecord]:
    """``n`` points whose image and text vectors come from ``distinct`` vectors each: large tie groups."""
    rng = random.Random(seed)
    return [PointRecord(str(uuid.uuid5(uuid.NAMESPACE_OID, f"{seed}-{i}")),
                        {"image": unit(rng.randrange(distinct)), "text": unit(100 + rng.randrange(distinct))},
                        {"year": 2000 + i % 3, "caption": "No description"}) for i in range(n)]


def oracle(store, vector, target: str, where_year: int | None = None) -> list[str]:
    """Point ids in (score, then id) order from one complete answer of the engine (no cut anywhere)."""
    def complete(using):
        flt = None if where_year is None else {"must": [{"key": "year", "match": {"value": where_year}}]}
        got = store.search(SearchRequest(vector=vector, using=using, filter=flt, limit=100_000, with_payload=False))
        return sorted(got, key=lambda p: (-p.score, p.id))

    if target != "both":
        return [p.id for p in complete(target)]
    return fused(store, vector, 100_000, where_year)


def fused(store, vector, depth: int, where_year: int | None = None) -> list[str]:
    """The engine's whole RRF fusion of the top ``depth`` of each vector, in (score to 6 decimals, then id) order.

    Inside one vector's list the engine ranks equal scores in its own order; the fusion is the engine's."""
    flt = None if where_year is None else {"must": [{"key": "year", "match": {"value": where_year}}]}
    got = store.search(SearchRequest(query=Fusion("rrf"), filter=flt, limit=100_000, with_payload=False, prefetch=[
        Prefetch(Nearest(vector, using), depth, filter=flt) for using in ("image", "text")]))
    return [p.id for p in sorted(got, key=lambda p: (-round(p.score, 6), p.id))]


@pytest.fixture(scope="module", params=["edge", "memory"])
def tied_store(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ties")
    store = (QdrantEdgeStore("ties", data_dir=folder) if request.param == "edge"
             else QdrantServerStore("ties", url=":memory:"))
    store.ensure_collection(SPEC)
    data = tied_points(40, distinct=3, seed=1)
    store.upsert(data)
    store.finish()
    yield store, data
    store.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(page=st.integers(1, 41), target=st.sampled_from(["image", "text", "both"]), query=st.integers(0, 39),
       shuffle_seed=st.integers(0, 10_000), exact=st.booleans(), year=st.sampled_from([None, 2001]))
def test_pages_of_every_size_cover_each_point_once(tied_store, page, target, query, shuffle_seed, exact, year):
    store, data = tied_store
    vector = data[query].vectors["image"]
    expected = oracle(store, vector, target, year)
    for engine in (store, ShuffledTies(store, shuffle_seed)):
        got = []
        for offset in range(0, len(expected), page):
            hits = search(engine, vector, target=target, limit=page, offset=offset, exact=exact,
                          where=None if year is None else f"year = {year}")
            got.extend(hit.id for hit in hits)
        assert got == expected  # each point exactly once, in one order, whatever the engine kept at the cut


@pytest.mark.parametrize("depth", [1, 7, 13, 30])
def test_fusion_depth_cut_inside_a_tie_group_is_still_one_order(tied_store, depth):
    store, data = tied_store
    vector = data[0].vectors["image"]
    answers = {tuple(h.id for h in search(ShuffledTies(store, seed), vector, target="both", limit=depth,
                                          fusion_depth=depth)) for seed in range(8)}
    assert len(answers) == 1
    # the engine's fusion of the top `depth` of each vector, cut at `depth` in (score, id) order
    assert list(answers.pop()) == fused(store, vector, depth)[:depth]


def test_ranking_completes_the_tie_group_past_the_cut(tied_store):
    store, data = tied_store
    vector = data[0].vectors["image"]
    points = ranking(ShuffledTies(store, 3), lambda size: SearchRequest(vector=vector, using="image", limit=size,
                                                                        with_payload=False), 2)
    tied = [p for p in points if p.score == points[1].score]
    everything = store.search(SearchRequest(vector=vector, using="image", limit=1000))
    assert len(tied) == sum(1 for p in everything if p.score == points[1].score) > 2


def test_a_tie_group_past_the_limit_is_refused_not_cut(tied_store):
    store, data = tied_store
    vector = data[0].vectors["image"]
    with pytest.raises(StoreError, match="score exactly .* order cannot be made exact"):
        ranking(store, lambda size: SearchRequest(vector=vector, using="image", limit=size), 1, tie_limit=2)


def test_score_threshold_with_target_both_is_refused(tied_store):
    """One rule in the CLI, the Python API and HTTP: fused scores are ranks, a cosine threshold does not apply."""
    store, data = tied_store
    with pytest.raises(UsageError, match="target both"):
        search(store, data[0].vectors["image"], target="both", score_threshold=0.5)
