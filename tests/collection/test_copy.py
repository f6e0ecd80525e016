"""copy_collection: Edge → server → Edge round trips, resuming, refusals (the command: tests/cli/test_copy.py)."""
from __future__ import annotations

import uuid

import pytest

from mmindex.connectors.base import CollectionSpec, PointRecord, SearchRequest
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.qdrant_server import QdrantServerStore
from mmindex.pipeline.collection.copy import COPIED_KEY, COPY_KEY, copy_collection
from mmindex.errors import CollectionMismatchError, StoreError, UsageError
from helpers.copying import (DIM, LOCAL_MODE_RTOL, POINTS, SPEC, assert_same_points, assert_same_record,
                             expected, photos_collection, sample_points, stored)


@pytest.fixture
def source(tmp_path):
    """An Edge collection as ingest leaves it: points, the model's record, two payload indexes, a layout."""
    store = photos_collection(tmp_path / "src")
    yield store
    store.close()


class Stop(Exception):
    pass


def stop_after_first_page(done: int, total: int) -> None:
    if done:
        raise Stop


def test_edge_to_server_to_edge_keeps_every_point_and_the_record(source, tmp_path):
    server = QdrantServerStore("photos-on-server", url=":memory:")
    first = copy_collection(source, server, page=16)
    assert (first.copied, first.source_points, first.target_points) == (POINTS, POINTS, POINTS)
    assert first.resumed_from is None and first.indexed_fields == {"year": "integer", "color": "keyword"}
    back = QdrantEdgeStore("photos-back", data_dir=tmp_path / "back")
    second = copy_collection(server, back, page=25)
    assert second.copied == second.target_points == POINTS
    assert_same_points(server, expected(sample_points()), LOCAL_MODE_RTOL)
    assert_same_points(back, stored(server))  # into Edge: bit for bit
    assert_same_points(back, expected(sample_points()), LOCAL_MODE_RTOL)  # what went through ':memory:'
    for store in (server, back):
        assert_same_record(store)
    # The Edge copy has real payload indexes and answers filtered searches like the source.
    assert back.info().indexed_fields == {"year": "integer", "color": "keyword"}
    query = SearchRequest(vector=sample_points()[5].vectors["image"], limit=5, exact=True,
                          filter={"must": [{"key": "color", "match": {"value": "grün"}}]})
    assert [(h.id, round(h.score, 6)) for h in back.search(query)] == \
           [(h.id, round(h.score, 6)) for h in source.search(query)]
    server.close()
    back.close()


@pytest.mark.parametrize("kind", ["edge", "memory"])
def test_a_stopped_copy_continues_from_its_cursor(source, tmp_path, kind):
    make = ((lambda: QdrantEdgeStore("copy", data_dir=tmp_path / "dst")) if kind == "edge"
            else (lambda client=QdrantServerStore("copy", url=":memory:").client:
                  QdrantServerStore("copy", url=":memory:", client=client)))
    calls = []

    def note_and_stop(done, total):
        calls.append((done, total))
        stop_after_first_page(done, total)

    target = make()
    with pytest.raises(Stop):
        copy_collection(source, target, page=16, on_progress=note_and_stop)
    assert calls == [(0, POINTS), (16, POINTS)]
    marker = target.metadata()[COPY_KEY]
    assert target.count() == 16 and marker["copied"] == 16 and marker["next_offset"]
    if kind == "edge":
        target.close()  # as if the process had died; a new one opens the store again
        target = make()
    seen = []
    summary = copy_collection(source, target, page=16, on_progress=lambda done, total: seen.append(done))
    assert summary.resumed_from == marker["next_offset"]
    assert summary.copied == POINTS - 16 and seen[0] == 16 and seen[-1] == POINTS
    assert summary.target_points == summary.source_points == POINTS
    assert_same_points(target, expected(sample_points()), 0.0 if kind == "edge" else LOCAL_MODE_RTOL)
    assert_same_record(target)
    target.close()


def test_a_finished_copy_run_again_says_it_is_complete_and_copies_nothing(source, tmp_path):
    target = QdrantEdgeStore("copy", data_dir=tmp_path / "dst")
    first = copy_collection(source, target)
    assert not first.already_complete and first.finished_at
    assert target.metadata()[COPIED_KEY] == {"source": first.source, "points": POINTS, "finished_at": first.finished_at}
    again = copy_collection(source, target, on_progress=lambda done, total: pytest.fail("nothing to copy"))
    assert again.already_complete and again.copied == 0 and again.finished_at == first.finished_at
    assert again.source_points == again.target_points == POINTS
    assert_same_points(target, expected(sample_points()))
    # A copy of the copy is a copy of another source: the record does not travel, a rerun of it is complete too.
    second = QdrantEdgeStore("copy2", data_dir=tmp_path / "dst")
    assert copy_collection(target, second).copied == POINTS and copy_collection(target, second).already_complete
    assert second.metadata()[COPIED_KEY]["source"] == first.target
    # The source changed since: not "complete", and not copied over either.
    source.delete([sample_points()[0].id])
    with pytest.raises(StoreError, match=r"is a finished copy .* the source now has 69 points and the target 70"):
        copy_collection(source, target)
    elsewhere = QdrantEdgeStore("photos", data_dir=tmp_path / "elsewhere")
    elsewhere.ensure_collection(SPEC)
    with pytest.raises(StoreError, match=r"already holds 70 points \(a copy of qdrant-edge .*src/photos\)"):
        copy_collection(elsewhere, target)
    for store in (target, second, elsewhere):
        store.close()


def test_a_target_with_another_model_is_refused_untouched(source, tmp_path):
    target = QdrantEdgeStore("other", data_dir=tmp_path / "dst")
    target.ensure_collection(CollectionSpec("another-model", DIM, fingerprint="0" * 64))
    with pytest.raises(CollectionMismatchError, match="another-model"):
        copy_collection(source, target)
    assert target.count() == 0 and COPY_KEY not in target.metadata()
    target.close()


def test_an_unfinished_copy_of_another_source_is_refused(source, tmp_path):
    target = QdrantServerStore("copy", url=":memory:")
    with pytest.raises(Stop):
        copy_collection(source, target, page=10, on_progress=stop_after_first_page)
    elsewhere = QdrantEdgeStore("photos", data_dir=tmp_path / "elsewhere")
    elsewhere.ensure_collection(SPEC)
    elsewhere.upsert(sample_points(3))
    with pytest.raises(StoreError, match="unfinished copy of qdrant-edge .*src/photos"):
        copy_collection(elsewhere, target)
    elsewhere.close()
    target.close()


def test_copying_a_collection_onto_itself_is_refused(source, tmp_path):
    same = QdrantEdgeStore("photos", data_dir=tmp_path / "src")
    with pytest.raises(UsageError, match="same collection"):
        copy_collection(source, same)
    source.set_alias("live", "photos")
    through_alias = QdrantEdgeStore("live", data_dir=tmp_path / "src")
    with pytest.raises(UsageError, match="same collection"):
        copy_collection(source, through_alias)
    server = QdrantServerStore("c", url=":memory:")
    server.ensure_collection(SPEC)
    with pytest.raises(UsageError, match="same collection"):
        copy_collection(server, QdrantServerStore("c", url=":memory:", client=server.client))
    assert source.count() == POINTS and COPY_KEY not in source.metadata()


def test_a_missing_source_is_refused_and_nothing_is_created(tmp_path):
    target = QdrantEdgeStore("copy", data_dir=tmp_path / "dst")
    with pytest.raises(StoreError, match="'nothing': it does not exist"):
        copy_collection(QdrantEdgeStore("nothing", data_dir=tmp_path / "src"), target)
    assert not target.exists()


class Crash(BaseException):
    """What kill -9 leaves: nothing after this step runs."""


STEPS = ("upsert", "update_metadata", "finish", "create_payload_index", "ensure_collection")


def crash_before(store, at):
    """Make ``store`` die before its ``at``-th write (every write of a copy is a step); returns the step counter."""
    steps = []
    for name in STEPS:
        real = getattr(store, name)

        def step(*args, real=real, name=name, **kwargs):
            if len(steps) == at:
                raise Crash(name)
            steps.append(name)
            return real(*args, **kwargs)

        setattr(store, name, step)
    return steps


@pytest.fixture
def uninterrupted(source, tmp_path):
    """The steps (writes to the target) of an uninterrupted copy, in order, and the points it leaves."""
    clean = QdrantEdgeStore("copy", data_dir=tmp_path / "clean")
    writes = crash_before(clean, -1)
    copy_collection(source, clean, page=16)
    want = stored(clean)
    clean.close()
    assert writes[-2:] == ["finish", "update_metadata"] and writes.count("upsert") == 5
    return writes, want


def crash_and_resume(source, folder, at, want):
    target = QdrantEdgeStore("copy", data_dir=folder)
    crash_before(target, at)
    with pytest.raises(Crash):
        copy_collection(source, target, page=16)
    target.close()  # the process died; a new one opens the store again
    target = QdrantEdgeStore("copy", data_dir=folder)
    summary = copy_collection(source, target, page=16)
    assert not summary.already_complete and summary.target_points == POINTS
    assert_same_points(target, want)
    assert_same_record(target)
    assert copy_collection(source, target).already_complete
    target.close()


@pytest.mark.parametrize("step", [("ensure_collection", 1), ("upsert", 1), ("upsert", 3), ("finish", 1),
                                  ("update_metadata", -1)], ids=lambda step: f"{step[0]}-{step[1]}")
def test_a_copy_crashed_at_a_step_ends_like_an_uninterrupted_one(source, tmp_path, uninterrupted, step):
    """Before the first write, between pages, during the index build at the end (it used to leave a copy that
    could not go on: "already holds … delete it first"), before the record that it is finished."""
    writes, want = uninterrupted
    name, nth = step
    places = [i for i, write in enumerate(writes) if write == name]
    crash_and_resume(source, tmp_path / "dst", places[nth - 1] if nth > 0 else places[nth], want)


@pytest.mark.slow
def test_a_copy_crashed_before_any_of_its_writes_ends_like_an_uninterrupted_one(source, tmp_path, uninterrupted):
    writes, want = uninterrupted
    for at in range(len(writes)):
        crash_and_resume(source, tmp_path / f"dst{at}", at, want)


@pytest.mark.parametrize("change", ["payload", "vector", "same count other point"])
def test_a_finished_copy_whose_source_changed_in_place_is_not_called_complete(source, tmp_path, change):
    """A review's finding: a source edited in place (same number of points) made a re-run say "nothing to copy"
    and leave the target out of date, exit 0. Every point is compared now."""
    target = QdrantEdgeStore("copy", data_dir=tmp_path / "dst")
    copy_collection(source, target)
    point = sample_points()[3]
    if change == "payload":
        source.upsert([PointRecord(point.id, point.vectors, {**point.payload, "color": "CHANGED"})])
    elif change == "vector":
        source.upsert([PointRecord(point.id, {name: -v for name, v in point.vectors.items()}, point.payload)])
    else:
        source.delete([point.id])
        source.upsert([PointRecord(str(uuid.uuid4()), point.vectors, point.payload)])
    with pytest.raises(StoreError, match=r"is a finished copy .* but the source changed since: "):
        copy_collection(source, target)
    target.close()
