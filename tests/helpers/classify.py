"""Plain helpers of the classify tests: the label lists of the sample, opening either store, reading payloads."""
from __future__ import annotations

from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.qdrant_server import QdrantServerStore

SHAPES = ["circle", "square", "triangle", "star", "hexagon", "diamond", "cross", "ring"]
COLORS = ["red", "green", "blue", "yellow", "purple"]


def open_store(kind: str, name: str, folder):
    """Collection ``name`` of the embedded store under ``folder`` (``edge``) or of an in-memory server."""
    return QdrantEdgeStore(name, data_dir=str(folder)) if kind == "edge" else QdrantServerStore(name, url=":memory:")


def all_payloads(store, filter=None) -> dict:
    """Point id → payload of every point ``filter`` matches."""
    found, cursor = {}, None
    while True:
        points, cursor = store.scroll(filter, limit=256, offset=cursor)
        found.update((p.id, p.payload) for p in points)
        if cursor is None:
            return found
