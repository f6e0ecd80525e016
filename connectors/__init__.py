"""Vector stores behind one small interface (see ``mmindex.connectors.base.Store``); imported as ``mmindex.connectors``."""
from __future__ import annotations

import os

from mmindex.connectors.base import (
    CollectionInfo,
    CollectionOptions,
    CollectionSpec,
    PointRecord,
    ScoredPoint,
    SearchRequest,
    Store,
    StoredPoint,
)
from mmindex.connectors.qdrant_edge import QdrantEdgeStore

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
    ca_cert: str | None = None,
    options: CollectionOptions | None = None,
) -> Store:
    """Open ``collection`` on a Qdrant server when ``url`` is given, else on embedded Qdrant Edge.

    Server calls that fail transiently are retried ``retries`` times with exponential backoff
    starting at ``retry_wait`` seconds (with jitter); each request times out after ``timeout`` s.
    ``options`` lay out a collection this store creates (both stores; shards and replicas only
    on a server); ``ca_cert`` is a PEM file of a private CA for https:// and gRPC over TLS.
    """
    if url:
        # httpx and qdrant-client load with it (~0.1-0.5 s): only a server store needs them
        from mmindex.connectors.qdrant_server import QdrantServerStore, RetryPolicy

        return QdrantServerStore(collection, url=url, api_key=api_key, prefer_grpc=prefer_grpc,
                                 parallel_writes=parallel_writes, bulk_load=bulk_load, timeout=timeout,
                                 retry=RetryPolicy(retries=retries, wait=retry_wait), options=options,
                                 ca_cert=ca_cert)

    return QdrantEdgeStore(collection, data_dir=data_dir, options=options)


__all__ = [
    "CollectionInfo",
    "CollectionOptions",
    "CollectionSpec",
    "PointRecord",
    "ScoredPoint",
    "SearchRequest",
    "Store",
    "StoredPoint",
    "open_store",
    "DEFAULT_DATA_DIR",
]
