"""Ranking measures of one query: precision, recall and F1 at K, average precision and nDCG at K.

Each takes one ranked list of relevance flags (best first; True: a relevant item at that rank) and the number of
relevant items the query has in all (found or not), as trec_eval does. Relevance is binary. ``eval`` averages them
over queries (mAP is the mean of average precision). ``pessimistic_positions`` places a query's relevant items in a
ranking by scores, ties counting against the query, as ``evaluate.exact_ranks`` does for the first one.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from mmindex.errors import UsageError


def precision_at(flags: Sequence[bool], k: int) -> float:
    """Relevant items among the first ``k`` ranks ÷ ``k`` (ranks past the list's end hold nothing relevant).

    Raises UsageError for ``k`` < 1.
    """
    return _found(flags, k) / k


def recall_at(flags: Sequence[bool], k: int, relevant: int) -> float:
    """Relevant items among the first ``k`` ranks ÷ ``relevant``, the query's relevant items in all (0.0 when it
    has none, as scikit-learn's ``recall_score`` with ``zero_division=0``). Raises UsageError for ``k`` < 1 or
    fewer ``relevant`` than the list flags."""
    _check_total(flags, relevant)
    return _found(flags, k) / relevant if relevant else 0.0


def f1_at(flags: Sequence[bool], k: int, relevant: int) -> float:
    """The harmonic mean of ``precision_at`` and ``recall_at`` (0.0 when both are 0). Raises as ``recall_at``."""
    precision, recall = precision_at(flags, k), recall_at(flags, k, relevant)
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def average_precision(flags: Sequence[bool], relevant: int) -> float:
    """Σ over the relevant ranks r of precision_at(r), ÷ ``relevant``: a relevant item the list lacks adds 0
    (the TREC definition; Buckley and Voorhees, "Evaluating evaluation measure stability", SIGIR 2000). 0.0 for a
    query with no relevant item. Raises UsageError for fewer ``relevant`` than the list flags."""
    _check_total(flags, relevant)
    ranks = np.flatnonzero(np.asarray(flags, dtype=bool)) + 1
    if not relevant:
        return 0.0
    return float(np.sum(np.arange(1, len(ranks) + 1) / ranks)) / relevant


def ndcg_at(flags: Sequence[bool], k: int, relevant: int) -> float:
    """Normalised discounted cumulative gain at ``k`` with binary gains: DCG = Σ_{r ≤ k, relevant} 1 / log2(r + 1),
    ÷ the DCG of the ideal list (min(k, ``relevant``) relevant items first) (Järvelin and Kekäläinen, "Cumulated
    gain-based evaluation of IR techniques", ACM TOIS 20(4), 2002). 0.0 for a query with no relevant item. Raises
    UsageError for ``k`` < 1 or fewer ``relevant`` than the list flags."""
    _check_total(flags, relevant)
    _found(flags, k)
    ranks = np.flatnonzero(np.asarray(flags, dtype=bool)[:k]) + 1
    ideal = float(np.sum(1.0 / np.log2(np.arange(2, min(k, relevant) + 2))))
    return float(np.sum(1.0 / np.log2(ranks + 1))) / ideal if relevant else 0.0


def pessimistic_positions(relevant_scores: Sequence[float], other_scores: Sequence[float],
                          tolerance: float) -> list[int]:
    """1-based ranks of a query's relevant items when every other item scoring at least as high (less
    ``tolerance``) ranks before them: the j-th best relevant item (score r_j) is at j + #{others ≥ r_j − tolerance}.

    So ties count against the query and the ranks depend on scores only, never on ids or on the order an engine
    returns equal scores in; the first rank is ``evaluate.exact_ranks``' rank. Returns the ranks ascending.
    """
    relevant = np.sort(np.asarray(relevant_scores, dtype=np.float64))[::-1]
    others = np.sort(np.asarray(other_scores, dtype=np.float64))
    above = len(others) - np.searchsorted(others, relevant - tolerance, side="left")
    return [int(j + 1 + n) for j, n in enumerate(above)]


def flags_from_positions(positions: Sequence[float], depth: int | None = None) -> np.ndarray:
    """The ranked list of flags with True at each 1-based position (an infinite one is left out), cut at
    ``depth`` ranks when given."""
    finite = [int(p) for p in positions if math.isfinite(p) and (depth is None or p <= depth)]
    flags = np.zeros(max(finite, default=0), dtype=bool)
    flags[np.asarray(finite, dtype=int) - 1] = True
    return flags


def _found(flags: Sequence[bool], k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise UsageError(f"a cut-off rank K must be a whole number of at least 1, not {k!r}")
    return int(np.count_nonzero(np.asarray(flags, dtype=bool)[:k]))


def _check_total(flags: Sequence[bool], relevant: int) -> None:
    flagged = int(np.count_nonzero(np.asarray(flags, dtype=bool)))
    if relevant < flagged:
        raise UsageError(f"the query has {relevant} relevant items in all, but its ranking flags {flagged}")
