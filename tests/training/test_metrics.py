"""Ranking measures (pipeline/training/metrics.py): differential tests against scikit-learn over random rankings,
hand-made cases, and the pessimistic placement of ties."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import sklearn.metrics as sklearn_metrics  # the test extra installs scikit-learn
from hypothesis import given, settings
from hypothesis import strategies as st

from mmindex.errors import UsageError
from mmindex.pipeline.training.metrics import (
    average_precision,
    f1_at,
    flags_from_positions,
    ndcg_at,
    pessimistic_positions,
    precision_at,
    recall_at,
)


rankings = st.lists(st.booleans(), min_size=2, max_size=40)


def predicted(length: int, k: int) -> list[int]:
    """The first ``k`` of ``length`` ranked items returned, as scikit-learn's 0/1 predictions."""
    return [1] * min(k, length) + [0] * max(0, length - k)


@settings(max_examples=200, deadline=None)
@given(flags=rankings, data=st.data())
def test_set_measures_at_k_equal_scikit_learn(flags, data):
    """A full ranking (every item of the query listed, no ties): P@K, R@K and F1@K are scikit-learn's precision,
    recall and F1 of predicting the first K items relevant."""
    k = data.draw(st.integers(1, len(flags)))
    total = sum(flags)
    guess = predicted(len(flags), k)
    assert precision_at(flags, k) == pytest.approx(sklearn_metrics.precision_score(flags, guess, zero_division=0))
    assert recall_at(flags, k, total) == pytest.approx(sklearn_metrics.recall_score(flags, guess, zero_division=0))
    assert f1_at(flags, k, total) == pytest.approx(sklearn_metrics.f1_score(flags, guess, zero_division=0))


@settings(max_examples=200, deadline=None)
@given(flags=rankings.filter(any))
def test_average_precision_equals_scikit_learn(flags):
    scores = np.arange(len(flags), 0, -1, dtype=float)  # distinct, best first: no ties
    expected = sklearn_metrics.average_precision_score(flags, scores)
    assert average_precision(flags, sum(flags)) == pytest.approx(expected)


@settings(max_examples=200, deadline=None)
@given(flags=rankings, data=st.data())
def test_ndcg_equals_scikit_learn(flags, data):
    k = data.draw(st.integers(1, len(flags) + 3))
    scores = np.arange(len(flags), 0, -1, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns about a ranking without any relevant item
        expected = sklearn_metrics.ndcg_score([np.asarray(flags, dtype=float)], [scores], k=k)
    assert ndcg_at(flags, k, sum(flags)) == pytest.approx(expected)


@settings(max_examples=100, deadline=None)
@given(flags=rankings, missing=st.integers(0, 5), k=st.integers(1, 50))
def test_relevant_items_the_list_lacks_count_as_not_found(flags, missing, k):
    """A truncated list: the query's other relevant items are ranked after everything listed, by the plain-Python
    definitions (Σ relevant ranks' precision ÷ total; P@K divides by K even past the list's end)."""
    total = sum(flags) + missing
    found = [i + 1 for i, flag in enumerate(flags) if flag]
    oracle_ap = sum((j + 1) / rank for j, rank in enumerate(found)) / total if total else 0.0
    assert average_precision(flags, total) == pytest.approx(oracle_ap)
    assert precision_at(flags, k) == pytest.approx(sum(flags[:k]) / k)
    assert recall_at(flags, k, total) == pytest.approx(sum(flags[:k]) / total if total else 0.0)
    ideal = sum(1 / math.log2(r + 1) for r in range(1, min(k, total) + 1))
    gain = sum(1 / math.log2(r + 1) for r in found if r <= k)
    assert ndcg_at(flags, k, total) == pytest.approx(gain / ideal if total else 0.0)


def test_a_hand_made_ranking():
    flags = [True, False, True, False, False]
    assert precision_at(flags, 2) == 0.5
    assert recall_at(flags, 2, 3) == pytest.approx(1 / 3)
    assert f1_at(flags, 2, 3) == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert average_precision(flags, 3) == pytest.approx((1 + 2 / 3) / 3)
    assert ndcg_at(flags, 5, 3) == pytest.approx((1 + 1 / 2) / (1 + 1 / math.log2(3) + 1 / 2))
    assert precision_at(flags, 10) == 0.2  # ranks past the end hold nothing relevant
    assert (average_precision([], 0), ndcg_at([], 3, 0), recall_at([], 1, 0)) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("call", [lambda: precision_at([True], 0), lambda: ndcg_at([True], -1, 1),
                                  lambda: recall_at([True], True, 1), lambda: average_precision([True, True], 1)])
def test_bad_arguments_are_refused(call):
    with pytest.raises(UsageError):
        call()


@settings(max_examples=200, deadline=None)
@given(items=st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=1, max_size=30))
def test_ties_count_against_the_query(items):
    """Scores on a coarse grid (many exact ties): the relevant items' ranks equal those of sorting by score, a
    relevant item after every other item of equal score (the oracle), whatever order they came in."""
    scores = [s / 8 for s, _ in items]
    relevant = [s for s, (_, r) in zip(scores, items) if r]
    others = [s for s, (_, r) in zip(scores, items) if not r]
    order = sorted(range(len(items)), key=lambda i: (-scores[i], items[i][1]))
    oracle = [rank + 1 for rank, i in enumerate(order) if items[i][1]]
    assert pessimistic_positions(relevant, others, 1e-6) == oracle
    assert pessimistic_positions(relevant[::-1], others[::-1], 1e-6) == oracle


def test_scores_within_the_tolerance_tie():
    assert pessimistic_positions([0.5], [0.5 + 5e-7, 0.5 - 5e-7, 0.4], 1e-6) == [3]
    assert pessimistic_positions([0.5], [0.5 + 5e-7], 0.0) == [2]


def test_flags_from_positions():
    assert flags_from_positions([1, 3, math.inf]).tolist() == [True, False, True]
    assert flags_from_positions([2, 5], depth=4).tolist() == [False, True]
    assert flags_from_positions([]).tolist() == []
