"""``--diversity``: maximal marginal relevance over an explicit pool of candidates the engine ranks.

The engine finds the candidates — each leg's best ``pool`` points under the filter, in one exact order (score, then
id: ``ranking``) — and mmindex picks among them. Qdrant's own MMR (both engines have one) picks among candidates of
equal marginal relevance (the same photo stored twice) in its own order, which on Qdrant Edge changed from call to
call: pages repeated hits and the two stores disagreed. Here every tie is broken the same way, so a search gives one
order on every call and every store, and each page is a slice of it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from mmindex.connectors.base import ScoredPoint, SearchRequest, Store
from mmindex.connectors.queries import Fusion, Query
from mmindex.pipeline.query.ranking import FUSED_TOLERANCE, ranking


def diverse_ranking(store: Store, legs: Sequence[Query], anchor: Sequence[float], using: str, diversity: float,
                    pool: int, size: int, query_filter: dict | None, params: dict) -> list[ScoredPoint]:
    """The first ``size`` picks of MMR (Carbonell and Goldstein, SIGIR 1998, as Qdrant states it): one by one, the
    candidate maximising (1 − diversity) · sim(anchor, p) − diversity · max sim(p, picked), sim the cosine of the
    ``using`` vectors; ties go to the more relevant, then to the smaller id. Candidates: the union of each leg's
    best ``pool`` points among those ``query_filter`` keeps. Each pick's score is its similarity to ``anchor``
    (as the engines report it). ``anchor``: (dim,); returns at most ``size`` points, in the order of picking.
    """
    ids: list[str] = []
    for leg in legs:
        tolerance = FUSED_TOLERANCE if isinstance(leg, Fusion) else 0.0

        def request(n: int, leg=leg) -> SearchRequest:
            return SearchRequest(query=leg, filter=query_filter, limit=n, with_payload=False, **params)

        ids.extend(point.id for point in ranking(store, request, pool, tolerance=tolerance)[:pool])
    ids = sorted(set(ids))
    stored = {point.id: point.vectors for point in store.retrieve(ids, with_vectors=True)} if ids else {}
    ids = [i for i in ids if stored.get(i) and using in stored[i]]
    if not ids:
        return []
    vectors = np.asarray([stored[i][using] for i in ids], dtype=np.float64)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    query = np.asarray(anchor, dtype=np.float64)
    relevance = vectors @ (query / max(float(np.linalg.norm(query)), 1e-12))
    return [ScoredPoint(ids[i], float(relevance[i]), {}) for i in picks(vectors, relevance, diversity, size)]


def picks(vectors: np.ndarray, relevance: np.ndarray, diversity: float, size: int) -> list[int]:
    """Greedy MMR over unit ``vectors`` (n, dim) with ``relevance`` (n,): the indexes of the first ``size`` picks.
    Among equal marginal relevance the more relevant wins, then the lower index (candidates come in id order)."""
    order = np.lexsort((np.arange(len(relevance)), -relevance))  # by relevance, then index
    chosen: list[int] = []
    redundancy = np.full(len(relevance), -np.inf)
    left = np.ones(len(relevance), dtype=bool)
    for _ in range(min(size, len(relevance))):
        penalty = np.where(np.isfinite(redundancy), redundancy, 0.0)
        marginal = (1.0 - diversity) * relevance - diversity * penalty
        candidates = order[left[order]]
        best = candidates[int(np.argmax(marginal[candidates]))]  # argmax keeps the first of equal values
        chosen.append(int(best))
        left[best] = False
        redundancy = np.maximum(redundancy, vectors @ vectors[best])
    return chosen
