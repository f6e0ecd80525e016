"""``--collapse-duplicates``: one hit per near-duplicate group, checked against a plain-Python oracle (the rule applied
to the whole ranking, then paged) over random collections of exact and near copies and similar shots, on Qdrant Edge
and ':memory:' alike; pages 1..n never repeat or skip a hit; signal fields never reach users' payloads; refusals.
"""
from __future__ import annotations

import uuid
from functools import lru_cache
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmindex.connectors.base import CollectionSpec, PointRecord
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.qdrant_server import QdrantServerStore
from mmindex.errors import UsageError
from mmindex.pipeline.duplicates import collapse
from mmindex.pipeline.duplicates.evidence import compare
from mmindex.pipeline.duplicates.signals import SIGNAL_KEYS, signals_from_payload, signals_of
from mmindex.pipeline.ingest.images import decode_image
from mmindex.pipeline.query.hits import hit_from
from mmindex.pipeline.query.plan import SearchOptions
from mmindex.pipeline.query.queries import QueryRequest
from mmindex.pipeline.query.search import search

from helpers.duplicate_data import make_duplicate_set

DIM = 8
SPEC = CollectionSpec("test-model", DIM, {"color": "keyword"})
COLLECTIONS = 3
WHERE = {None: lambda p: True, "color = 'red'": lambda p: p["color"] == "red"}


@lru_cache(maxsize=1)
def labelled():
    """(ids, id → signals payload, the set): 5 originals with their exact, near and similar images."""
    data = make_duplicate_set(originals=5, seed=3)
    ids = sorted(data.images)
    return ids, {i: signals_of(decode_image(data.images[i])).to_payload() for i in ids}, data


@lru_cache(maxsize=None)
def duplicates(a: str, b: str) -> bool:
    """The oracle's pair rule: exact or near by ``compare`` at the default thresholds (no cosine needed)."""
    payloads = labelled()[1]
    tier = compare(signals_from_payload(payloads[a]), signals_from_payload(payloads[b]), None).tier
    return tier in ("exact", "near")


def collection(seed: int) -> list[PointRecord]:
    """15 to 40 images of the labelled set (some twice-drawn copies share their original's vector: ties), random
    vectors, a colour, and signals on most (the rest were stored without them)."""
    rng = np.random.default_rng(seed)
    ids, payloads, data = labelled()
    chosen = sorted(rng.choice(len(ids), size=int(rng.integers(15, 41)), replace=False))
    points, by_group = [], {}
    for index in chosen:
        name = ids[index]
        vector = rng.normal(size=DIM).astype(np.float32)
        if data.group[name] in by_group and rng.random() < 0.3:
            vector = by_group[data.group[name]]  # an equal score: the tie is ordered by id
        by_group.setdefault(data.group[name], vector)
        payload = {"caption": name, "color": ("red", "blue")[int(rng.integers(2))], "_hash": "h"}
        if rng.random() < 0.85:
            payload.update(payloads[name])
        points.append(PointRecord(str(uuid.uuid5(uuid.NAMESPACE_OID, f"collapse-{seed}-{name}")),
                                  {"image": vector / np.linalg.norm(vector)}, payload))
    return points


@pytest.fixture(scope="module")
def stores_of(tmp_path_factory):
    """``stores_of(seed)``: collection ``seed`` in Qdrant Edge and ':memory:', built on first use."""
    built: dict[int, list] = {}
    folder = tmp_path_factory.mktemp("collapse")

    def get(seed: int) -> list:
        if seed not in built:
            stores = [QdrantEdgeStore("same", data_dir=folder / f"edge-{seed}"), QdrantServerStore("same", url=":memory:")]
            for store in stores:
                store.ensure_collection(SPEC)
                store.create_payload_index("color", "keyword")
                store.upsert(collection(seed))
                store.finish()
            built[seed] = stores
        return built[seed]

    yield get
    for stores in built.values():
        for store in stores:
            store.close()


def oracle(store, query, where) -> list[tuple[str, list[str]]]:
    """The rule over the whole ranking, in plain Python: (shown id, ids collapsed into it), every shown hit."""
    ranking = search(store, query, where=where, limit=100)
    payloads = {p.id: p.payload for p in store.retrieve([h.id for h in ranking])}
    shown: list[tuple[str, list[tuple[int, str]]]] = []
    for rank, hit in enumerate(ranking):
        name = payloads[hit.id]
        into = None
        if SIGNAL_KEYS[0] in name:
            into = next((entry for entry in shown if SIGNAL_KEYS[0] in payloads[entry[0]]
                         and duplicates(payloads[entry[0]]["caption"], name["caption"])), None)
        if into is None:
            shown.append((hit.id, []))
            shown[-1][1].append((rank, None))  # its own rank, first
        else:
            into[1].append((rank, hit.id))
    return [(hit_id, [(r, i) for r, i in members]) for hit_id, members in shown]


def oracle_page(full, limit: int, offset: int) -> list[tuple[str, list[str]]]:
    """The oracle's page: shown hits offset..offset+limit, each with the ids collapsed into it ranked above the next
    hit shown after *it* (all of them for the last shown hit), whatever page it falls on."""
    page = []
    for index in range(offset, min(offset + limit, len(full))):
        hit_id, members = full[index]
        before = full[index + 1][1][0][0] if index + 1 < len(full) else None
        page.append((hit_id, [i for r, i in members[1:] if before is None or r < before]))
    return page


def collapsed(store, query, where, limit: int, offset: int) -> list[tuple[str, list[str]]]:
    hits = search(store, query, where=where, limit=limit, offset=offset,
                  options=SearchOptions(collapse_duplicates=True))
    assert all(not set(SIGNAL_KEYS) & set(hit.payload) for hit in hits)
    return [(hit.id, hit.duplicates) for hit in hits]


PAGES = dict(seed=st.integers(0, COLLECTIONS - 1), query_seed=st.integers(0, 10**6),
             where=st.sampled_from(list(WHERE)), limit=st.integers(1, 6), first_scan=st.sampled_from([1, 64]))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**PAGES)
def test_every_page_equals_the_rule_over_the_whole_ranking_on_both_stores(stores_of, seed, query_seed, where, limit,
                                                                        first_scan):
    with patch.object(collapse, "FIRST_SCAN", first_scan):  # 1: the ranking is read deeper, doubling, page by page
        check_pages(stores_of, seed, query_seed, where, limit)


@pytest.mark.slow
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**PAGES)
def test_every_page_equals_the_rule_many_collections(stores_of, seed, query_seed, where, limit, first_scan):
    with patch.object(collapse, "FIRST_SCAN", first_scan):
        check_pages(stores_of, seed, query_seed, where, limit)


def check_pages(stores_of, seed: int, query_seed: int, where, limit: int) -> None:
    """Each page, with ``limit`` hits, equals the oracle's; together they are every shown hit once, in order."""
    query = np.random.default_rng(query_seed).normal(size=DIM)
    query = tuple(float(x) for x in query / np.linalg.norm(query))
    for store in stores_of(seed):
        full = oracle(store, query, where)
        pages, offset = [], 0
        while True:
            page = collapsed(store, query, where, limit, offset)
            assert page == oracle_page(full, limit, offset), (type(store).__name__, offset)
            if not page:
                break
            pages += [hit_id for hit_id, _ in page]
            offset += limit
        assert pages == [hit_id for hit_id, _ in full]  # pages 1..n: every group once, none skipped, in order
        shown_and_hidden = pages + [i for _, members in full for _, i in members[1:]]
        assert sorted(shown_and_hidden) == sorted(h.id for h in search(store, query, where=where, limit=100))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, COLLECTIONS - 1), query_seed=st.integers(0, 10**6), where=st.sampled_from(list(WHERE)))
def test_a_hits_duplicates_are_the_same_however_the_pages_are_cut(stores_of, seed, query_seed, where):
    """A shown hit lists the same ids on pages of 1, 2, 5 or all hits, on both stores (under the old rule, the ids
    ranked above the hit shown after the *page*, a hit early on a long page listed more than on a short one)."""
    query = np.random.default_rng(query_seed).normal(size=DIM)
    query = tuple(float(x) for x in query / np.linalg.norm(query))
    for store in stores_of(seed):
        lists = {}
        for limit in (1, 2, 5, 100):
            offset = 0
            while page := collapsed(store, query, where, limit, offset):
                for hit_id, ids in page:
                    lists.setdefault(hit_id, {})[limit] = ids
                offset += limit
        assert lists and all(len(by_limit) == 4 for by_limit in lists.values())
        varied = {hit_id: by_limit for hit_id, by_limit in lists.items() if len({tuple(v) for v in by_limit.values()}) > 1}
        assert not varied, (type(store).__name__, varied)


@pytest.fixture(scope="module")
def copies():
    """(store, query, copies, others): one photo's exact and near copies all close to the query, then four other
    originals at random; ':memory:'."""
    ids, payloads, data = labelled()
    base = ids[0]
    copied = [i for i in ids if data.group[i] == data.group[base]]
    others = [i for i in ids if data.group[i] == i and i != base][:4]  # the other originals
    store = QdrantServerStore("copies", url=":memory:")
    store.ensure_collection(SPEC)
    rng = np.random.default_rng(0)
    query = rng.normal(size=DIM)
    query /= np.linalg.norm(query)
    points = []
    for rank, name in enumerate(copied + others):
        vector = query + 0.01 * (rank + 1) * rng.normal(size=DIM) if name in copied else rng.normal(size=DIM)
        points.append(PointRecord(str(uuid.uuid5(uuid.NAMESPACE_OID, name)), {"image": vector / np.linalg.norm(vector)},
                                  {"caption": name, "color": "red", **payloads[name]}))
    store.upsert(points)
    yield store, tuple(float(x) for x in query), copied, others
    store.close()


def test_ten_copies_of_one_photo_fill_one_hit_not_the_page(copies):
    """The case users notice: copies of one photo rank together; collapsed, they are one hit listing the others."""
    store, query, copied, others = copies
    plain = search(store, query, limit=5)
    hits = search(store, query, limit=5, options=SearchOptions(collapse_duplicates=True))
    assert {h.caption for h in plain} <= set(copied)  # without collapse the copies fill the page
    assert hits[0].caption == plain[0].caption and len(hits[0].duplicates) == len(copied) - 1
    assert len(hits) == 5 and {h.caption for h in hits[1:]} == set(others)
    assert hits[0].to_dict()["duplicates"] == hits[0].duplicates and "duplicates" not in plain[0].to_dict()


def test_signal_fields_never_reach_a_hits_payload():
    payload = {"caption": "c", "color": "red", "_hash": "h", **labelled()[1][labelled()[0][0]]}
    hit = hit_from("id", 0.5, payload)
    assert hit.payload == {"color": "red"} and hit.duplicates is None


@pytest.mark.parametrize("options", [dict(group_by="color"), dict(diversity=0.3)])
def test_collapse_refuses_options_that_also_leave_hits_out(options):
    with pytest.raises(UsageError, match="--collapse-duplicates and --(group-by|diversity)"):
        SearchOptions(collapse_duplicates=True, **options)
    with pytest.raises(UsageError, match="--collapse-duplicates"):
        QueryRequest(texts=["a"], collapse_duplicates=True, **options)


def test_collapse_with_cutoff_collapses_the_relevant_hits(copies):
    store, query, copied, _ = copies
    plain = search(store, query, limit=50, options=SearchOptions(cutoff="auto"))
    hits = search(store, query, limit=50, options=SearchOptions(cutoff="auto", collapse_duplicates=True))
    assert len(plain) > 1 and {h.caption for h in plain} <= set(copied)
    assert [h.id for h in hits] == [plain[0].id]  # the relevant hits are one photo's copies: one hit
    assert set(hits[0].duplicates) == {h.id for h in plain[1:]}
