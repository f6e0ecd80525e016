"""The congruence suite's stores, as qdrant-client's tests/congruence_tests compare its local mode with a server:
every test that takes ``make_store`` runs once per store kind — Qdrant Edge (embedded), qdrant-client's
':memory:' local mode, and a real Qdrant server when QDRANT_URL is set (skipped otherwise, visibly) —
and ``every_store`` gives one store of each kind at once, for tests that compare their answers
(helpers.congruence.compare_store_results)."""
from __future__ import annotations

import os
import uuid

import pytest

from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.qdrant_server import QdrantServerStore

SERVER = os.environ.get("QDRANT_URL")
KINDS = [
    "edge",
    "memory",
    pytest.param("server", marks=[pytest.mark.server, pytest.mark.skipif(
        not SERVER, reason="QDRANT_URL not set: no real Qdrant server to test against")]),
]


def open_store(kind: str, collection: str, folder, client=None):
    """A store of ``kind``: Edge under ``folder``, ':memory:' on ``client`` when given (one local instance
    shared by several collections), or a fresh, uniquely named collection on the real server."""
    if kind == "edge":
        return QdrantEdgeStore(collection, data_dir=folder / "edge")
    if kind == "memory":
        return QdrantServerStore(collection, url=":memory:", client=client)
    name = f"mmindex-test-{collection}-{uuid.uuid4().hex[:8]}"
    return QdrantServerStore(name, url=SERVER, api_key=os.environ.get("QDRANT_API_KEY"))


def close_all(kind: str, stores) -> None:
    for store in stores:
        if kind == "server" and store.exists():
            store.client.delete_collection(store.collection)
        store.close()


@pytest.fixture(params=KINDS)
def store_kind(request) -> str:
    return request.param


@pytest.fixture
def make_store(store_kind, tmp_path):
    """``make(collection="things")`` opens a store of this test's kind; all are closed (server collections
    deleted) afterwards. ':memory:' stores of one test share one local instance."""
    stores = []

    def make(collection="things"):
        store = open_store(store_kind, collection, tmp_path, client=getattr(make, "client", None))
        if store_kind == "memory":
            make.client = store.client
        stores.append(store)
        return store

    yield make
    close_all(store_kind, stores)


@pytest.fixture
def every_store(tmp_path):
    """One empty store of each kind available here (Edge, ':memory:', and the server when QDRANT_URL is set)."""
    kinds = ["edge", "memory"] + (["server"] if SERVER else [])
    stores = [open_store(kind, "same", tmp_path) for kind in kinds]
    yield stores
    for kind, store in zip(kinds, stores):
        close_all(kind, [store])
