"""Cross-modal search: filters (``pipeline/query/where.py``) and a query vector in, typed hits out.

``search`` looks up one named vector (``image`` or ``text``) or both, and the keyword vector, ranked as
``SearchOptions`` say (``pipeline/query/plan.py`` builds the engine request); ``Hit`` is what users see of a
point.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from mmindex.connectors.base import SearchRequest, Store
from mmindex.connectors.queries import OVERSAMPLING, Fusion, Rescore
from mmindex.errors import FilterError, UsageError, StoreError
from mmindex.pipeline.duplicates.collapse import collapse, collapsed_hits, collapsed_page
from mmindex.pipeline.query.cutoff import CANDIDATES, background_scores, relevant_count
from mmindex.pipeline.query.filters import combine_filters, compile_filter
from mmindex.pipeline.query.hits import Hit, hit_from
from mmindex.pipeline.query.groups import grouped
from mmindex.pipeline.query.ranking import FUSED_TOLERANCE, ranking
from mmindex.pipeline.query.diversity import diverse_ranking
from mmindex.pipeline.query.plan import (
    DEFAULT_POOL,
    DepthError,
    SearchOptions,
    build_request,
    check_threshold,
    mmr_anchor,
    vector_legs,
)


# Candidates per leg that fusion (target both, hybrid) and rescoring rank, unless told otherwise (--fusion-depth):
# the dense leg's HNSW search for 1,000 candidates costs ~15× a top-10 search (bench/README.md, section 9).
FUSION_DEPTH = 100
MAX_FUSION_DEPTH = 10_000


def search(
    store: Store,
    vector: Sequence[float] | None,
    target: str = "image",
    where: str | None = None,
    filter_json: dict[str, Any] | None = None,
    limit: int = 10,
    offset: int = 0,
    score_threshold: float | None = None,
    exact: bool = False,
    hnsw_ef: int | None = None,
    oversampling: float = OVERSAMPLING,
    fusion_depth: int = FUSION_DEPTH,
    options: SearchOptions = SearchOptions(),
) -> list[Hit]:
    """Nearest points to ``vector`` among the collection's ``target`` vectors, filtered, ranked as ``options`` say.

    ``target`` is ``image``, ``text``, or ``both``: both vector sets are searched and the two rankings fused
    inside the engine (``options.fusion``: reciprocal rank fusion, Cormack, Clarke and Büttcher, SIGIR 2009, or
    distribution-based score fusion), so a point near as an image *and* as a caption comes first. ``options``
    adds keyword and hybrid modes, examples and negatives, MMR diversity, formula boosts, groups and a relevance
    cutoff (``pipeline/query/plan.py``). Every page is a slice of one ranking: score descending, then point id
    (with ``diversity``: MMR's order of choice, ``pipeline/query/diversity.py``). Fused and rescored rankings cover the best ``fusion_depth``
    candidates of each leg, MMR the ``pool`` best: ``offset + limit`` must not exceed them (FilterError).
    ``limit`` ≥ 1 and ``offset`` ≥ 0 (UsageError); with ``group_by`` they count groups. ``exact`` searches by
    brute force (to check the index's recall); ``hnsw_ef`` widens the index search; on a quantized collection
    ``oversampling`` × ``limit`` candidates (default 4: bench/README.md §5) are rescored with the full vectors.

    Returns ``Hit`` values (id, score, caption, payload; ``group`` with ``group_by``).
    """
    check_target(target, score_threshold)
    check_page(limit, offset)
    check_threshold(options, target, score_threshold)
    spec = store.spec()
    if spec is None:
        raise StoreError(f"collection {store.collection!r} does not exist; ingest into it first")
    query_filter = compile_filter(where, filter_json, field_types=spec.payload_types, origin="filter")
    if options.exclude_ids:
        query_filter = combine_filters(query_filter, {"must_not": [{"has_id": list(options.exclude_ids)}]})
    check_fusion_depth(fusion_depth)
    check_oversampling(oversampling)
    if not options.group_by and not options.collapse_duplicates:  # these read the ranking as deep as it goes
        check_depth(vector, target, options, offset + limit, fusion_depth)
    params = dict(score_threshold=score_threshold, exact=exact, hnsw_ef=hnsw_ef, oversampling=oversampling)

    def request(size: int, with_payload: bool = False) -> SearchRequest:
        built = build_request(vector, target, options, query_filter, size, fusion_depth, params)
        built.with_payload = with_payload
        return built

    if options.cutoff == "auto":
        return relevant_page(store, request, vector, target, options, limit, offset)
    if options.diversity is not None:
        anchor, using = mmr_anchor(vector, target, options)
        picked = diverse_ranking(store, vector_legs(vector, target, options), anchor, using, float(options.diversity),
                                 options.pool or DEFAULT_POOL, offset + limit, query_filter, params)
        return with_payloads(store, picked[offset:offset + limit])
    try:
        return ranked_page(store, request, options, limit, offset, spec.payload_types)
    except StoreError as error:
        if options.boost is None or not hasattr(options.boost, "failure_hint"):
            raise
        # Qdrant Edge says only "Operation cancelled" when a formula fails on some point's data.
        # The engine's own words name the data directory: kept as the cause, not shown.
        raise FilterError(f"--boost: {options.boost.failure_hint()}") from error


def ranked_page(store: Store, request, options: SearchOptions, limit: int, offset: int,
                payload_types: dict[str, str]) -> list[Hit]:
    """Hits ``offset`` to ``offset + limit`` of the ranking ``request(size, with_payload)`` asks the engine for
    (groups of hits with ``group_by``), with their payloads."""
    top = request(1)
    tolerance = FUSED_TOLERANCE if isinstance(top.top(), Fusion) else 0.0
    bounded = isinstance(top.top(), (Fusion, Rescore))  # ranks only its legs' candidates
    if options.collapse_duplicates:
        return collapsed_page(store, request, limit, offset, tolerance=tolerance,
                              matching=(lambda: store.count(top.filter)) if bounded else None)
    if options.group_by:
        return grouped(store, request, options.group_by, options.group_size, limit, offset, payload_types,
                       tolerance=tolerance, matching=(lambda: store.count(top.filter)) if bounded else None)
    return with_payloads(store, ranking(store, request, offset + limit, tolerance=tolerance)[offset:offset + limit])


def with_payloads(store: Store, page: list) -> list[Hit]:
    """The page's points as hits, their payloads read in one request."""
    payloads = {p.id: p.payload for p in store.retrieve([p.id for p in page])} if page else {}
    return [hit_from(p.id, p.score, payloads.get(p.id, {})) for p in page]


def relevant_page(store: Store, request, vector: Sequence[float] | None, target: str, options: SearchOptions,
                  limit: int, offset: int) -> list[Hit]:
    """``--cutoff auto``: of the best max(CANDIDATES, offset + limit) hits, those ``cutoff.relevant_count`` judges
    relevant against the query's scores over a fixed sample of the collection; then the page of them."""
    leg = vector_legs(vector, target, options)[0]  # one dense leg (check_threshold): Nearest to this vector
    candidates = ranking(store, request, max(CANDIDATES, offset + limit))[:max(CANDIDATES, offset + limit)]
    if not candidates:
        return []
    kept = relevant_count([p.score for p in candidates], background_scores(store, leg.vector, leg.using))
    if options.collapse_duplicates:  # the relevant hits, collapsed: their payloads hold the signals
        payloads = {p.id: p.payload for p in store.retrieve([p.id for p in candidates[:kept]])} if kept else {}
        for point in candidates[:kept]:
            point.payload = payloads.get(point.id, {})
        return collapsed_hits(collapse(candidates[:kept]), limit, offset)
    return with_payloads(store, candidates[:kept][offset:offset + limit])


def check_fusion_depth(depth: int) -> None:
    """A fusion depth is a whole number from 1 to MAX_FUSION_DEPTH (UsageError)."""
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_FUSION_DEPTH:
        raise UsageError(f"--fusion-depth must be a whole number from 1 to {MAX_FUSION_DEPTH:,}, not {depth!r}")


def check_depth(vector: Sequence[float] | None, target: str, options: SearchOptions, wanted: int,
                fusion_depth: int) -> None:
    """FilterError when a page reaches past the candidates a fused, rescored or diversified ranking covers."""
    if options.diversity is not None:
        pool = options.pool or DEFAULT_POOL  # one pool for every page: pages are slices of one choice
        if wanted > pool:
            raise DepthError(f"--diversity chooses among the best {pool:,} candidates (--pool): offset + limit "
                              f"({wanted:,}) must be at most {pool:,} (raise --pool to page deeper)")
        return
    legs = len(vector_legs(vector, target, options))
    if (legs > 1 or options.boost is not None) and wanted > fusion_depth:
        what = "target both" if target == "both" and options.mode == "dense" else (
            f"mode {options.mode}" if legs > 1 else "--boost")
        raise DepthError(f"{what} ranks the top {fusion_depth:,} candidates of each leg: offset + limit "
                          f"({wanted:,}) must be at most {fusion_depth:,} (raise --fusion-depth, up to "
                          f"{MAX_FUSION_DEPTH:,}, to page deeper)")


TARGETS = ("image", "text", "both")


def check_target(target: str, score_threshold: float | None = None) -> None:
    """``target`` is one of TARGETS (FilterError), and a ``score_threshold`` goes with one vector, never with
    ``both``, whose scores are fused ranks (UsageError: the same rule in the CLI, the Python API and HTTP)."""
    if target not in TARGETS:
        raise FilterError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    if target == "both" and score_threshold is not None:
        raise UsageError("score_threshold compares one vector's cosine score; with target both the scores are fused "
                         "ranks: search image or text to use it")


def check_oversampling(oversampling: float) -> None:
    """Candidates per result a quantized collection rescores: a finite number of at least 1 (UsageError; NaN
    and infinity included, which a range check alone lets through)."""
    if isinstance(oversampling, bool) or not isinstance(oversampling, (int, float)) or not math.isfinite(oversampling) \
            or oversampling < 1:
        raise UsageError(f"--oversampling must be a finite number of at least 1, not {oversampling!r}")


def check_page(limit: int, offset: int) -> None:
    """A page of results: ``limit`` ≥ 1 hits from rank ``offset`` + 1 (``offset`` ≥ 0); UsageError otherwise."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise UsageError(f"limit must be a whole number of at least 1, not {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise UsageError(f"offset must be a whole number of at least 0, not {offset!r}")
