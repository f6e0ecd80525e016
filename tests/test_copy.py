"""`mmindex copy` and copy_collection: Edge → server → Edge round trips, resuming, refusals."""
from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from mmindex.connectors.base import CollectionOptions, CollectionSpec, PointRecord, SearchRequest
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.qdrant_server import QdrantServerStore
from mmindex.pipeline.collection.copy import COPY_KEY, copy_collection
from mmindex.errors import CollectionMismatchError, StoreError

DIM = 8
POINTS = 70
LAYOUT = CollectionOptions(hnsw_m=8, hnsw_ef_construct=32)
SPEC = CollectionSpec("tiny-clip", DIM, {"year": "integer", "color": "keyword", "score": "float", "ok": "bool",
                                         "meta": "struct", "tags": "keyword", "caption": "keyword"},
                      fingerprint="f" * 64)
RECORDED = {"model_path": "/models/tiny-clip", "id_rule": {"rule": "column", "column": "id"},
            "sources": {"nightly": {"inputs": ["/data/a.parquet"], "synced_at": "2024-05-01T00:00:00+00:00"}}}


def unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def sample_points(n: int = POINTS) -> list[PointRecord]:
    rng = np.random.default_rng(7)
    points = []
    for i in range(n):
        vectors = {"image": unit(rng)}
        if i % 3:  # every third row has no caption, so no text vector
            vectors["text"] = unit(rng)
        payload = {
            "year": 2000 + i, "color": ["red", "grün", "青"][i % 3], "score": i / 7, "ok": i % 2 == 0,
            "meta": {"w": i, "nested": {"deep": [1, "two", None]}}, "tags": ["a", f"t{i}"],
            "caption": f"ein Bild Nr. {i} ✓" if i % 3 else None, "empty": [], "none": None,
        }
        points.append(PointRecord(str(uuid.uuid5(uuid.NAMESPACE_URL, f"row-{i}")), vectors, payload))
    return points


@pytest.fixture
def source(tmp_path):
    """An Edge collection as ingest leaves it: points, the model's record, two payload indexes, a layout."""
    store = QdrantEdgeStore("photos", data_dir=tmp_path / "src", options=LAYOUT)
    store.ensure_collection(SPEC)
    store.update_metadata(RECORDED)
    store.create_payload_index("year", "integer")
    store.create_payload_index("color", "keyword")
    store.upsert(sample_points())
    store.finish()
    yield store
    store.close()


def every_point(store) -> dict:
    found, offset = {}, None
    while True:
        page, offset = store.scroll(limit=32, offset=offset, with_vectors=True)
        found.update({p.id: p for p in page})
        if offset is None:
            return found


def expected(points: list[PointRecord]) -> dict:
    return {p.id: (p.payload, p.vectors) for p in points}


def stored(store) -> dict:
    return {p.id: (p.payload, p.vectors) for p in every_point(store).values()}


# Vectors through qdrant-client's local mode (':memory:') differ from what was written by at most
# two float32 roundings: it divides each cosine vector by its float32 norm, 1 ± an ulp or two for a
# unit vector (measured over 5,000 vectors: relative error ≤ 1.6e-7, absolute ≤ 1.2e-7).
LOCAL_MODE_RTOL = 2 ** -22  # 2.4e-7


def assert_same_points(copy, want: dict, rtol: float = 0.0) -> None:
    """Same ids, equal payloads, the same named vectors, each equal within ``rtol`` (0: bit for bit).

    Edge keeps a unit vector's float32 values as given and the copy passes them through
    (float32 → Python float → float32 is lossless), so copies into Edge are exact.
    """
    got = every_point(copy)
    assert sorted(got) == sorted(want)
    for point_id, (payload, vectors) in want.items():
        point = got[point_id]
        assert point.payload == payload
        assert set(point.vectors) == set(vectors)
        for name, vector in vectors.items():
            values, wanted = np.asarray(point.vectors[name], dtype=np.float32), np.asarray(vector, dtype=np.float32)
            if rtol:
                np.testing.assert_allclose(values, wanted, rtol=rtol, atol=0)
            else:
                assert np.array_equal(values, wanted), (point_id, name)


def assert_same_record(copy) -> None:
    meta = copy.metadata()
    assert meta["model"] == SPEC.model and meta["model_fingerprint"] == SPEC.fingerprint and meta["dim"] == DIM
    assert meta["payload_types"] == SPEC.payload_types
    assert {k: meta[k] for k in RECORDED} == RECORDED
    assert meta["indexed_fields"] == {"year": "integer", "color": "keyword"}
    assert meta["options"] == LAYOUT.to_dict()
    assert COPY_KEY not in meta


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


class Stop(Exception):
    pass


def stop_after_first_page(done: int, total: int) -> None:
    if done:
        raise Stop


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


def test_a_finished_copy_is_not_copied_over_again(source, tmp_path):
    target = QdrantEdgeStore("copy", data_dir=tmp_path / "dst")
    copy_collection(source, target)
    with pytest.raises(StoreError, match="already holds 70 points"):
        copy_collection(source, target)
    target.close()


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
    with pytest.raises(StoreError, match="same collection"):
        copy_collection(source, same)
    source.set_alias("live", "photos")
    through_alias = QdrantEdgeStore("live", data_dir=tmp_path / "src")
    with pytest.raises(StoreError, match="same collection"):
        copy_collection(source, through_alias)
    server = QdrantServerStore("c", url=":memory:")
    server.ensure_collection(SPEC)
    with pytest.raises(StoreError, match="same collection"):
        copy_collection(server, QdrantServerStore("c", url=":memory:", client=server.client))
    assert source.count() == POINTS and COPY_KEY not in source.metadata()


def test_a_missing_source_is_refused_and_nothing_is_created(tmp_path):
    target = QdrantEdgeStore("copy", data_dir=tmp_path / "dst")
    with pytest.raises(StoreError, match="'nothing': it does not exist"):
        copy_collection(QdrantEdgeStore("nothing", data_dir=tmp_path / "src"), target)
    assert not target.exists()


# -- the command ------------------------------------------------------------------------
@pytest.fixture
def run(cli):
    return cli


def test_cli_copies_between_data_dirs_and_refuses_a_second_copy(run, source, tmp_path):
    source.close()  # the command opens the store itself
    result = run("copy", "-c", "photos", "--data-dir", tmp_path / "src", "--to-data-dir", tmp_path / "dst",
                 "--json", "--page-size", 20)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["copied"] == summary["source_points"] == summary["target_points"] == POINTS
    copy = QdrantEdgeStore("photos", data_dir=tmp_path / "dst")
    assert_same_points(copy, expected(sample_points()))
    assert_same_record(copy)
    copy.close()
    again = run("copy", "-c", "photos", "--data-dir", tmp_path / "src", "--to-data-dir", tmp_path / "dst",
                "--to-collection", "photos")
    assert again.exit_code == 1 and "already holds 70 points" in again.output
    assert "Traceback" not in again.output and len(again.output.strip().splitlines()) == 1
    nowhere = run("copy", "-c", "photos", "--data-dir", tmp_path / "src")
    assert nowhere.exit_code == 2 and "say where to copy to" in nowhere.output
    same = run("copy", "-c", "photos", "--data-dir", tmp_path / "src", "--to-collection", "photos")
    assert same.exit_code == 1 and "same collection" in same.output


def test_cli_copy_in_one_store_under_another_name_prints_a_summary(run, source, tmp_path):
    source.close()
    result = run("copy", "-c", "photos", "--data-dir", tmp_path / "src", "--to-collection", "photos-v2", "-q")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"copied {POINTS} points in ")
    assert lines[1].strip().endswith(f"src/photos ({POINTS} points)")
    assert lines[2].strip().endswith(f"src/photos-v2 ({POINTS} points)")


def test_copy_help_has_examples(run):
    text = run("copy", "--help").stdout
    assert "Examples:" in text and "--to-url" in text and "mmindex copy -c photos" in text


def test_a_copied_collection_answers_queries_like_the_original(run, tiny_model, sample_dir, tmp_path):
    """End to end with the real model: ingest, copy to another data dir, query both."""
    ingest = run("ingest", sample_dir, "-c", "shapes", "--model", tiny_model, "--index-fields", "year,color", "-q")
    assert ingest.exit_code == 0, ingest.output
    copied = run("copy", "-c", "shapes", "--to-data-dir", tmp_path / "copy", "-q")
    assert copied.exit_code == 0, copied.output

    def answers(*where):
        result = run("query", "a red circle", "-c", "shapes", *where, "--where", "year >= 2015", "--json",
                     "--exact", "--device", "cpu")
        assert result.exit_code == 0, result.output
        return [(hit["id"], round(hit["score"], 5)) for hit in map(json.loads, result.stdout.splitlines())]

    original = answers()
    assert original and answers("--data-dir", tmp_path / "copy") == original
    info = json.loads(run("info", "-c", "shapes", "--data-dir", tmp_path / "copy", "--json").stdout)
    assert info["points"] == 60 and set(info["indexed_fields"]) == {"year", "color"}
