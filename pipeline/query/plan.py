"""How a search is ranked, and the engine request that ranks it: dense, keyword or hybrid legs, examples and
negatives and rescoring, each turned into one query tree (``connectors/queries.py``) that the engine runs whole —
fusion, recommendation and formulas happen inside Qdrant Edge or the server, never in Python. (``--diversity``
picks among the legs' candidates in ``pipeline/query/diversity.py``.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from mmindex.connectors.queries import (
    FUSIONS,
    KEYWORDS,
    RECOMMEND_STRATEGIES,
    Fusion,
    Nearest,
    Prefetch,
    Query,
    Recommend,
    Rescore,
    SparseVector,
)
from mmindex.connectors.base import SearchRequest
from mmindex.errors import FilterError, UsageError


class DepthError(FilterError):
    """A page (or page of groups) past the candidates a ranking covers: raise ``--fusion-depth`` or ``--pool``.
    (HTTP: 400 ``window_too_large``; CLI: exit 2.)"""


MODES = ("dense", "keyword", "hybrid")
STRATEGIES = ("average_vector", *RECOMMEND_STRATEGIES)
DEFAULT_POOL = 100  # candidates MMR chooses from, unless --pool says otherwise
KEYWORD_EXAMPLES = ("--like, --unlike and --not are compared by meaning (the dense vectors): use --mode hybrid or "
                    "dense with them; keyword mode ranks only the words of a TEXT")


@dataclass(frozen=True)
class SearchOptions:
    """How hits are ranked beyond "nearest to the query vector"; the defaults are plain dense search.

    - ``mode``: ``dense`` (the CLIP vectors), ``keyword`` (BM25 over the caption and ``--text-fields``, the
      sparse ``keywords`` vector) or ``hybrid`` (both, fused by the engine).
    - ``fusion``: ``rrf`` or ``dbsf``, for target ``both`` and ``hybrid``; None: ``dbsf`` for hybrid (BM25 scores
      tie often and RRF sees only ranks: measured in docs/retrieval-quality.md, Hybrid search), ``rrf`` otherwise.
    - ``keywords``: the query's BM25 vector (``pipeline/query/keywords.py``), for keyword and hybrid modes.
    - ``positives`` / ``negatives``: example vectors to search near / away from (``--like``, ``--unlike``,
      ``--not``), combined by ``strategy``: ``average_vector`` (Qdrant's default: the query 2·mean(positives) −
      mean(negatives)), ``best_score`` or ``sum_scores`` (the engine's recommendation scores).
    - ``exclude_ids``: points never returned (the stored points given as examples).
    - ``diversity``: MMR's λ-weight of novelty in [0, 1], over each leg's ``pool`` best candidates (≥ offset + limit;
      of each leg, when the search has several).
    - ``boost``: a rescoring formula: a ``Boost`` parsed by ``pipeline/query/rescore.py`` (its ``formula``, and a
      ``failure_hint`` for a point the engine cannot score), or Qdrant formula JSON with ``boost_defaults``.
    - ``group_by`` / ``group_size``: at most ``group_size`` hits per value of a payload field; ``limit`` and
      ``offset`` then count groups.
    - ``cutoff``: ``auto`` keeps only the hits judged relevant (``pipeline/query/cutoff.py``); ``limit`` caps.
    - ``collapse_duplicates``: one hit per near-duplicate group, the best scoring, listing the others
      (``pipeline/duplicates/collapse.py``); ``limit`` and ``offset`` then count the hits shown.
    """

    mode: str = "dense"
    fusion: str | None = None
    keywords: SparseVector | None = None
    positives: tuple[tuple[float, ...], ...] = ()
    negatives: tuple[tuple[float, ...], ...] = ()
    exclude_ids: tuple[str, ...] = ()
    strategy: str = "average_vector"
    diversity: float | None = None
    pool: int | None = None
    boost: Any = None
    boost_defaults: dict[str, Any] | None = field(default=None, hash=False)
    group_by: str | None = None
    group_size: int = 1
    cutoff: str | None = None
    collapse_duplicates: bool = False

    def __post_init__(self) -> None:
        check_options(self)

    @property
    def fusion_method(self) -> str:
        """The fusion used: ``fusion``, or the default for the mode (``dbsf`` for hybrid, else ``rrf``)."""
        return self.fusion or ("dbsf" if self.mode == "hybrid" else "rrf")


def check_options(options: SearchOptions) -> None:
    """Refuse options that cannot be honoured, each with a one-line UsageError naming the option."""
    choices = (("mode", options.mode, MODES), ("fusion", options.fusion_method, FUSIONS),
               ("strategy", options.strategy, STRATEGIES))
    for name, value, allowed in choices:
        if value not in allowed:
            raise UsageError(f"--{name} must be one of {', '.join(allowed)}, not {value!r}")
    if options.diversity is not None:
        diversity = options.diversity
        if isinstance(diversity, bool) or not isinstance(diversity, (int, float)) or not 0.0 <= diversity <= 1.0:
            raise UsageError(f"--diversity must be a number from 0 to 1 (0: plain relevance), not {diversity!r}")
    if options.pool is not None and (isinstance(options.pool, bool) or not isinstance(options.pool, int)
                                     or options.pool < 1):
        raise UsageError(f"--pool must be a whole number of at least 1, not {options.pool!r}")
    if options.pool is not None and options.diversity is None:
        raise UsageError("--pool is the candidate pool of --diversity: give --diversity too")
    if isinstance(options.group_size, bool) or not isinstance(options.group_size, int) or options.group_size < 1:
        raise UsageError(f"--group-size must be a whole number of at least 1, not {options.group_size!r}")
    if options.group_by is not None and not str(options.group_by).strip():
        raise UsageError("--group-by needs a field name (it is empty)")
    if options.group_size != 1 and not options.group_by:
        raise UsageError("--group-size needs --group-by FIELD")
    if options.diversity is not None and options.boost is not None:
        raise UsageError("--diversity and --boost both reorder the hits, by different rules: use one of them")
    if options.diversity is not None and options.group_by:
        raise UsageError("--diversity and --group-by both decide which similar hits to leave out: use one of them")
    if options.mode == "keyword" and options.fusion is not None:
        raise UsageError("--fusion fuses several legs; keyword mode has one (the keyword vector): use --mode hybrid")
    if options.mode == "keyword" and (options.positives or options.negatives):
        raise UsageError(KEYWORD_EXAMPLES)
    if options.cutoff is not None and options.group_by:
        raise UsageError("--cutoff and --group-by both decide which hits to leave out: use one of them")
    if options.collapse_duplicates:
        check_collapse(options)
    if options.cutoff not in (None, "auto"):
        raise UsageError(f"--cutoff takes 'auto', not {options.cutoff!r}")


def check_collapse(options: SearchOptions) -> None:
    """``--collapse-duplicates`` decides which hits to leave out, as ``--group-by`` and ``--diversity`` do by other
    rules: one of them at a time (UsageError). With ``--cutoff auto`` it collapses the hits judged relevant."""
    if not isinstance(options.collapse_duplicates, bool):
        raise UsageError(f"--collapse-duplicates is true or false, not {options.collapse_duplicates!r}")
    for name, given in (("--group-by", options.group_by), ("--diversity", options.diversity is not None)):
        if given:
            raise UsageError(f"--collapse-duplicates and {name} both decide which similar hits to leave out: use one "
                             "of them")


def check_threshold(options: SearchOptions, target: str, score_threshold: float | None) -> None:
    """A score threshold and ``--cutoff auto`` compare one vector's cosine scores: plain dense search of one
    target (examples averaged), and nothing that replaces those scores (fusion, BM25, MMR, a formula)."""
    wanted = [name for name, value in (("--score-threshold", score_threshold), ("--cutoff", options.cutoff))
              if value is not None]
    if not wanted:
        return
    why = None
    if target == "both":
        why = "target both ranks by fused ranks"
    elif options.mode != "dense":
        why = f"mode {options.mode} ranks by {'BM25 scores' if options.mode == 'keyword' else 'fused ranks'}"
    elif options.strategy != "average_vector" and (options.positives or options.negatives):
        why = f"strategy {options.strategy} ranks by recommendation scores"
    elif options.diversity is not None:
        why = "--diversity ranks by marginal relevance"
    elif options.boost is not None:
        why = "--boost ranks by a formula"
    if why:
        raise UsageError(f"{' and '.join(wanted)} compare one vector's cosine scores, but {why}: "
                         "search one target in dense mode to use it")


def build_request(vector: Sequence[float] | None, target: str, options: SearchOptions, query_filter: dict | None,
                  size: int, depth: int, params: dict[str, Any]) -> SearchRequest:
    """The engine request for the best ``size`` points (offset 0) of this search.

    Every leg carries ``query_filter`` (and the final query too), so no leg can bring in a point the filter
    excludes. Legs that are fused or rescored keep their best ``depth`` candidates each. ``--diversity`` is not
    built here: ``pipeline/query/diversity.py`` picks among each leg's candidates.
    """
    legs = vector_legs(vector, target, options)
    base: dict[str, Any] = dict(filter=query_filter, limit=size, **params)
    if options.boost is not None:
        stage = stage_of(legs, options, query_filter, depth)
        formula = getattr(options.boost, "formula", options.boost)
        defaults = getattr(options.boost, "defaults", None) or options.boost_defaults
        return SearchRequest(query=Rescore(formula, defaults), prefetch=[stage], **base)
    if len(legs) == 1:
        return SearchRequest(query=legs[0], **base)
    return SearchRequest(query=Fusion(options.fusion_method),
                         prefetch=[Prefetch(leg, depth, filter=query_filter) for leg in legs], **base)


def stage_of(legs: list[Query], options: SearchOptions, query_filter: dict | None, limit: int) -> Prefetch:
    """The legs as one prefetch stage: the leg's best ``limit`` candidates, or the fusion of each leg's best
    ``limit``, all of them (the fusion is not cut: fused ranks tie often, rank r in one leg alone with rank r in
    another alone, and an engine keeps an arbitrary part of a tie group at a cut — Qdrant Edge another part from
    call to call)."""
    if len(legs) == 1:
        return Prefetch(legs[0], limit, filter=query_filter)
    return Prefetch(Fusion(options.fusion_method), limit * len(legs), filter=query_filter,
                    prefetch=tuple(Prefetch(leg, limit, filter=query_filter) for leg in legs))


def vector_legs(vector: Sequence[float] | None, target: str, options: SearchOptions) -> list[Query]:
    """One query node per leg: the dense targets (``image``, ``text`` or both) and/or the keyword vector."""
    legs: list[Query] = []
    if options.mode in ("dense", "hybrid"):
        for using in (("image", "text") if target == "both" else (target,)):
            legs.append(dense_leg(vector, using, options))
    if options.mode in ("keyword", "hybrid"):
        if options.keywords is None:
            raise UsageError(f"mode {options.mode} searches the words of a TEXT query: give one (an --image or "
                             "examples alone have no words)")
        legs.append(Nearest(options.keywords, KEYWORDS))
    return legs


def dense_leg(vector: Sequence[float] | None, using: str, options: SearchOptions) -> Query:
    """Nearest to the query vector, or to the examples by the chosen strategy."""
    positives = ([tuple(map(float, vector))] if vector is not None else []) + list(options.positives)
    negatives = list(options.negatives)
    if not positives:
        raise UsageError("give something to search for: a TEXT, --image or --like")
    if not negatives and len(positives) == 1:
        return Nearest(positives[0], using)
    if options.strategy == "average_vector":
        return Nearest(tuple(average_vector(positives, negatives)), using)
    return Recommend(tuple(positives), tuple(negatives), using, options.strategy)


def average_vector(positives: Sequence[Sequence[float]], negatives: Sequence[Sequence[float]]) -> list[float]:
    """Qdrant's ``average_vector`` recommendation query: mean(positives) + (mean(positives) − mean(negatives)),
    or mean(positives) without negatives (Qdrant docs, "Explore: recommendation API"). Shape: (dim,)."""
    mean = np.mean(np.asarray(positives, dtype=np.float64), axis=0)
    if len(negatives):
        mean = mean + (mean - np.mean(np.asarray(negatives, dtype=np.float64), axis=0))
    return [float(x) for x in mean]


def mmr_anchor(vector: Sequence[float] | None, target: str, options: SearchOptions) -> tuple[list[float], str]:
    """The vector MMR measures relevance to, and the named vectors it compares candidates by (``image`` unless
    the search is on ``text`` alone)."""
    using = "text" if target == "text" else "image"
    positives = ([list(map(float, vector))] if vector is not None else []) + [list(p) for p in options.positives]
    if not positives:
        raise UsageError("--diversity needs something to search for: a TEXT, --image or --like")
    return average_vector(positives, options.negatives), using
