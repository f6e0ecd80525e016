"""The server store (qdrant-client): bulk loads defer indexing, parallel writes, and a key over plain
http:// is warned about."""
from __future__ import annotations

import threading
import time

import pytest

from mmindex.connectors.qdrant_server import QdrantServerStore
from helpers.congruence import SPEC, points


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


def test_the_server_store_warns_about_a_key_over_plain_http():
    from mmindex.connectors.qdrant_server import QdrantServerStore

    with pytest.warns(UserWarning, match="over plain http://"):
        QdrantServerStore("c", url="http://10.0.0.5:6333", api_key="k").close()
