"""Every search option gives the same hits on every store: Qdrant Edge, qdrant-client's ':memory:' mode and (with
QDRANT_URL) a real server, over random small collections and random ``SearchOptions`` — mode dense, keyword or
hybrid, fusion rrf or dbsf, examples and negatives with every strategy, excluded ids, diversity with a pool, a
boost formula, groups — with a random target, ``--where`` filter and page: the same ids in the same order,
scores within 1e-4, every page a slice of one ranking, and no hit that the filter excludes, whichever leg
brought it (qdrant-client's congruence tests hold its local mode to a server the same way).

The collections' vectors are random unit vectors and their keyword vectors random sparse weights, so no two
points score exactly alike in one vector's ranking: each engine orders exactly-equal scores inside a fused or
diversified leg in its own way (what reaches ``search`` as a tie of fused scores is ordered by id, see
tests/query/test_ties.py), so ties there would test the engines' internals, not mmindex. Ties that mmindex's own
requests create are tested: fused ranks tie often, so no stage of a request may cut a fusion (MMR and formulas
take every candidate of each leg, plan.py); and DBSF ties between two-candidate legs, a known difference.
"""
from __future__ import annotations

import importlib.util
import os
import uuid
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, note, settings
from hypothesis import strategies as st

from mmindex.connectors.base import CollectionSpec, PointRecord, SearchRequest
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.qdrant_server import QdrantServerStore
from mmindex.connectors.queries import OVERSAMPLING, SparseVector
from mmindex.errors import MmindexError
from mmindex.pipeline.query.filters import combine_filters, compile_filter
from mmindex.pipeline.query.plan import SearchOptions, build_request, vector_legs
from mmindex.pipeline.query.search import search

DIM = 8
VOCAB = 12  # term ids of the keyword vectors: few, so that queries and points share terms
COLLECTIONS = 4  # random collections the fast property draws from (built once per module)
SPEC = CollectionSpec("test-model", DIM, {"color": "keyword", "n": "integer", "tags": "keyword"})
COLORS = ("red", "green", "blue")
SERVER = os.environ.get("QDRANT_URL")
BOOST = {"sum": ["$score", {"mult": [0.1, "n"]}]}  # n is missing on some points: the default 0 scores them
BOOST_READY = all(importlib.util.find_spec(f"mmindex.connectors.{name}") is not None
                  for name in ("edge_formula", "server_formula"))
BOOST_MISSING = ("boost: the formula translations (connectors/edge_formula.py, connectors/server_formula.py) are "
                 "not in this tree yet, so --boost cannot run on either store")

# each --where with the same condition in plain Python, over a hit's payload
WHERE = {
    None: lambda p: True,
    "color = 'red'": lambda p: p["color"] == "red",
    "n >= 3": lambda p: p.get("n") is not None and p["n"] >= 3,
    "tags = 'a'": lambda p: "a" in (p.get("tags") or []),
    "color != 'blue' and n < 5": lambda p: p["color"] != "blue" and p.get("n") is not None and p["n"] < 5,
    "color in ('red', 'green') or tags = 'b'": lambda p: p["color"] in ("red", "green") or "b" in (p.get("tags") or []),
}


def unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def sparse(rng: np.random.Generator, most: int) -> SparseVector | None:
    """A random keyword vector of 1 to ``most`` terms (None for 0: a point without words)."""
    terms = int(rng.integers(0, most + 1))
    if not terms:
        return None
    indices = sorted(int(i) for i in rng.choice(VOCAB, size=terms, replace=False))
    return SparseVector(tuple(indices), tuple(float(v) for v in rng.uniform(0.2, 3.0, size=terms)))


def collection(seed: int) -> list[PointRecord]:
    """A random collection of 6 to 45 points: image vectors always, text and keyword vectors on most, colour always,
    the integer ``n`` and the list ``tags`` on some."""
    rng = np.random.default_rng(seed)
    points = []
    for i in range(int(rng.integers(6, 46))):
        vectors: dict[str, Any] = {"image": unit(rng)}
        if rng.random() < 0.8:
            vectors["text"] = unit(rng)
        words = sparse(rng, 4)
        if words is not None:
            vectors["keywords"] = words
        payload: dict[str, Any] = {"color": COLORS[int(rng.integers(3))], "caption": f"row {i}"}
        if rng.random() < 0.8:
            payload["n"] = int(rng.integers(0, 8))
        if rng.random() < 0.7:
            payload["tags"] = sorted({("a", "b", "c")[int(k)] for k in rng.integers(0, 3, size=int(rng.integers(0, 3)))})
        points.append(PointRecord(str(uuid.uuid5(uuid.NAMESPACE_OID, f"congruence-{seed}-{i}")), vectors, payload))
    return points


def open_stores(seed: int, folder) -> list:
    """The same collection in every store kind available: Edge, ':memory:', and the server when QDRANT_URL is set."""
    stores = [QdrantEdgeStore("same", data_dir=folder / f"edge-{seed}"), QdrantServerStore("same", url=":memory:")]
    if SERVER:
        stores.append(QdrantServerStore(f"mmindex-test-search-{seed}-{uuid.uuid4().hex[:8]}", url=SERVER,
                                        api_key=os.environ.get("QDRANT_API_KEY")))
    data = collection(seed)
    for store in stores:
        store.ensure_collection(SPEC)
        for key, kind in (("color", "keyword"), ("n", "integer"), ("tags", "keyword")):
            store.create_payload_index(key, kind)
        store.upsert(data)
        store.finish()
    return stores


@pytest.fixture(scope="module")
def stores_of(tmp_path_factory):
    """``stores_of(seed)``: the stores holding collection ``seed``, built on first use and kept for the module."""
    built: dict[int, tuple[list, list[PointRecord]]] = {}
    folder = tmp_path_factory.mktemp("congruence")

    def get(seed: int):
        if seed not in built:
            built[seed] = (open_stores(seed, folder), collection(seed))
        return built[seed]

    yield get
    for stores, _ in built.values():
        for store in stores:
            if isinstance(store, QdrantServerStore) and not store.local and store.exists():
                store.client.delete_collection(store.collection)
            store.close()


@dataclass(frozen=True)
class Case:
    """One search: the collection, the query and its options, the filter and the page."""

    seed: int
    vector: tuple[float, ...] | None
    target: str
    where: str | None
    limit: int
    offset: int
    options: SearchOptions
    score_threshold: float | None = None


def example(seed: int) -> tuple[float, ...]:
    return tuple(float(x) for x in unit(np.random.default_rng(seed)))


def ranking_options(draw, boost: bool) -> dict[str, Any]:
    """What reorders the hits: nothing, diversity (MMR over a pool), a boost formula, or groups."""
    ranking = draw(st.sampled_from(["plain", "diversity", "boost" if boost else "plain", "groups"]))
    if ranking == "diversity":
        return dict(diversity=draw(st.sampled_from([0.0, 0.3, 0.5, 0.8, 1.0])),
                    pool=draw(st.one_of(st.none(), st.integers(1, 60))))
    if ranking == "boost":
        return dict(boost=BOOST, boost_defaults={"n": 0})
    if ranking == "groups":
        return dict(group_by=draw(st.sampled_from(["color", "n", "tags"])), group_size=draw(st.integers(1, 3)))
    return {}


@st.composite
def cases(draw, collections: int = COLLECTIONS, boost: bool = BOOST_READY) -> Case:
    seed = draw(st.integers(0, collections - 1))
    ids = [p.id for p in collection(seed)]
    mode = draw(st.sampled_from(["dense", "keyword", "hybrid"]))
    target = draw(st.sampled_from(["image", "text", "both"]))
    # distinct seeds: a query equal to one of its own negatives would score every point alike (a tie of all)
    seeds = draw(st.lists(st.integers(0, 10**6), min_size=5, max_size=5, unique=True))
    examples = mode != "keyword"  # keyword mode ranks words only: examples are refused there (plan.check_options)
    positives = tuple(example(s) for s in seeds[1:1 + draw(st.integers(0, 2 if examples else 0))])
    negatives = tuple(example(s) for s in seeds[3:3 + draw(st.integers(0, 2 if examples else 0))])
    vector = None if positives and draw(st.booleans()) else example(seeds[0])
    excluded = draw(st.lists(st.sampled_from(ids), max_size=3, unique=True))
    words = None
    if mode != "dense":
        words = sparse(np.random.default_rng(draw(st.integers(0, 10**6))), 4) or SparseVector((0,), (1.0,))
    extra = ranking_options(draw, boost)
    options = SearchOptions(
        mode=mode, fusion=draw(st.sampled_from(["rrf", "dbsf"])) if mode != "keyword" else None, keywords=words,
        positives=positives,
        negatives=negatives, exclude_ids=tuple(excluded),
        strategy=draw(st.sampled_from(["average_vector", "best_score", "sum_scores"])), **extra)
    threshold = None
    if mode == "dense" and not extra and target != "both" and (options.strategy == "average_vector"
                                                                or not (positives or negatives)):
        threshold = draw(st.one_of(st.none(), st.floats(-0.5, 0.5)))
    offset = draw(st.integers(0, 3 if options.group_by else 15))
    return Case(seed, vector, target, draw(st.sampled_from(list(WHERE))), draw(st.integers(1, 12)), offset, options,
                threshold)


def answer(store, case: Case, **change) -> Any:
    """``search``'s hits as comparable values (id, group, score, caption, payload), or the error it raised."""
    case = replace(case, **change)
    try:
        hits = search(store, case.vector, target=case.target, where=case.where, limit=case.limit,
                      offset=case.offset, score_threshold=case.score_threshold, options=case.options)
    except MmindexError as error:
        return f"{type(error).__name__}: {error}"
    return [(hit.id, hit.group, hit.score, hit.caption, hit.payload) for hit in hits]


def assert_same(answers: list, tolerance: float = 1e-4) -> None:
    first = answers[0]
    for other in answers[1:]:
        if isinstance(first, str) or isinstance(other, str):
            assert first == other
            continue
        assert [(h[0], h[1]) for h in other] == [(h[0], h[1]) for h in first]
        assert [(h[3], h[4]) for h in other] == [(h[3], h[4]) for h in first]
        assert all(abs(a[2] - b[2]) <= tolerance for a, b in zip(first, other)), \
            [(a[2], b[2]) for a, b in zip(first, other)]


def check_case(stores: list, case: Case) -> Any:
    """The same page on every store; a slice of the same ranking from rank 1; no hit the filter excludes.
    Returns the first store's page (hits, or the error every store raised)."""
    pages = [answer(store, case) for store in stores]
    assert_same(pages)
    if isinstance(pages[0], str):
        return pages[0]
    heads = [answer(store, case, offset=0, limit=case.offset + case.limit) for store in stores]
    assert_same(heads)
    assert not isinstance(heads[0], str), heads[0]
    if case.options.group_by:
        groups = list(dict.fromkeys(h[1] for h in heads[0]))[case.offset:]
        assert [h for h in heads[0] if h[1] in groups] == pages[0]
    else:
        assert heads[0][case.offset:] == pages[0]
    excluded = set(case.options.exclude_ids)
    assert all(WHERE[case.where](h[4]) and h[0] not in excluded for h in heads[0])
    return pages[0]


@settings(max_examples=25, deadline=None)
@given(case=cases())
def test_every_option_gives_the_same_hits_on_every_store(stores_of, case):
    note(repr(case))
    stores, _ = stores_of(case.seed)
    check_case(stores, case)


@pytest.mark.slow
@settings(max_examples=600, deadline=None)
@given(case=cases(collections=25))
def test_every_option_gives_the_same_hits_on_every_store_at_length(stores_of, case):
    note(repr(case))
    stores, _ = stores_of(case.seed)
    check_case(stores, case)


def test_boost_gives_the_same_hits_on_every_store(stores_of):
    if not BOOST_READY:
        pytest.skip(BOOST_MISSING)
    stores, data = stores_of(0)
    for target in ("image", "both"):
        case = Case(0, tuple(float(x) for x in data[0].vectors["image"]), target, "color != 'blue' and n < 5", 5,
                    2, SearchOptions(boost=BOOST, boost_defaults={"n": 0}))
        hits = check_case(stores, case)
        assert isinstance(hits, list) and len(hits) == 5, hits


def leg_candidates(store, legs: list, where: str | None, excluded: set[str], depth: int) -> set[str]:
    """The oracle: each leg's complete ranking from the engine, unfiltered, filtered here in Python (the --where
    condition and the excluded ids), its best ``depth`` kept; the union over the legs."""
    kept: set[str] = set()
    for leg in legs:
        ranked = store.search(SearchRequest(query=leg, limit=10_000, with_payload=True))
        allowed = [p.id for p in ranked if WHERE[where](p.payload) and p.id not in excluded]
        kept.update(allowed[:depth])
    return kept


@settings(max_examples=25, deadline=None)
@given(case=cases(), depth=st.integers(1, 8))
def test_every_leg_takes_its_candidates_from_the_filtered_points(stores_of, case, depth):
    check_legs(stores_of, case, depth)


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(case=cases(collections=25), depth=st.integers(1, 30))
def test_every_leg_takes_its_candidates_from_the_filtered_points_at_length(stores_of, case, depth):
    check_legs(stores_of, case, depth)


def check_legs(stores_of, case: Case, depth: int) -> None:
    """A filter that applied only to the fused result, not to each leg, would let excluded points take places in
    a leg's best ``depth`` and push allowed ones out: then the fused, rescored or diversified result holds fewer
    points than the legs' filtered candidates (the leak Immich and others had on one leg of hybrid search).

    Fusion and a formula return the union of the legs' candidates."""
    note(repr(case))
    # --diversity picks in mmindex among each leg's filtered candidates: tests/query/test_diversity.py holds it to a
    # filtered plain-Python MMR
    assume(case.options.diversity is None)
    options = replace(case.options, group_by=None, group_size=1)
    legs = vector_legs(case.vector, case.target, options)
    query_filter = compile_filter(case.where, None, field_types=SPEC.payload_types, origin="filter")
    if options.exclude_ids:
        query_filter = combine_filters(query_filter, {"must_not": [{"has_id": list(options.exclude_ids)}]})
    params = dict(score_threshold=None, exact=False, hnsw_ef=None, oversampling=OVERSAMPLING)
    request = build_request(case.vector, case.target, options, query_filter, 10_000, depth, params)
    assume(len(legs) > 1 or options.boost is not None)
    stores, _ = stores_of(case.seed)
    for store in stores:
        found = {p.id for p in store.search(request)}
        assert found == leg_candidates(store, legs, case.where, set(options.exclude_ids), depth)


@pytest.mark.parametrize("reorder", [dict(diversity=0.0, pool=4), dict(boost=BOOST, boost_defaults={"n": 0})],
                         ids=["diversity", "boost"])
def test_reordering_fused_legs_gives_one_answer_from_call_to_call(stores_of, reorder):
    """Hybrid search with diversity or a boost once fused its legs and cut the fusion at the pool (or the fusion
    depth): here the cut falls in a group of equal fused scores, of which Qdrant Edge kept one point or another
    from call to call. MMR and the formula now take every candidate of each leg's best ``pool`` (or depth)."""
    if "boost" in reorder and not BOOST_READY:
        pytest.skip(BOOST_MISSING)
    stores, _ = stores_of(0)
    words = SparseVector((0, 8, 9), (1.0002438642467963, 0.351005966668638, 1.273432866199451))
    options = SearchOptions(mode="hybrid", keywords=words, **reorder)
    answers = {tuple(hit.id for hit in search(store, example(0), target="text", limit=4, fusion_depth=4,
                                              options=options)) for store in stores for _ in range(20)}
    assert len(answers) == 1 and len(answers.pop()) == 4


def test_dbsf_ties_between_two_candidate_legs_are_ordered_alike(stores_of):
    stores, _ = stores_of(0)
    for query in range(12):
        answers = [[hit.id for hit in search(store, example(query), target="both", limit=2, fusion_depth=2,
                                             options=SearchOptions(fusion="dbsf"))] for store in stores]
        assert answers[0] == answers[1], f"query {query}"
