"""mmindex: image + caption embeddings from Parquet into Qdrant, and cross-modal search.

The public Python API; the ``mmindex`` command is a thin skin over it::

    from mmindex import Encoder, open_store, ingest, search

    store = open_store("photos")                       # embedded Qdrant Edge under ./mmindex_data
    encoder = Encoder("clip-ViT-B-32")                 # or a local model folder
    summary = ingest(["data/*.parquet"], store, encoder)
    hits = search(store, encoder.encode_texts(["a dog on a beach"])[0], target="image",
                  where="year >= 2020", limit=5)

Subpackages: ``mmindex.pipeline`` (the ingest and query flow) and ``mmindex.connectors`` (the
vector stores). In the source tree they are the top-level folders ``pipeline/`` and
``connectors/``, mapped under this name by ``pyproject.toml``, so an installed mmindex puts only
``mmindex`` into site-packages. Heavy imports (torch, sentence-transformers, the Qdrant engines)
happen only when a name that needs them is used.
"""
from __future__ import annotations

import importlib
import os
from typing import Any

__version__ = "0.1.0"

# In a source checkout this folder's siblings pipeline/ and connectors/ are the subpackages.
# An editable install maps them; this also covers Python started in a checkout over a regular
# install (the Docker image's /app), where ./mmindex shadows the installed package.
_here = os.path.dirname(os.path.abspath(__file__))
_checkout = os.path.dirname(_here)
if not os.path.isdir(os.path.join(_here, "pipeline")) and all(
        os.path.isfile(os.path.join(_checkout, *parts)) for parts in (("pipeline", "cli", "__init__.py"),
                                                                       ("connectors", "base.py"))):
    __path__.append(_checkout)  # type: ignore[name-defined]  # noqa: F821 - a package's own __path__
del _here, _checkout

# Public name → the module that owns it. Resolved on first use (PEP 562), so that
# `import mmindex` stays light and the connectors can import `mmindex.errors` freely.
_EXPORTS = {
    "DEFAULT_DATA_DIR": "mmindex.connectors",
    "open_store": "mmindex.connectors",
    "CollectionOptions": "mmindex.connectors",
    "Store": "mmindex.connectors",
    "DEFAULT_MODEL": "mmindex.pipeline.models.identity",
    "Encoder": "mmindex.pipeline.models.encoder",
    "CollectionMismatchError": "mmindex.errors",
    "FilterError": "mmindex.errors",
    "InputError": "mmindex.errors",
    "MmindexError": "mmindex.errors",
    "ModelError": "mmindex.errors",
    "StoreError": "mmindex.errors",
    "Rejection": "mmindex.pipeline.ingest.images",
    "UsageError": "mmindex.errors",
    "IngestOptions": "mmindex.pipeline.ingest.options",
    "IngestSummary": "mmindex.pipeline.ingest.summary",
    "ingest": "mmindex.pipeline.ingest.run",
    "IngestJob": "mmindex.pipeline.ingest.job",
    "StoreSettings": "mmindex.pipeline.config",
    "run_ingest_job": "mmindex.pipeline.ingest.job",
    "ModelChoice": "mmindex.pipeline.models.identity",
    "Runtime": "mmindex.pipeline.models.encoder",
    "QueryRequest": "mmindex.pipeline.query.queries",
    "run_queries": "mmindex.pipeline.query.queries",
    "compile_filter": "mmindex.pipeline.query.filters",
    "describe": "mmindex.pipeline.collection.info",
    "evaluate_models": "mmindex.pipeline.training.evaluate",
    "Hit": "mmindex.pipeline.query.hits",
    "SearchOptions": "mmindex.pipeline.query.plan",
    "parse_where": "mmindex.pipeline.query.where",
    "validate_filter": "mmindex.pipeline.query.where",
    "search": "mmindex.pipeline.query.search",
    "facets": "mmindex.pipeline.query.facets",
    "Facet": "mmindex.pipeline.query.facets",
    "keyword_query": "mmindex.pipeline.query.keywords",
    "keyword_document": "mmindex.pipeline.query.keywords",
    "KeywordSettings": "mmindex.pipeline.query.keywords",
    "backfill_keywords": "mmindex.pipeline.collection.keywords",
    "KeywordsSummary": "mmindex.pipeline.collection.keywords",
    "copy_collection": "mmindex.pipeline.collection.copy",
    "CopySummary": "mmindex.pipeline.collection.copy",
    "delete": "mmindex.pipeline.collection.delete",
    "select_points": "mmindex.pipeline.collection.delete",
    "find_duplicates": "mmindex.pipeline.duplicates.find",
    "DuplicatesReport": "mmindex.pipeline.duplicates.find",
    "DuplicateGroup": "mmindex.pipeline.duplicates.find",
    "Thresholds": "mmindex.pipeline.duplicates.evidence",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mmindex' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = sorted(_EXPORTS) + ["__version__"]
