"""Duplicate groups in a whole collection (pipeline/duplicates/find.py): ``group_pairs`` against a plain-Python
keeper-centred grouping oracle, and ``find_duplicates`` on both stores (Qdrant Edge and the server store on
``:memory:``) over the labelled duplicates set: the same groups on both, equal to the labels' groups, under a
filter, with exact copies past the neighbour limit, resumed after a kill, and on collections without signals.

The points' image vectors are a random direction per original plus small noise (cosine about 0.99 inside a
family) and, for each original's similar shot, a direction near the original's (cosine about 0.95, above
``similar_cosine``), so similar shots are compared and must stay out of near groups. Pages of 4 points, so
paging and the checkpoint's lines are exercised."""
from __future__ import annotations

import random
import uuid
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.congruence import compare_store_results
from helpers.duplicate_data import make_duplicate_set
from mmindex.connectors.base import CollectionSpec, PointRecord
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.qdrant_server import QdrantServerStore
from mmindex.errors import StoreError, UsageError
from mmindex.keys import SOURCE_KEY
from mmindex.pipeline.duplicates.evidence import TIERS, PairEvidence
from mmindex.pipeline.duplicates.find import BACKFILL_HINT, DuplicatePair, find_duplicates, group_pairs
from mmindex.pipeline.duplicates.signals import SIGNAL_KEYS, signals_of
from mmindex.pipeline.ingest.images import decode_image
from mmindex.pipeline.query.filters import compile_filter

DIM = 16
SPEC = CollectionSpec("test-model", DIM, {"part": "integer"})
STORES = ("edge", "server")


@dataclass
class Labelled:
    """The labelled set as points: ``points`` in insertion order, ``name`` (point id → image id) and the set."""

    data: object
    points: list[PointRecord]
    name: dict[str, str]


def point_id(image_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, image_id))


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def labelled_points(originals: int, seed: int = 1) -> Labelled:
    data = make_duplicate_set(originals, seed)
    rng = np.random.default_rng(seed)
    direction = {group: rng.normal(size=DIM) for group in sorted(set(data.group.values()))}
    for group in direction:  # a similar shot points near its original
        if group.endswith("-similar"):
            base = unit(direction[group.removesuffix("-similar")])
            direction[group] = base + 0.3 * unit(rng.normal(size=DIM))
    rows = list(range(len(data.images)))
    random.Random(seed).shuffle(rows)  # source order is not insertion order, so the keeper rule is exercised
    points, name = [], {}
    for row, (image_id, image) in zip(rows, data.images.items()):
        group = data.group[image_id]
        vector = unit(unit(direction[group]) + 0.03 * rng.normal(size=DIM))
        index = int(group.split("-")[2])
        payload = {"name": image_id, "part": index % 2, SOURCE_KEY: {"name": "dups", "file": "a.parquet", "row": row},
                   **signals_of(decode_image(image)).to_payload()}
        points.append(PointRecord(point_id(image_id), {"image": vector}, payload))
        name[point_id(image_id)] = image_id
    return Labelled(data, points, name)


def open_store(kind: str, folder, points: list[PointRecord], collection: str = "dups"):
    store = (QdrantEdgeStore(collection, data_dir=folder / f"edge-{collection}") if kind == "edge"
             else QdrantServerStore(collection, url=":memory:"))
    store.ensure_collection(SPEC)
    store.create_payload_index("part", "integer")
    if points:
        store.upsert(points)
    store.finish()
    return store


@pytest.fixture(scope="module")
def four():
    return labelled_points(4)


@pytest.fixture(scope="module")
def stores(four, tmp_path_factory):
    folder = tmp_path_factory.mktemp("duplicates")
    opened = {kind: open_store(kind, folder, four.points) for kind in STORES}
    yield opened
    for store in opened.values():
        store.close()


def expected_groups(labelled: Labelled, tier: str, keep=lambda payload: True) -> list[set[str]]:
    """The labels' groups: each original's family (exact copies and near duplicates for "near", exact copies
    for "exact") among the points ``keep`` accepts, as sets of image ids; families of one point are not groups."""
    families: dict[str, set[str]] = {}
    for point in labelled.points:
        image_id = point.payload["name"]
        if keep(point.payload) and (tier != "exact" or image_id in labelled.data.exact_ids):
            families.setdefault(labelled.data.group[image_id], set()).add(image_id)
    return sorted((f for f in families.values() if len(f) > 1), key=sorted)


def found_groups(labelled: Labelled, report) -> list[set[str]]:
    return sorted(({labelled.name[i] for i in group.members} for group in report.groups), key=sorted)


def keeper_oracle(labelled: Labelled, members: list[str]) -> str:
    """The most pixels, then the first in source order, then the lowest id."""
    payloads = {p.id: p.payload for p in labelled.points}

    def rank(i: str):
        payload = payloads[i]
        return (-payload["_width"] * payload["_height"], (payload[SOURCE_KEY]["file"], payload[SOURCE_KEY]["row"]), i)
    return min(members, key=rank)


# -- group_pairs against connected components ---------------------------------------------------------------------
@dataclass
class Member:
    """What the keeper rule reads of a point (the shape find.py keeps per member)."""

    area: int
    order: tuple


def star_groups(pairs: list[tuple[str, str, str]], rank, tier: str) -> list[tuple[str, set[str], str]]:
    """The keeper-centred groups, the plain way: exact copies merged until nothing changes; then, best image first,
    a keeper takes its copies and every image with a pair to one of them (and that image's copies).
    Returns (keeper, members, tier) per group."""
    strength = TIERS.index(tier)
    kept = [(a, b, t) for a, b, t in pairs if TIERS.index(t) <= strength]
    copies = {n: {n} for a, b, _ in kept for n in (a, b)}
    changed = True
    while changed:
        changed = False
        for a, b, t in kept:
            if t == "exact" and copies[a] is not copies[b]:
                merged = copies[a] | copies[b]
                for n in merged:
                    copies[n] = merged
                changed = True
    taken, found = set(), []
    for keeper in sorted(copies, key=rank):
        if keeper in taken:
            continue
        own = copies[keeper]
        linked = {}
        for a, b, t in kept:
            for x, y in ((a, b), (b, a)):
                if x in own and y not in own and y not in taken:
                    for n in copies[y]:
                        linked[n] = min(linked.get(n, 9), TIERS.index(t))
        group = (own | set(linked)) - taken
        if len(group) < 2:
            continue
        taken |= group
        found.append((keeper, group, TIERS[max(linked.values(), default=0)]))
    return found


ids = st.sampled_from([f"p{i:02d}" for i in range(14)])


@settings(max_examples=200, deadline=None)
@given(raw=st.lists(st.tuples(ids, ids, st.sampled_from(TIERS)), max_size=30),
       areas=st.lists(st.integers(1, 3), min_size=14, max_size=14),
       rows=st.lists(st.integers(0, 3), min_size=14, max_size=14), tier=st.sampled_from(TIERS))
def test_group_pairs_equals_the_keeper_centred_oracle(raw, areas, rows, tier):
    pairs = {}
    for a, b, pair_tier in raw:
        if a != b:
            left, right = sorted((a, b))
            pairs[(left, right)] = DuplicatePair(left, right, PairEvidence(pair_tier, 0.9))
    members = {f"p{i:02d}": Member(areas[i], ("f.parquet", rows[i])) for i in range(14)}
    rank = lambda i: (-members[i].area, members[i].order, i)  # noqa: E731
    groups = group_pairs(list(pairs.values()), members, tier)
    expected = star_groups([(p.left, p.right, p.evidence.tier) for p in pairs.values()], rank, tier)
    assert sorted((g.keeper, sorted(g.members), g.tier) for g in groups) == sorted(
        (keeper, sorted(group), group_tier) for keeper, group, group_tier in expected)
    strength = TIERS.index(tier)
    for number, group in enumerate(groups, 1):
        assert group.group == number
        assert group.keeper == min(group.members, key=rank)  # the best image of its group
        assert group.members == [group.keeper] + sorted(set(group.members) - {group.keeper})
        inside = [p for p in pairs.values() if p.left in group.members and p.right in group.members
                  and TIERS.index(p.evidence.tier) <= strength]
        assert sorted((p.left, p.right) for p in group.pairs) == sorted((p.left, p.right) for p in inside)
        assert group.to_dict()["size"] == len(group.members)
    assert [g.keeper for g in groups] == sorted(g.keeper for g in groups)
    every = [i for g in groups for i in g.members]
    assert len(every) == len(set(every))  # an image is in one group at most


def test_a_chain_of_near_pairs_does_not_join_its_ends():
    """A fade from one photo into another: each step is near the next, the ends are not duplicates."""
    steps = [f"m{i:02d}" for i in range(6)]
    pairs = [DuplicatePair(a, b, PairEvidence("near", 0.95)) for a, b in zip(steps, steps[1:])]
    members = {step: Member(100, ("f", index)) for index, step in enumerate(steps)}
    groups = group_pairs(pairs, members, "near")
    assert [(g.keeper, g.members) for g in groups] == [("m00", ["m00", "m01"]), ("m02", ["m02", "m03"]),
                                                       ("m04", ["m04", "m05"])]
    for group in groups:  # every member is paired with its keeper directly
        assert all(any({p.left, p.right} == {group.keeper, m} for p in group.pairs) for m in group.members[1:])


def test_group_pairs_of_no_pairs_is_no_groups():
    assert group_pairs([], {}, "similar") == []


# -- find_duplicates on both stores -----------------------------------------------------------------------------
@pytest.mark.parametrize("tier", ["exact", "near"])
def test_both_stores_find_the_labelled_groups(four, stores, tier):
    reports = []

    def groups_and_counts(store):
        reports.append(find_duplicates(store, tier=tier, page=4))
        return [g.to_dict() for g in reports[-1].groups], without_time(reports[-1].summary())
    compare_store_results([stores[kind] for kind in STORES], groups_and_counts)  # cosines within 1e-5
    report = reports[0]
    assert found_groups(four, report) == expected_groups(four, tier)
    for group in report.groups:
        assert group.tier == tier
        assert group.keeper == keeper_oracle(four, group.members)
    assert report.points == len(four.points) and report.without_signals == 0 and report.resumed_from == 0
    assert report.summary()["points_in_groups"] == sum(len(g) for g in expected_groups(four, tier))


def test_similar_shots_join_at_the_similar_tier(four, stores):
    """They are compared (cosine about 0.95) and found similar; the test above finds them in no near group."""
    report = find_duplicates(stores["server"], tier="similar", page=4)
    similar = {labelled for labelled in four.name.values() if labelled.endswith("-similar")}
    grouped = {four.name[i] for g in report.groups for i in g.members}
    assert similar & grouped and "similar" in {g.tier for g in report.groups}
    for group in report.groups:  # a shot joins only by its own pair with the keeper's copies, never by a chain
        keeper_copies = {group.keeper} | {p.left if p.right == group.keeper else p.right for p in group.pairs
                                          if group.keeper in (p.left, p.right) and p.evidence.tier == "exact"}
        for member in set(group.members) - keeper_copies:
            assert any({p.left, p.right} & keeper_copies and member in (p.left, p.right) for p in group.pairs)


@pytest.mark.parametrize("kind", STORES)
def test_a_filter_restricts_the_points(four, stores, kind):
    report = find_duplicates(stores[kind], tier="near", filter=compile_filter("part = 0"), page=4)
    assert found_groups(four, report) == expected_groups(four, "near", keep=lambda p: p["part"] == 0)
    assert report.points == sum(1 for p in four.points if p.payload["part"] == 0)


@pytest.mark.parametrize("kind", STORES)
def test_exact_copies_past_the_neighbour_limit_form_one_group(tmp_path, kind):
    data = make_duplicate_set(1, 2)
    image_id = sorted(data.images)[0]
    payload = signals_of(decode_image(data.images[image_id])).to_payload()
    rng = np.random.default_rng(0)
    direction = unit(rng.normal(size=DIM))
    copies = [PointRecord(point_id(f"copy-{i}"), {"image": unit(direction + 0.01 * rng.normal(size=DIM))},
                          {**payload, SOURCE_KEY: {"file": "a.parquet", "row": i}}) for i in range(30)]
    store = open_store(kind, tmp_path, copies)
    try:
        report = find_duplicates(store, tier="near", neighbours=4, page=4)
    finally:
        store.close()
    assert len(report.groups) == 1
    group = report.groups[0]
    assert sorted(group.members) == sorted(p.id for p in copies) and group.tier == "exact"
    assert group.keeper == point_id("copy-0")  # equal sizes: the first row


# -- resuming ---------------------------------------------------------------------------------------------------
class Killed(Exception):
    """Stands for a kill in the middle of a run."""


def killed_after(points: int):
    def on_progress(done: int, total: int) -> None:
        if done >= points:
            raise Killed
    return on_progress


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    labelled = labelled_points(3)
    store = open_store("edge", tmp_path_factory.mktemp("resume"), labelled.points)
    whole = find_duplicates(store, tier="near", page=4)
    yield labelled, store, whole
    store.close()


def without_time(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("resumed_from", "seconds")}


def without_work(summary: dict) -> dict:
    """The summary less what a resumed run may redo: a pair whose first point was done before the stop is compared
    again from its other point (which pairs were compared is not checkpointed)."""
    return {k: v for k, v in without_time(summary).items() if k != "pairs_compared"}


def same_result(report, whole) -> None:
    assert [g.to_dict() for g in report.groups] == [g.to_dict() for g in whole.groups]
    assert without_work(report.summary()) == without_work(whole.summary())
    assert report.pairs_compared >= whole.pairs_compared


@pytest.mark.parametrize("pages", [2, 9])  # 9 pages of 4 hold all 33 points: killed before grouping
def test_a_killed_run_resumes_where_it_stopped(three, tmp_path, pages):
    _, store, whole = three
    checkpoint = tmp_path / "dups.checkpoint"
    with pytest.raises(Killed):
        find_duplicates(store, tier="near", page=4, checkpoint=checkpoint,
                        on_progress=killed_after(min(4 * pages, whole.points)))
    assert checkpoint.is_file()
    report = find_duplicates(store, tier="near", page=4, checkpoint=checkpoint)
    assert report.resumed_from == min(4 * pages, whole.points) > 0
    same_result(report, whole)
    assert not checkpoint.exists()  # removed when the run completes


def test_a_point_deleted_while_stopped_is_not_a_member_after_the_resume(tmp_path):
    """Stopped after every page but grouping; a grouped point is deleted and another added (the count holds)."""
    labelled = labelled_points(2)
    store = open_store("edge", tmp_path, labelled.points[:-1])
    try:
        checkpoint = tmp_path / "dups.checkpoint"
        total = len(labelled.points) - 1
        with pytest.raises(Killed):
            find_duplicates(store, tier="near", page=4, checkpoint=checkpoint, on_progress=killed_after(total))
        gone = next(p.id for p in labelled.points[:-1] if labelled.name[p.id].endswith("-resize"))
        store.delete([gone])
        store.upsert([labelled.points[-1]])
        report = find_duplicates(store, tier="near", page=4, checkpoint=checkpoint)
        assert report.resumed_from == total
        assert gone not in {i for g in report.groups for i in g.members}
        assert all(gone not in (p.left, p.right) for g in report.groups for p in g.pairs)
    finally:
        store.close()


def test_a_torn_last_checkpoint_line_is_read_again(three, tmp_path):
    _, store, whole = three
    checkpoint = tmp_path / "dups.checkpoint"
    with pytest.raises(Killed):
        find_duplicates(store, tier="near", page=4, checkpoint=checkpoint, on_progress=killed_after(12))
    text = checkpoint.read_text()
    checkpoint.write_text(text[:len(text) - len(text.splitlines()[-1]) // 2 - 1])  # half of the last page's line
    report = find_duplicates(store, tier="near", page=4, checkpoint=checkpoint)
    assert report.resumed_from == 8
    same_result(report, whole)


@pytest.mark.parametrize("changed", [{"neighbours": 8}, {"tier": "exact"}, {"filter": compile_filter("part = 0")}])
def test_a_checkpoint_of_other_options_is_ignored(three, tmp_path, changed):
    _, store, _ = three
    checkpoint = tmp_path / "dups.checkpoint"
    with pytest.raises(Killed):
        find_duplicates(store, tier="near", page=4, checkpoint=checkpoint, on_progress=killed_after(8))
    options = {"tier": "near", "page": 4, **changed}
    report = find_duplicates(store, checkpoint=checkpoint, **options)
    assert report.resumed_from == 0
    same_result(report, find_duplicates(store, **options))


# -- collections without signals ----------------------------------------------------------------------------------
def without_signals(point: PointRecord) -> PointRecord:
    return PointRecord(point.id, point.vectors, {k: v for k, v in point.payload.items() if k not in SIGNAL_KEYS})


@pytest.mark.parametrize("kind", STORES)
def test_no_signals_at_all_is_refused_with_the_backfill_hint(three, tmp_path, kind):
    labelled, _, _ = three
    store = open_store(kind, tmp_path, [without_signals(p) for p in labelled.points], collection="old")
    try:
        with pytest.raises(UsageError) as raised:  # as a collection without keyword vectors is refused
            find_duplicates(store, page=4)
        assert BACKFILL_HINT.format(name="old") in str(raised.value)
        with pytest.raises(UsageError, match="under the filter"):
            find_duplicates(store, filter=compile_filter("part = 1"), page=4)
    finally:
        store.close()


def test_points_without_signals_are_counted_and_never_near(three, tmp_path):
    labelled, _, _ = three
    stripped = {p.id for p in labelled.points[::5]}
    points = [without_signals(p) if p.id in stripped else p for p in labelled.points]
    store = open_store("edge", tmp_path, points, collection="some")
    try:
        report = find_duplicates(store, tier="near", page=4)
    finally:
        store.close()
    assert report.without_signals == len(stripped) and report.points == len(points)
    assert not stripped & {i for g in report.groups for i in g.members}


@pytest.mark.parametrize("kind", STORES)
def test_an_empty_collection_has_no_groups(tmp_path, kind):
    store = open_store(kind, tmp_path, [], collection="empty")
    try:
        report = find_duplicates(store, page=4)
    finally:
        store.close()
    assert report.groups == [] and report.points == 0 and report.summary()["groups"] == 0


def test_bad_options_and_a_missing_collection_are_refused(stores, tmp_path):
    with pytest.raises(UsageError, match="--tier"):
        find_duplicates(stores["edge"], tier="same")
    with pytest.raises(UsageError, match="--neighbours"):
        find_duplicates(stores["edge"], neighbours=0)
    with pytest.raises(UsageError, match="page"):
        find_duplicates(stores["edge"], page=0)
    with pytest.raises(StoreError, match="'nowhere' does not exist"):
        find_duplicates(QdrantServerStore("nowhere", url=":memory:"))
