"""Cross-modal search: filters (``pipeline/query/where.py``) and a query vector in, typed hits out.

``search`` looks up one named vector (``image`` or ``text``) or both, fused by reciprocal
rank; ``Hit`` is what users see of a point.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from mmindex.connectors.base import SearchRequest, Store
from mmindex.errors import FilterError, UsageError, StoreError
from mmindex.pipeline.query.filters import compile_filter


@dataclass
class Hit:
    """One search result as users see it."""

    id: str
    score: float
    caption: str | None
    payload: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)
    has_thumbnail: bool = False  # a thumbnail is stored with the point (ingest --thumbnails)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "caption": self.caption,
                "payload": self.payload, "source": self.source}


RRF_K = 60
FUSION_DEPTH = 1000  # candidates per vector that target "both" fuses


def search(
    store: Store,
    vector: Sequence[float],
    target: str = "image",
    where: str | None = None,
    filter_json: dict[str, Any] | None = None,
    limit: int = 10,
    offset: int = 0,
    score_threshold: float | None = None,
    exact: bool = False,
    hnsw_ef: int | None = None,
    oversampling: float = 2.0,
    fusion_depth: int = FUSION_DEPTH,
) -> list[Hit]:
    """Nearest points to ``vector`` among the collection's ``target`` vectors, filtered.

    ``target`` is ``image``, ``text``, or ``both``: both vector sets are searched and the two
    rankings fused by reciprocal rank fusion (score = Σ 1 / (60 + rank); Cormack, Clarke and
    Büttcher, SIGIR 2009), so a point that is near as an image *and* as a caption comes first.
    Fusion ranks the top ``fusion_depth`` candidates of each list whatever the page, so pages
    are slices of one ranking (page 2 of 10 is hits 11–20 of a limit-20 search);
    ``offset + limit`` must not exceed it (FilterError); ``limit`` ≥ 1 and ``offset`` ≥ 0 (UsageError). ``exact``
    searches by brute force (to
    check the index's recall); ``hnsw_ef`` widens the index search; on a quantized
    collection ``oversampling`` × ``limit`` candidates are rescored with the full vectors.
    """
    if target not in TARGETS:
        raise FilterError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    check_page(limit, offset)
    spec = store.spec()
    if spec is None:
        raise StoreError(f"collection {store.collection!r} does not exist; ingest into it first")
    query_filter = compile_filter(where, filter_json, field_types=spec.payload_types, origin="filter")

    def request(using: str, size: int, skip: int, payload: bool = True) -> SearchRequest:
        return SearchRequest(vector=vector, using=using, filter=query_filter, limit=size, offset=skip,
                             score_threshold=score_threshold, exact=exact, hnsw_ef=hnsw_ef, oversampling=oversampling,
                             with_payload=payload)

    if target != "both":
        # Candidates by score, then by id among equal scores: pages are slices of one ranking even
        # where scores tie (the engine breaks ties its own way, which can differ from page to page).
        ranked = sorted(store.search(request(target, offset + limit, 0, payload=False)), key=lambda p: (-p.score, p.id))
        page = ranked[offset:offset + limit]
        payloads = {p.id: p.payload for p in store.retrieve([p.id for p in page])} if page else {}
        return [_hit(p.id, p.score, payloads.get(p.id, {})) for p in page]
    if offset + limit > fusion_depth:
        raise FilterError(f"target both ranks the top {fusion_depth:,} candidates of each vector: offset + limit "
                          f"({offset + limit:,}) must be at most {fusion_depth:,}")
    rankings = [store.search(request(using, fusion_depth, 0, payload=False)) for using in ("image", "text")]
    page = fuse(rankings)[offset:offset + limit]
    payloads = {p.id: p.payload for p in store.retrieve([hit.id for hit in page])} if page else {}
    return [_with_payload(hit, payloads.get(hit.id, {})) for hit in page]

TARGETS = ("image", "text", "both")


def check_page(limit: int, offset: int) -> None:
    """A page of results: ``limit`` ≥ 1 hits from rank ``offset`` + 1 (``offset`` ≥ 0); UsageError otherwise."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise UsageError(f"limit must be a whole number of at least 1, not {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise UsageError(f"offset must be a whole number of at least 0, not {offset!r}")


def fuse(rankings: Sequence[Sequence[Any]]) -> list[Hit]:
    """Reciprocal rank fusion of several result lists of scored points."""
    scores: dict[str, float] = {}
    points: dict[str, Any] = {}
    for ranking in rankings:
        for rank, point in enumerate(ranking, start=1):
            scores[point.id] = scores.get(point.id, 0.0) + 1.0 / (RRF_K + rank)
            points.setdefault(point.id, point)
    ordered = sorted(scores, key=lambda pid: (-scores[pid], pid))
    hits = []
    for point_id in ordered:
        hit = _hit(point_id, 0.0, points[point_id].payload)
        hit.score = round(scores[point_id], 6)
        hits.append(hit)
    return hits


def _with_payload(hit: Hit, payload: dict[str, Any]) -> Hit:
    """A fused hit (found without its payload) with the payload read by id."""
    return _hit(hit.id, hit.score, payload)


def _hit(point_id: str, score: float, payload: dict[str, Any] | None) -> Hit:
    payload = dict(payload or {})
    payload.pop("_hash", None)
    has_thumbnail = payload.pop("_thumbnail", None) is not None
    source = payload.pop("_source", None) or {}
    caption = payload.pop("caption", None)
    return Hit(point_id, score, caption, payload, source, has_thumbnail)
