"""Classification metrics (``pipeline/training/classification.py``) against scikit-learn and a plain-Python oracle,
on random cases (the founding article's accuracy, precision, recall and F1), and each refusal."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from mmindex.errors import InputError
from mmindex.pipeline.training.classification import classification_report

pairs = st.integers(1, 60).flatmap(lambda n: st.tuples(
    st.lists(st.sampled_from("abcde"), min_size=n, max_size=n),
    st.lists(st.sampled_from("abcdef"), min_size=n, max_size=n)))


def oracle(truth, predicted, label):
    """Precision, recall, F1 of one class by counting, 0 where a denominator is 0."""
    tp = sum(t == label and p == label for t, p in zip(truth, predicted))
    fp = sum(t != label and p == label for t, p in zip(truth, predicted))
    fn = sum(t == label and p != label for t, p in zip(truth, predicted))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return precision, recall, (2 * precision * recall / (precision + recall) if precision + recall else 0.0)


@pytest.mark.filterwarnings("ignore:A single label was found")  # scikit-learn's, on one-class cases
@settings(max_examples=200, deadline=None)
@given(pairs)
def test_every_score_equals_scikit_learn_and_the_oracle(case):
    truth, predicted = case
    report = classification_report(truth, predicted)
    labels = sorted(set(truth) | set(predicted))
    assert report.labels == labels
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, labels=labels,
                                                                     zero_division=0)
    for i, scores in enumerate(report.classes):
        assert math.isclose(scores.precision, precision[i]) and math.isclose(scores.recall, recall[i])
        assert math.isclose(scores.f1, f1[i], abs_tol=1e-12) and scores.support == support[i]
        assert all(math.isclose(a, b, abs_tol=1e-12) for a, b in zip(
            (scores.precision, scores.recall, scores.f1), oracle(truth, predicted, scores.label)))
    assert math.isclose(report.accuracy, accuracy_score(truth, predicted))
    assert math.isclose(report.accuracy, sum(t == p for t, p in zip(truth, predicted)) / len(truth))
    assert math.isclose(report.macro_f1, f1_score(truth, predicted, labels=labels, average="macro",
                                                  zero_division=0), abs_tol=1e-12)
    assert math.isclose(report.weighted_f1, f1_score(truth, predicted, labels=labels, average="weighted",
                                                     zero_division=0), abs_tol=1e-12)
    assert report.confusion == confusion_matrix(truth, predicted, labels=labels).tolist()
    assert sum(map(sum, report.confusion)) == report.examples == len(truth)


def test_given_labels_keep_their_order_and_score_absent_classes_zero():
    report = classification_report(["cat", "dog"], ["cat", "cat"], labels=["dog", "cat", "bird"])
    assert report.labels == ["dog", "cat", "bird"]
    assert [(c.label, c.precision, c.recall, c.support) for c in report.classes] == [
        ("dog", 0.0, 0.0, 1), ("cat", 0.5, 1.0, 1), ("bird", 0.0, 0.0, 0)]
    assert report.confusion == [[0, 1, 0], [0, 1, 0], [0, 0, 0]]
    assert report.to_dict()["classes"][1]["f1"] == pytest.approx(2 / 3)


def test_integer_labels_sort_as_numbers():
    assert classification_report([10, -3, 2], [2, 10, -3]).labels == [-3, 2, 10]


@pytest.mark.parametrize("truth, predicted, labels, message", [
    (["a"], ["a", "b"], None, "must pair up"),
    ([], [], None, "no examples"),
    (["a"], ["b"], ["a", "a", "b"], "repeat"),
    (["a"], ["z"], ["a", "b"], "not among the classes"),
])
def test_bad_input_is_refused(truth, predicted, labels, message):
    with pytest.raises(InputError, match=message):
        classification_report(truth, predicted, labels)
