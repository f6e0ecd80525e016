"""mmindex: image + caption embeddings from Parquet into Qdrant, and cross-modal search.

A small library API; the ``mmindex`` command is a thin skin over it::

    from pipeline import Encoder, open_store, ingest, search

    store = open_store("photos")                       # embedded Qdrant Edge under ./mmindex_data
    encoder = Encoder("clip-ViT-B-32")                 # or a local model folder
    summary = ingest(["data/*.parquet"], store, encoder)
    hits = search(store, encoder.encode_texts(["a dog on a beach"])[0], target="image",
                  where="year >= 2020", limit=5)

Heavy imports (torch, sentence-transformers, the Qdrant engines) happen only when used.
"""
from __future__ import annotations

import importlib
from typing import Any

# Public name → the module that owns it. Resolved on first use (PEP 562), so that
# `import pipeline` stays light and `connectors` can import `pipeline.errors` freely.
_EXPORTS = {
    "DEFAULT_DATA_DIR": "connectors",
    "open_store": "connectors",
    "DEFAULT_MODEL": "pipeline.encoder",
    "Encoder": "pipeline.encoder",
    "CollectionMismatchError": "pipeline.errors",
    "FilterError": "pipeline.errors",
    "InputError": "pipeline.errors",
    "MmindexError": "pipeline.errors",
    "ModelError": "pipeline.errors",
    "StoreError": "pipeline.errors",
    "Rejection": "pipeline.images",
    "IngestOptions": "pipeline.ingestion",
    "IngestSummary": "pipeline.ingestion",
    "ingest": "pipeline.ingestion",
    "Hit": "pipeline.query",
    "parse_where": "pipeline.query",
    "search": "pipeline.query",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = sorted(_EXPORTS)
