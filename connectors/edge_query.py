"""Engine-neutral queries and filters (``connectors/queries.py``, Qdrant filter JSON) → Qdrant Edge objects."""
from __future__ import annotations

import json
import uuid
from typing import Any

import numpy as np

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
from mmindex.errors import FilterError


def _edge():
    # Imported lazily so that `import mmindex` stays light.
    import qdrant_edge

    return qdrant_edge


# -- Qdrant filter JSON → Edge objects ------------------------------------------------
def edge_filter(spec: dict[str, Any] | None):
    """Translate a Qdrant filter (REST JSON form) into qdrant_edge objects; ``FilterError`` if it cannot be.

    Filters are checked against Qdrant's schema before they get here (``pipeline/query/where.py``);
    what the binding still refuses becomes a ``FilterError`` too, never another exception.
    """
    try:
        return _edge_filter(spec)
    except (ValueError, TypeError, OverflowError, KeyError) as error:
        if isinstance(error, FilterError):
            raise
        raise FilterError(f"the embedded store cannot use this filter: {type(error).__name__}: "
                          f"{str(error).splitlines()[0] if str(error) else ''}") from error


def _edge_filter(spec: dict[str, Any] | None):
    if not spec:
        return None
    if not isinstance(spec, dict):
        raise FilterError(f"a filter must be a JSON object, got {type(spec).__name__}")
    qe = _edge()
    unknown = set(spec) - {"must", "should", "must_not", "min_should"}
    if unknown:
        raise FilterError(f"unknown filter clause(s): {', '.join(sorted(unknown))}")
    parts = {}
    for clause in ("must", "should", "must_not"):
        conditions = spec.get(clause)
        if conditions is None:
            continue
        if isinstance(conditions, dict):
            conditions = [conditions]
        parts[clause] = [_edge_condition(c) for c in conditions]
    if "min_should" in spec:
        ms = spec["min_should"]
        parts["min_should"] = qe.MinShould([_edge_condition(c) for c in ms["conditions"]], int(ms["min_count"]))
    return qe.Filter(**parts)


def _edge_condition(cond: dict[str, Any]):
    qe = _edge()
    if not isinstance(cond, dict):
        raise FilterError(f"a filter condition must be a JSON object, got {cond!r}")
    if {"must", "should", "must_not"} & set(cond):
        return _edge_filter(cond)
    if "has_id" in cond:
        return qe.HasIdCondition({_point_id(i) for i in cond["has_id"]})
    if "is_empty" in cond:
        return qe.IsEmptyCondition(cond["is_empty"]["key"])
    if "is_null" in cond:
        return qe.IsNullCondition(cond["is_null"]["key"])
    if "nested" in cond:
        return qe.NestedCondition(cond["nested"]["key"], _edge_filter(cond["nested"]["filter"]))
    if "key" not in cond:
        raise FilterError(f"unsupported filter condition: {json.dumps(cond)}")
    key = cond["key"]
    if "match" in cond:
        return qe.FieldCondition(key=key, match=_edge_match(cond["match"], key))
    if "range" in cond:
        bounds = {k: v for k, v in cond["range"].items() if v is not None}
        if not bounds or set(bounds) - {"gt", "gte", "lt", "lte"}:
            raise FilterError(f"range on {key!r} needs gt/gte/lt/lte bounds, got {cond['range']!r}")
        if any(isinstance(v, str) for v in bounds.values()):
            return qe.FieldCondition(key=key, range=qe.RangeDateTime(**{k: str(v) for k, v in bounds.items()}))
        return qe.FieldCondition(key=key, range=qe.RangeFloat(**{k: float(v) for k, v in bounds.items()}))
    if "values_count" in cond:
        return qe.FieldCondition(key=key, values_count=qe.ValuesCount(**cond["values_count"]))
    raise FilterError(f"unsupported condition on {key!r}: {json.dumps(cond)}")


def _edge_match(match: dict[str, Any], key: str):
    qe = _edge()
    if "value" in match:
        value = match["value"]
        if isinstance(value, bool):
            # qdrant-edge reads a Python bool as the integer 0 or 1 (bool is an int subclass and its
            # binding tries integers first), so `ok = true` matched nothing; numpy's bool is taken as one.

            value = np.bool_(value)
        return qe.MatchValue(value)
    if "any" in match:
        return qe.MatchAny(list(match["any"]))
    if "except" in match:
        return qe.MatchExcept(list(match["except"]))
    if "text" in match:
        return qe.MatchText(match["text"])
    if "phrase" in match:
        return qe.MatchPhrase(match["phrase"])
    raise FilterError(f"unsupported match on {key!r}: {json.dumps(match)}")


def _point_id(value: Any):
    if isinstance(value, int):
        return value
    return uuid.UUID(str(value))


# -- queries → Edge objects ------------------------------------------------------------
def edge_vector(vector: Any):
    """A dense vector (any sequence of numbers) as a list of floats, or a ``SparseVector`` as Edge's."""
    if isinstance(vector, SparseVector):
        return _edge().SparseVector([int(i) for i in vector.indices], [float(v) for v in vector.values])
    if hasattr(vector, "tolist"):
        return [float(x) for x in vector.tolist()]
    return [float(x) for x in vector]


def edge_query(query: Query):
    """One query node as Edge's ``Query`` / ``Fusion`` / ``Formula``."""
    qe = _edge()
    if isinstance(query, Nearest):
        return qe.Query.Nearest(edge_vector(query.vector), using=query.using)
    if isinstance(query, Recommend):
        examples = qe.RecommendQuery([edge_vector(v) for v in query.positives],
                                     [edge_vector(v) for v in query.negatives])
        kind = qe.Query.RecommendBestScore if query.strategy == "best_score" else qe.Query.RecommendSumScores
        return kind(examples, using=query.using)
    if isinstance(query, Fusion):
        return qe.Fusion.Rrf(k=int(query.k)) if query.method == "rrf" else qe.Fusion.Dbsf()
    if isinstance(query, Rescore):
        from mmindex.connectors.edge_formula import edge_formula  # only rescoring requests need it

        return edge_formula(query.formula, query.defaults)
    raise TypeError(f"not a query node: {query!r}")


def edge_params(params: SearchParams, quantized: bool):
    """Edge's search parameters; on a quantized collection the full vectors rescore the candidates."""
    qe = _edge()
    return qe.SearchParams(
        hnsw_ef=params.hnsw_ef, exact=params.exact,
        quantization=qe.QuantizationSearchParams(rescore=True, oversampling=params.oversampling)
        if quantized else None,
    )


def edge_prefetch(leg: Prefetch, params: SearchParams, quantized: bool):
    """One prefetch leg, with its own legs, as Edge's ``Prefetch``."""
    return _edge().Prefetch(
        int(leg.limit), query=edge_query(leg.query),
        prefetches=[edge_prefetch(inner, params, quantized) for inner in leg.prefetch] or None,
        params=edge_params(params, quantized), filter=edge_filter(leg.filter),
        score_threshold=leg.score_threshold,
    )
