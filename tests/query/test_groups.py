"""``--group-by``: at most ``group_size`` hits per value of a field, pages of groups exact — held to a plain-Python
oracle that groups the engine's complete ranking (every point, no cut), on Qdrant Edge and ':memory:'.

The data makes the scan work: group values drawn with skewed frequencies (a rare value's first hit sits deep in
the ranking, past the first scan of 64), list-valued fields (a point is in the group of each value it holds),
nulls inside lists, and points without the field (in no group, as Qdrant's group API has it).
"""
from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from mmindex.connectors.base import CollectionSpec, PointRecord, SearchRequest
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.qdrant_server import QdrantServerStore
from mmindex.connectors.queries import SparseVector
from mmindex.errors import StoreError, UsageError
from mmindex.pipeline.query.groups import grouped
from mmindex.pipeline.query.plan import SearchOptions
from mmindex.pipeline.query.search import search

DIM = 8
SPEC = CollectionSpec("test-model", DIM, {"album": "keyword", "n": "integer", "tags": "keyword", "flag": "bool",
                                          "weight": "float", "taken": "datetime"})
GROUPABLE = ("album", "n", "tags", "flag", "caption")
ALBUMS = [f"album-{k}" for k in range(12)]
ALBUM_WEIGHTS = np.array([1.0 / (k + 1) ** 2 for k in range(12)])  # Zipf-like: album-11 is 1 point in ~150


def unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def collection(seed: int) -> list[PointRecord]:
    """40 to 160 points with grouping fields in every shape: a skewed keyword, an integer, a list of keywords
    (duplicates and nulls inside), a bool, each missing on some points; a caption on most."""
    rng = np.random.default_rng(seed)
    points = []
    for i in range(int(rng.integers(40, 161))):
        payload: dict[str, Any] = {"weight": float(rng.random())}
        if rng.random() < 0.85:
            payload["album"] = ALBUMS[int(rng.choice(12, p=ALBUM_WEIGHTS / ALBUM_WEIGHTS.sum()))]
        if rng.random() < 0.7:
            payload["n"] = int(rng.integers(0, 6))
        if rng.random() < 0.7:
            payload["tags"] = [[None, "a", "b", "c", "d"][int(k)] for k in rng.integers(0, 5, size=int(rng.integers(0, 4)))]
        if rng.random() < 0.6:
            payload["flag"] = bool(rng.random() < 0.3)
        if rng.random() < 0.8:
            payload["caption"] = f"caption {int(rng.integers(0, 20))}"
        vectors = {"image": unit(rng), "text": unit(rng),
                   "keywords": SparseVector((int(rng.integers(0, 6)),), (float(rng.uniform(0.5, 2)),))}
        points.append(PointRecord(str(uuid.uuid5(uuid.NAMESPACE_OID, f"groups-{seed}-{i}")), vectors, payload))
    return points


@pytest.fixture(scope="module")
def stores_of(tmp_path_factory):
    """``stores_of(seed)``: collection ``seed`` in an Edge store and a ':memory:' one, built once per module."""
    built: dict[int, list] = {}
    folder = tmp_path_factory.mktemp("groups")

    def get(seed: int) -> list:
        if seed not in built:
            built[seed] = [QdrantEdgeStore("groups", data_dir=folder / f"edge-{seed}"),
                           QdrantServerStore("groups", url=":memory:")]
            for store in built[seed]:
                store.ensure_collection(SPEC)
                store.upsert(collection(seed))
                store.finish()
        return built[seed]

    yield get
    for stores in built.values():
        for store in stores:
            store.close()


def oracle_groups(hits: list, key: str, group_size: int) -> list[tuple[Any, list[str]]]:
    """Group a complete ranking in plain Python: each value a hit's field holds (each distinct non-null element
    of a list) opens its group at its first hit; a group keeps its best ``group_size`` hits."""
    groups: dict[tuple[str, Any], tuple[Any, list[str]]] = {}
    for hit in hits:
        value = hit.caption if key == "caption" else hit.payload.get(key)
        values = value if isinstance(value, list) else [value]
        for item in values:
            if item is None:
                continue
            value_of, members = groups.setdefault((type(item).__name__, item), (item, []))
            if hit.id not in members and len(members) < group_size:
                members.append(hit.id)
    return list(groups.values())


def check_pages(store, seed: int, key: str, group_size: int, limit: int, target: str, mode: str,
                every_page: bool = True) -> None:
    """The pages of groups (every page, or the first, the last and the one past the end) equal the oracle's."""
    data = collection(seed)
    vector = unit(np.random.default_rng(10_000 + seed))
    options = dict(mode=mode, keywords=SparseVector((0, 1, 2), (1.0, 1.0, 1.0)) if mode != "dense" else None)
    # one ranking for both: every leg brings all its points (a fused ranking is the union of its legs' candidates)
    everything = search(store, vector, target=target, limit=len(data), fusion_depth=len(data),
                        options=SearchOptions(**options))
    expected = oracle_groups(everything, key, group_size)
    offsets = list(range(0, len(expected) + limit, limit))  # every page, and one past the end (empty)
    for offset in offsets if every_page else sorted({offsets[0], *offsets[-2:]}):
        hits = search(store, vector, target=target, limit=limit, offset=offset, fusion_depth=len(data),
                      options=SearchOptions(group_by=key, group_size=group_size, **options))
        page = expected[offset:offset + limit]
        got = [(hit.group, hit.id) for hit in hits]
        assert got == [(value, member) for value, members in page for member in members]
        # never a short page while more groups exist; no group over its size
        assert len(dict.fromkeys((type(g).__name__, g) for g, _ in got)) == min(limit, max(0, len(expected) - offset))
        assert all(sum(1 for g, _ in got if g == value and type(g) is type(value)) <= group_size
                   for value, _ in got)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2), key=st.sampled_from(GROUPABLE), group_size=st.integers(1, 4),
       limit=st.integers(1, 7), target=st.sampled_from(["image", "text", "both"]),
       mode=st.sampled_from(["dense", "keyword", "hybrid"]))
def test_pages_of_groups_match_the_python_oracle(stores_of, seed, key, group_size, limit, target, mode):
    for store in stores_of(seed):
        note(f"{type(store).__name__}")
        check_pages(store, seed, key, group_size, limit, target, mode, every_page=False)


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 9), key=st.sampled_from(GROUPABLE), group_size=st.integers(1, 12),
       limit=st.integers(1, 15), target=st.sampled_from(["image", "text", "both"]),
       mode=st.sampled_from(["dense", "keyword", "hybrid"]))
def test_pages_of_groups_match_the_python_oracle_at_length(stores_of, seed, key, group_size, limit, target, mode):
    for store in stores_of(seed):
        check_pages(store, seed, key, group_size, limit, target, mode)


@pytest.mark.parametrize("kind", [0, 1], ids=["edge", "memory"])
def test_a_rare_group_deep_in_the_ranking_fills_the_page(stores_of, kind):
    """The rarest albums' first hits lie past the first scan (64 hits): the page still holds every group."""
    store = stores_of(0)[kind]
    data = collection(0)
    vector = unit(np.random.default_rng(10_000))
    albums = {p.payload["album"] for p in data if "album" in p.payload}
    ranked = [h.payload.get("album") for h in search(store, vector, limit=len(data))]
    deepest = max(ranked.index(album) for album in albums)
    hits = search(store, vector, limit=len(albums), options=SearchOptions(group_by="album", group_size=3))
    assert deepest >= 64 and {hit.group for hit in hits} == albums


@pytest.mark.parametrize("kind", [0, 1], ids=["edge", "memory"])
def test_a_page_that_the_scan_limit_cannot_fill_is_refused_not_short(stores_of, kind):
    store = stores_of(0)[kind]
    vector = unit(np.random.default_rng(10_000))

    def request(size, with_payload=False):
        return SearchRequest(vector=vector, using="image", limit=size, with_payload=with_payload)

    with pytest.raises(StoreError, match="do not fill a page of groups"):
        grouped(store, request, "album", 3, 12, 0, SPEC.payload_types, scan_limit=64)


@pytest.mark.parametrize("field, message", [
    ("colour", "no field 'colour' in collection 'groups' \\(fields you can group by: album, caption, flag, n, tags"),
    ("weight", "field 'weight' holds float values, which do not form groups"),
    ("taken", "field 'taken' holds datetime values"),
])
def test_a_field_that_cannot_group_is_a_usage_error(stores_of, field, message):
    for store in stores_of(0):
        with pytest.raises(UsageError, match=message):
            search(store, unit(np.random.default_rng(1)), options=SearchOptions(group_by=field))


def test_group_size_needs_a_field_and_a_whole_number():
    with pytest.raises(UsageError, match="--group-size needs --group-by"):
        SearchOptions(group_size=2)
    for size in (0, -1, 1.5, True):
        with pytest.raises(UsageError, match="--group-size must be a whole number"):
            SearchOptions(group_by="album", group_size=size)


def test_a_nested_field_is_refused_as_nested_not_as_missing():
    from mmindex.pipeline.query.groups import check_group_field

    types = {"meta": "struct<kind: string, n: int64>", '"meta".kind': "keyword", '"meta".n': "integer",
             "album": "keyword"}
    with pytest.raises(UsageError, match="takes a top-level field; 'meta.kind' lies below 'meta'.*mmindex facets"):
        check_group_field("meta.kind", types, "nest")
    with pytest.raises(UsageError, match="no field 'nosuch'"):
        check_group_field("nosuch", types, "nest")
