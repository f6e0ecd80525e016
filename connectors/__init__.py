"""Vector stores behind one small interface (see ``connectors.base.Store``)."""
from __future__ import annotations

import os

from connectors.base import (
    CollectionInfo,
    CollectionSpec,
    PointRecord,
    ScoredPoint,
    SearchRequest,
    Store,
    StoredPoint,
)

DEFAULT_DATA_DIR = "mmindex_data"


def open_store(
    collection: str,
    *,
    url: str | None = None,
    api_key: str | None = None,
    data_dir: str | os.PathLike = DEFAULT_DATA_DIR,
    prefer_grpc: bool = False,
    parallel_writes: int = 4,
    bulk_load: bool = False,
    retries: int = 5,
    retry_wait: float = 0.5,
    timeout: int = 60,
) -> Store:
    """Open ``collection`` on a Qdrant server when ``url`` is given, else on embedded Qdrant Edge.

    Server calls that fail transiently are retried ``retries`` times with exponential backoff
    starting at ``retry_wait`` seconds (with jitter); each request times out after ``timeout`` s.
    """
    if url:
        from connectors.qdrant_server import QdrantServerStore, RetryPolicy

        return QdrantServerStore(collection, url=url, api_key=api_key, prefer_grpc=prefer_grpc,
                                 parallel_writes=parallel_writes, bulk_load=bulk_load, timeout=timeout,
                                 retry=RetryPolicy(retries=retries, wait=retry_wait))
    from connectors.qdrant_edge import QdrantEdgeStore

    return QdrantEdgeStore(collection, data_dir=data_dir)


__all__ = [
    "CollectionInfo",
    "CollectionSpec",
    "PointRecord",
    "ScoredPoint",
    "SearchRequest",
    "Store",
    "StoredPoint",
    "open_store",
    "DEFAULT_DATA_DIR",
]
