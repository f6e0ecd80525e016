"""A real Qdrant server for the tests that need one: QDRANT_URL (and QDRANT_API_KEY);
`needs_server` marks them, and skips them with the reason when it is not set."""
from __future__ import annotations

import os
import uuid

import pytest

from mmindex.connectors.qdrant_server import QdrantServerStore


URL = os.environ.get("QDRANT_URL")
KEY = os.environ.get("QDRANT_API_KEY")


needs_server = [pytest.mark.server,
                pytest.mark.skipif(not URL, reason="QDRANT_URL not set: no real Qdrant server to test against")]


def temporary_collection():
    """A fresh collection name on the server, deleted again afterwards (use with ``yield from``)."""
    collection = f"mmindex-test-{uuid.uuid4().hex[:10]}"
    yield collection
    store = QdrantServerStore(collection, url=URL, api_key=KEY)
    if store.exists():
        store.client.delete_collection(collection)
    store.close()
