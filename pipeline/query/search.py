"""Cross-modal search: filters (``pipeline/query/where.py``) and a query vector in, typed hits out.

``search`` looks up one named vector (``image`` or ``text``) or both, fused by reciprocal
rank; ``Hit`` is what users see of a point.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from mmindex.connectors.base import ScoredPoint, SearchRequest, Store
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
    check_target(target, score_threshold)
    check_page(limit, offset)
    spec = store.spec()
    if spec is None:
        raise StoreError(f"collection {store.collection!r} does not exist; ingest into it first")
    query_filter = compile_filter(where, filter_json, field_types=spec.payload_types, origin="filter")

    def request(using: str, size: int) -> SearchRequest:
        return SearchRequest(vector=vector, using=using, filter=query_filter, limit=size, offset=0,
                             score_threshold=score_threshold, exact=exact, hnsw_ef=hnsw_ef, oversampling=oversampling,
                             with_payload=False)

    if target != "both":
        page = ranking(store, lambda size: request(target, size), offset + limit)[offset:offset + limit]
        payloads = {p.id: p.payload for p in store.retrieve([p.id for p in page])} if page else {}
        return [_hit(p.id, p.score, payloads.get(p.id, {})) for p in page]
    if offset + limit > fusion_depth:
        raise FilterError(f"target both ranks the top {fusion_depth:,} candidates of each vector: offset + limit "
                          f"({offset + limit:,}) must be at most {fusion_depth:,}")
    rankings = [ranking(store, lambda size, using=using: request(using, size), fusion_depth)[:fusion_depth]
                for using in ("image", "text")]
    page = fuse(rankings)[offset:offset + limit]
    payloads = {p.id: p.payload for p in store.retrieve([hit.id for hit in page])} if page else {}
    return [_hit(hit.id, hit.score, payloads.get(hit.id, {})) for hit in page]


TIE_LIMIT = 100_000  # candidates fetched at most to complete a group of equal scores at the cut


def ranking(store: Store, request: Callable[[int], SearchRequest], depth: int,
            tie_limit: int = TIE_LIMIT) -> list[ScoredPoint]:
    """The first ``depth`` points of one deterministic order — score descending, then id ascending — and after
    them every further point tied with the last one, so any slice of the first ``depth`` is exact.

    ``request(size)`` is the engine request for the best ``size`` points (offset 0). The engine keeps an
    arbitrary subset of a group of equal scores that the cut at ``size`` falls into, and that subset can change
    from call to call; ordering ties by id after the cut would make pages repeat some points and skip others
    (the bug milvus-io/milvus#44870 fixed the same way). So this asks for one point past ``depth`` and, while
    that point still ties with the cut, for twice as many, until a lower score or the end of the collection
    shows the tie group is complete. Raises StoreError when more than ``tie_limit`` points tie at the cut
    (their order could not be made exact); a filter that narrows the search avoids it.
    """
    size = depth + 1
    while True:
        points = sorted(store.search(request(size)), key=lambda p: (-p.score, p.id))
        if len(points) < size or points[-1].score < points[depth - 1].score:
            return points
        if size >= depth + tie_limit:
            raise StoreError(f"more than {tie_limit:,} points score exactly {points[depth - 1].score:g} at rank "
                             f"{depth:,}: their order cannot be made exact; narrow the search with a filter")
        size = min(size * 2, depth + tie_limit)


TARGETS = ("image", "text", "both")


def check_target(target: str, score_threshold: float | None = None) -> None:
    """``target`` is one of TARGETS (FilterError), and a ``score_threshold`` goes with one vector, never with
    ``both``, whose scores are fused ranks (UsageError: the same rule in the CLI, the Python API and HTTP)."""
    if target not in TARGETS:
        raise FilterError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    if target == "both" and score_threshold is not None:
        raise UsageError("score_threshold compares one vector's cosine score; with target both the scores are fused "
                         "ranks: search image or text to use it")


def check_page(limit: int, offset: int) -> None:
    """A page of results: ``limit`` ≥ 1 hits from rank ``offset`` + 1 (``offset`` ≥ 0); UsageError otherwise."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise UsageError(f"limit must be a whole number of at least 1, not {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise UsageError(f"offset must be a whole number of at least 0, not {offset!r}")


def fuse(rankings: Sequence[Sequence[Any]]) -> list[Hit]:
    """Reciprocal rank fusion of several result lists of scored points, each in (score, then id) order.

    A point's fused score is Σ 1 / (60 + rank) over the lists that hold it (Cormack, Clarke and Büttcher,
    SIGIR 2009), rounded to 6 decimals as shown; hits are ordered by that score, then by id.
    """
    scores: dict[str, float] = {}
    for ranked in rankings:
        for rank, point in enumerate(ranked, start=1):
            scores[point.id] = scores.get(point.id, 0.0) + 1.0 / (RRF_K + rank)
    shown = {point_id: round(score, 6) for point_id, score in scores.items()}
    return [_hit(point_id, shown[point_id], None) for point_id in sorted(shown, key=lambda pid: (-shown[pid], pid))]


def _hit(point_id: str, score: float, payload: dict[str, Any] | None) -> Hit:
    payload = dict(payload or {})
    payload.pop("_hash", None)
    has_thumbnail = payload.pop("_thumbnail", None) is not None
    source = payload.pop("_source", None) or {}
    caption = payload.pop("caption", None)
    return Hit(point_id, score, caption, payload, source, has_thumbnail)
