"""What a search asks the engine to score, as engine-neutral values: one query node, and the prefetch legs under it.

Both stores translate the same tree into their engine's Query API (``connectors/edge_query.py`` for Qdrant Edge,
``connectors/server_query.py`` for qdrant-client), so fusion, recommendation and formula rescoring run inside the
engine and give the same answers on both (``--diversity`` picks among the engine's candidates in
``pipeline/query/diversity.py``: the engines' own MMR orders equal candidates each its own way). A request is ``query`` over ``prefetch``:

- ``Nearest``: nearest points to a dense vector, or a sparse one on the ``keywords`` vector (BM25 with IDF).
- ``Recommend``: nearest to positives and away from negatives (Qdrant's ``best_score`` / ``sum_scores``).
- ``Fusion``: reciprocal rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009) or distribution-based score
  fusion of the prefetch legs' results.
- ``Rescore``: a formula over ``$score`` and payload fields, applied to the prefetch legs' results.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, Union

KEYWORDS = "keywords"  # the named sparse vector: BM25 term weights of the caption and --text-fields
RECOMMEND_STRATEGIES = ("best_score", "sum_scores")
FUSIONS = ("rrf", "dbsf")
RRF_K = 60  # Cormack, Clarke and Büttcher's constant; Qdrant's own default is 2


@dataclass(frozen=True)
class SparseVector:
    """A sparse vector: term ids (``indices``, unique) and their weights (``values``), of equal length."""

    indices: tuple[int, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.indices) != len(self.values):
            raise ValueError(f"a sparse vector needs one value per index ({len(self.indices)} indices, "
                             f"{len(self.values)} values)")


Vector = Union[Sequence[float], SparseVector]


@dataclass(frozen=True)
class Nearest:
    """The points nearest to ``vector`` among the named vectors ``using`` (cosine; dot product for sparse)."""

    vector: Vector
    using: str


@dataclass(frozen=True)
class Recommend:
    """Qdrant's recommendation query on ``using``: ``best_score`` scores each point by its best positive when that
    beats its best negative (else by the negative, sigmoid-squashed below zero); ``sum_scores`` by the sum of its
    similarities to the positives minus the sum to the negatives (Qdrant docs, "Explore: recommendation API")."""

    positives: tuple[tuple[float, ...], ...]
    negatives: tuple[tuple[float, ...], ...]
    using: str
    strategy: str = "best_score"

    def __post_init__(self) -> None:
        if self.strategy not in RECOMMEND_STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(RECOMMEND_STRATEGIES)}, not {self.strategy!r}")
        if not self.positives:
            raise ValueError("a recommendation needs at least one positive example")


@dataclass(frozen=True)
class Fusion:
    """Fuse the prefetch legs: ``rrf`` scores Σ 1 / (k + position) over the legs that hold a point, its position
    in each counted from 0 as both Qdrant engines count it (Cormack et al., SIGIR 2009, count ranks from 1);
    ``dbsf`` normalises each leg's scores by its mean ± 3 standard deviations and sums them (Qdrant 1.11)."""

    method: str = "rrf"
    k: int = RRF_K

    def __post_init__(self) -> None:
        if self.method not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, not {self.method!r}")


@dataclass(frozen=True)
class Rescore:
    """Score the prefetch legs' points by ``formula``, Qdrant's formula expression in its REST JSON form
    (``$score`` is the leg's score; payload fields by name), with ``defaults`` for fields a point lacks."""

    formula: Any
    defaults: dict[str, Any] | None = None


Query = Union[Nearest, Recommend, Fusion, Rescore]


# Candidates per result that a quantized collection rescores with the full vectors. 4, not 2: on CLIP-shaped
# vectors at 1M points int8 with 2 stops at Recall@10 0.993-0.995 whatever the beam, with 4 it reaches 0.998-1.000
# at the same latency (bench/README.md section 5, bench/query.py).
OVERSAMPLING = 4.0


@dataclass(frozen=True)
class SearchParams:
    """How vector legs search: ``exact`` (brute force), ``hnsw_ef`` (beam width) and, on a quantized collection,
    ``oversampling`` × limit candidates rescored with the full vectors."""

    exact: bool = False
    hnsw_ef: int | None = None
    oversampling: float = OVERSAMPLING


@dataclass(frozen=True)
class Prefetch:
    """One leg: the best ``limit`` points by ``query`` among those ``filter`` matches (or among the results of
    its own ``prefetch`` legs)."""

    query: Query
    limit: int
    filter: dict[str, Any] | None = None
    prefetch: tuple["Prefetch", ...] = ()
    score_threshold: float | None = None
