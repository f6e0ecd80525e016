"""One congruence suite over every store: Qdrant Edge, qdrant-client ':memory:', and a real
Qdrant server when QDRANT_URL is set (skipped otherwise, visibly)."""
from __future__ import annotations

import os
import threading
import time
import uuid

import numpy as np
import pytest

from mmindex.connectors.base import CollectionSpec, PointRecord, SearchRequest, chunk_by_bytes
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.qdrant_server import QdrantServerStore
from mmindex.errors import CollectionMismatchError, FilterError, StoreError
from mmindex.pipeline.query.where import parse_where

DIM = 8
SPEC = CollectionSpec("test-model", DIM, {"year": "integer", "color": "keyword", "created": "datetime", "tags": "keyword"})


@pytest.fixture(params=[
    "edge",
    "memory",
    pytest.param("server", marks=[pytest.mark.server, pytest.mark.skipif(
        not os.environ.get("QDRANT_URL"), reason="QDRANT_URL not set: no real Qdrant server to test against")]),
])
def make_store(request, tmp_path):
    stores = []

    def make(collection="things"):
        if request.param == "edge":
            store = QdrantEdgeStore(collection, data_dir=tmp_path / "edge")
        elif request.param == "memory":
            store = QdrantServerStore(collection, url=":memory:", client=getattr(make, "client", None))
            make.client = store.client
        else:
            name = f"mmindex-test-{collection}-{uuid.uuid4().hex[:8]}"
            store = QdrantServerStore(name, url=os.environ["QDRANT_URL"], api_key=os.environ.get("QDRANT_API_KEY"))
        stores.append(store)
        return store

    yield make
    for store in stores:
        if request.param == "server" and store.exists():
            store.client.delete_collection(store.collection)
        store.close()


def vector(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def points(n: int) -> list[PointRecord]:
    colors = ["red", "green", "blue"]
    return [
        PointRecord(
            str(uuid.uuid5(uuid.NAMESPACE_OID, str(i))),
            {"image": vector(i), "text": vector(1000 + i)} if i % 4 else {"image": vector(i)},
            {"year": 2015 + i % 10, "color": colors[i % 3], "created": f"20{10 + i % 10}-06-01T00:00:00Z",
             "tags": [colors[i % 3], "x"], "caption": f"item {i}"},
        )
        for i in range(n)
    ]


def test_create_write_read_count_info(make_store):
    store = make_store()
    assert not store.exists() and store.spec() is None
    store.ensure_collection(SPEC)
    store.create_payload_index("year", "integer")
    data = points(40)
    store.upsert(data)
    store.upsert(data[:10])  # same ids again: no duplicates
    store.finish()
    assert store.count() == 40
    got = store.retrieve([data[3].id, data[5].id, str(uuid.uuid4())], with_vectors=True)
    assert {p.id for p in got} == {data[3].id, data[5].id}
    by_id = {p.id: p for p in got}
    assert by_id[data[3].id].payload["caption"] == "item 3"
    np.testing.assert_allclose(by_id[data[3].id].vectors["image"], data[3].vectors["image"], atol=1e-5)
    info = store.info()
    assert (info.points, info.model, info.dim) == (40, "test-model", DIM)
    assert info.payload_types["year"] == "integer"
    assert "year" in info.indexed_fields


def test_nearest_neighbour_on_each_named_vector(make_store):
    store = make_store()
    store.ensure_collection(SPEC)
    data = points(30)
    store.upsert(data)
    hits = store.search(SearchRequest(vector=data[7].vectors["image"], using="image", limit=3))
    assert hits[0].id == data[7].id and hits[0].score == pytest.approx(1.0, abs=1e-5)
    hits = store.search(SearchRequest(vector=data[7].vectors["text"], using="text", limit=3))
    assert hits[0].id == data[7].id
    # Points without a caption have no text vector and never show up in text search.
    text_hits = store.search(SearchRequest(vector=data[8].vectors["image"], using="text", limit=30))
    assert data[8].id not in {h.id for h in text_hits} and len(text_hits) == 22
    page = store.search(SearchRequest(vector=data[7].vectors["image"], using="image", limit=2, offset=1))
    assert [h.id for h in page] == [h.id for h in store.search(
        SearchRequest(vector=data[7].vectors["image"], using="image", limit=3))][1:]
    above = store.search(SearchRequest(vector=data[7].vectors["image"], using="image", limit=30,
                                       score_threshold=0.5))
    assert above and all(h.score >= 0.5 for h in above)


@pytest.mark.parametrize(
    "where, keep",
    [
        ("year >= 2020", lambda p: p["year"] >= 2020),
        ("year > 2020", lambda p: p["year"] > 2020),
        ("year < 2018", lambda p: p["year"] < 2018),
        ("year <= 2018", lambda p: p["year"] <= 2018),
        ("year = 2019", lambda p: p["year"] == 2019),
        ("color = 'red'", lambda p: p["color"] == "red"),
        ("color != 'red'", lambda p: p["color"] != "red"),
        ("color in ('red', 'blue')", lambda p: p["color"] in ("red", "blue")),
        ("color not in ('red', 'blue')", lambda p: p["color"] not in ("red", "blue")),
        ("year in (2015, 2016)", lambda p: p["year"] in (2015, 2016)),
        ("tags = 'green'", lambda p: "green" in p["tags"]),
        ("created >= '2015-01-01'", lambda p: p["created"] >= "2015"),
        ("created < '2013-01-01T00:00:00Z'", lambda p: p["created"] < "2013"),
        ("year >= 2017 and color != 'green' and year < 2023", lambda p: 2017 <= p["year"] < 2023 and p["color"] != "green"),
        ("color = 'red' or year = 2016", lambda p: p["color"] == "red" or p["year"] == 2016),
    ],
)
def test_every_where_operator_filters_correctly(make_store, where, keep):
    store = make_store()
    store.ensure_collection(SPEC)
    data = points(40)
    store.upsert(data)
    expected = {p.id for p in data if keep(p.payload)}
    assert expected and len(expected) < len(data)  # the case really filters
    hits = store.search(SearchRequest(vector=vector(5), using="image", filter=parse_where(where, SPEC.payload_types),
                                      limit=100))
    assert {h.id for h in hits} == expected
    assert store.count(parse_where(where, SPEC.payload_types)) == len(expected)


def test_model_or_size_mismatch_is_refused(make_store):
    store = make_store()
    store.ensure_collection(SPEC)
    with pytest.raises(CollectionMismatchError, match="test-model.*other-model"):
        store.ensure_collection(CollectionSpec("other-model", DIM))
    with pytest.raises(CollectionMismatchError, match="size 8.*size 16"):
        store.ensure_collection(CollectionSpec("test-model", 16))


def test_malformed_raw_filter_is_a_filter_error(make_store):
    store = make_store()
    store.ensure_collection(SPEC)
    store.upsert(points(4))
    with pytest.raises(FilterError):
        store.search(SearchRequest(vector=vector(1), filter={"must": [{"key": "year", "range": {"between": 1}}]}))


def test_write_batches_are_sized_by_bytes():
    heavy = [PointRecord(str(i), {"image": np.zeros(512, np.float32)}, {"blob": "x" * 100_000}) for i in range(50)]
    chunks = list(chunk_by_bytes(heavy, max_bytes=1_000_000, max_count=1000))
    assert sum(len(c) for c in chunks) == 50
    assert all(len(c) <= 9 for c in chunks) and len(chunks) >= 6


def in_another_process(script: str):
    """Run ``script`` in a fresh Python process (the embedded store locks per process)."""
    import subprocess
    import sys
    import textwrap

    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=60, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_embedded_store_open_in_another_process_is_a_clear_error(tmp_path):
    store = QdrantEdgeStore("locked", data_dir=tmp_path)
    store.ensure_collection(SPEC)
    store.upsert(points(2))
    out = in_another_process(f"""
        from mmindex.connectors.qdrant_edge import QdrantEdgeStore
        from mmindex.errors import StoreError
        try:
            QdrantEdgeStore("locked", data_dir={str(tmp_path)!r}).count()
        except StoreError as e:
            print("ERR", e)
    """)
    store.close()
    assert "open in another process" in out.stdout, out.stderr


def test_a_run_refused_by_the_lock_leaves_the_metadata_untouched(tmp_path):
    """Another process holds the store: the new run's payload types must not be recorded."""
    store = QdrantEdgeStore("held", data_dir=tmp_path)
    store.ensure_collection(SPEC)
    store.upsert(points(2))
    metadata = (tmp_path / "held" / "collection.json").read_bytes()
    out = in_another_process(f"""
        from mmindex.connectors.base import CollectionSpec
        from mmindex.connectors.qdrant_edge import QdrantEdgeStore
        from mmindex.errors import StoreError
        try:
            QdrantEdgeStore("held", data_dir={str(tmp_path)!r}).ensure_collection(
                CollectionSpec({SPEC.model!r}, {SPEC.dim}, {{"new_field": "keyword"}}))
        except StoreError as e:
            print("ERR", e)
    """)
    store.close()
    assert "open in another process" in out.stdout, out.stderr
    assert (tmp_path / "held" / "collection.json").read_bytes() == metadata


def test_missing_collection_reads_are_store_errors(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        QdrantEdgeStore("nothing", data_dir=tmp_path).info()


def test_bulk_load_defers_indexing_and_restores_it():
    store = QdrantServerStore("bulk", url=":memory:", bulk_load=True)
    store.ensure_collection(SPEC)
    before = store.client.get_collection("bulk").config.optimizer_config.indexing_threshold
    store.begin_load()
    assert store._metadata()["indexing_threshold_before_load"] == before
    store.upsert(points(10))
    store.finish()
    assert "indexing_threshold_before_load" not in store._metadata()
    assert store.client.get_collection("bulk").config.optimizer_config.indexing_threshold == before
    assert store.count() == 10
    store.close()


def test_parallel_writes_land_every_point(tmp_path):
    from qdrant_client import QdrantClient

    # A local on-disk client is not thread-safe, so the store sends one request at a time there;
    # with a server (client given), requests go out in parallel.
    store = QdrantServerStore("par", url=":memory:", parallel_writes=4)
    assert store.parallel_writes == 1
    class Serialized:
        """A real local client behind a lock (local mode itself is not thread-safe)."""

        def __init__(self, client):
            self.client, self.in_flight, self.most = client, 0, 0
            self.lock, self.count_lock = threading.Lock(), threading.Lock()

        def __getattr__(self, name):
            method = getattr(self.client, name)

            def call(*args, **kwargs):
                with self.count_lock:
                    self.in_flight += 1
                    self.most = max(self.most, self.in_flight)
                try:
                    time.sleep(0.05)  # a request's network time, during which others can start
                    with self.lock:
                        return method(*args, **kwargs)
                finally:
                    with self.count_lock:
                        self.in_flight -= 1

            return call

    served = QdrantServerStore("par", client=Serialized(QdrantClient(":memory:")), parallel_writes=4)
    assert served.parallel_writes == 4
    served.ensure_collection(SPEC)
    many = points(40)
    import mmindex.connectors.qdrant_server as server_module

    original = server_module.chunk_by_bytes
    server_module.chunk_by_bytes = lambda pts: original(pts, max_count=5)  # 8 requests
    try:
        served.upsert(many)
    finally:
        server_module.chunk_by_bytes = original
    assert served.count() == 40
    assert served.client.most > 1  # requests really were in flight together
    store.close(), served.close()


@pytest.mark.parametrize("text", ["{garbage", '{"x": 1}', "[]"])
def test_a_damaged_collection_record_is_a_store_error(tmp_path, text):
    """A collection.json that is not a record (hand-edited, half-written by another tool) is one clear
    StoreError, which the service answers as 503, never a JSONDecodeError or KeyError (500)."""
    store = QdrantEdgeStore("c", data_dir=tmp_path)
    store.ensure_collection(SPEC)
    store.close()
    (tmp_path / "c" / "collection.json").write_text(text)
    with pytest.raises(StoreError, match="collection.json"):
        QdrantEdgeStore("c", data_dir=tmp_path).spec()
