"""Engine-neutral queries (``connectors/queries.py``) → qdrant-client's Query API models."""
from __future__ import annotations

from typing import Any

from mmindex.connectors.queries import (
    Fusion,
    Nearest,
    Prefetch,
    Query,
    Recommend,
    Rescore,
    SearchParams,
    SparseVector,
)


def _models():
    # qdrant-client (pydantic models, ~0.5 s): loaded when a server store opens or a raw filter is checked
    from qdrant_client import models

    return models


def server_vector(vector: Any):
    """A dense vector (any sequence of numbers) as a list of floats, or a ``SparseVector`` as qdrant-client's."""
    if isinstance(vector, SparseVector):
        return _models().SparseVector(indices=[int(i) for i in vector.indices],
                                      values=[float(v) for v in vector.values])
    if hasattr(vector, "tolist"):
        return [float(x) for x in vector.tolist()]
    return [float(x) for x in vector]


def server_query(query: Query) -> tuple[Any, str | None]:
    """One query node as qdrant-client's query model, and the named vector it uses (None for fusion, formula)."""
    models = _models()
    if isinstance(query, Nearest):
        return models.NearestQuery(nearest=server_vector(query.vector)), query.using
    if isinstance(query, Recommend):
        strategy = (models.RecommendStrategy.BEST_SCORE if query.strategy == "best_score"
                    else models.RecommendStrategy.SUM_SCORES)
        return models.RecommendQuery(recommend=models.RecommendInput(
            positive=[server_vector(v) for v in query.positives],
            negative=[server_vector(v) for v in query.negatives], strategy=strategy)), query.using
    if isinstance(query, Fusion):
        if query.method == "rrf":
            return models.RrfQuery(rrf=models.Rrf(k=int(query.k))), None
        return models.FusionQuery(fusion=models.Fusion.DBSF), None
    if isinstance(query, Rescore):
        from mmindex.connectors.server_formula import server_formula  # only rescoring requests need it

        return server_formula(query.formula, query.defaults), None
    raise TypeError(f"not a query node: {query!r}")


def server_params(params: SearchParams, quantized: bool, local: bool):
    """qdrant-client's search parameters (None in local mode, which searches exactly and takes none)."""
    if local:
        return None
    models = _models()
    return models.SearchParams(
        hnsw_ef=params.hnsw_ef, exact=params.exact,
        # Quantized vectors find candidates; the original vectors rank them.
        quantization=models.QuantizationSearchParams(rescore=True, oversampling=params.oversampling)
        if quantized else None,
    )


def server_prefetch(leg: Prefetch, params: SearchParams, quantized: bool, local: bool, to_filter):
    """One prefetch leg, with its own legs, as qdrant-client's ``Prefetch``; ``to_filter`` validates filters."""
    query, using = server_query(leg.query)
    return _models().Prefetch(
        query=query, using=using, limit=int(leg.limit), filter=to_filter(leg.filter),
        prefetch=[server_prefetch(inner, params, quantized, local, to_filter) for inner in leg.prefetch] or None,
        params=server_params(params, quantized, local), score_threshold=leg.score_threshold,
    )
