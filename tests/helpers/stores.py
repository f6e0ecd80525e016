"""Reading a whole embedded collection back, for tests that compare end states (after kills, syncs, copies)."""
from __future__ import annotations

from mmindex.connectors.qdrant_edge import QdrantEdgeStore


def stored_payloads(data_dir, name: str) -> dict:
    """Point id → payload of every point of collection ``name`` in the Edge store under ``data_dir``."""
    store = QdrantEdgeStore(name, data_dir=data_dir)
    try:
        found, offset = {}, None
        while True:
            page, offset = store.scroll(limit=256, offset=offset)
            found.update((p.id, p.payload) for p in page)
            if offset is None:
                return found
    finally:
        store.close()
