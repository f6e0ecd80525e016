"""Two collections, v1 and v2, whose points say which one they are in: for the alias tests
(tests/connectors/test_aliases.py, tests/cli/test_alias.py)."""
from __future__ import annotations

import uuid

import numpy as np

from mmindex.connectors.base import CollectionSpec, PointRecord
from mmindex.connectors.qdrant_edge import QdrantEdgeStore


DIM = 8
SPEC = CollectionSpec("m", DIM, {"v": "integer"})


def fill(store, version: int, n: int = 20) -> None:
    """``n`` points whose payload says which collection they are in."""
    rng = np.random.default_rng(version)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store.ensure_collection(SPEC)
    store.upsert([PointRecord(str(uuid.uuid5(uuid.NAMESPACE_URL, f"{version}-{i}")), {"image": v}, {"v": version})
                  for i, v in enumerate(vectors)])
    store.finish()


def write_versions(folder):
    """Collections v1 ({"v": 1}) and v2 ({"v": 2}) in one embedded store under ``folder``, closed again."""
    for version in (1, 2):
        store = QdrantEdgeStore(f"v{version}", data_dir=folder)
        fill(store, version)
        store.close()
    return folder
