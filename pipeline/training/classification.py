"""Classification metrics, as the founding article evaluates a classifier: accuracy, per-class precision, recall
and F1, their macro and weighted averages, and the confusion matrix (groundwork for ``eval --task classify``).

Definitions (per class ``c``, over n examples with a true and a predicted label each):

- precision(c) = TP / (TP + FP), recall(c) = TP / (TP + FN), F1(c) = 2·P·R / (P + R);
  a ratio whose denominator is 0 is 0 (scikit-learn's ``zero_division=0``);
- accuracy = (examples whose prediction equals the truth) / n;
- macro F1 = the unweighted mean of F1(c) over the classes; weighted F1 = the mean weighted by support(c),
  the number of true examples of ``c``;
- ``confusion[i][j]`` = examples of true class ``labels[i]`` predicted as ``labels[j]``.

The classes are ``labels`` when given (a prediction or truth outside them is refused), else every label seen in
either list, sorted. Checked against scikit-learn's ``precision_recall_fscore_support``, ``accuracy_score`` and
``confusion_matrix`` and a plain-Python oracle (tests/training/test_classification.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

from mmindex.errors import InputError


@dataclass(frozen=True)
class ClassScores:
    """One class's precision, recall and F1 (0..1) and its support (true examples)."""

    label: Hashable
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class ClassificationReport:
    """Accuracy, per-class scores (in ``labels`` order), macro and weighted F1, and the confusion matrix
    (rows: true class, columns: predicted class, both in ``labels`` order)."""

    labels: list[Hashable]
    accuracy: float
    classes: list[ClassScores]
    macro_f1: float
    weighted_f1: float
    confusion: list[list[int]] = field(default_factory=list)
    examples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"examples": self.examples, "accuracy": self.accuracy, "macro_f1": self.macro_f1,
                "weighted_f1": self.weighted_f1, "labels": list(self.labels),
                "classes": [{"label": c.label, "precision": c.precision, "recall": c.recall, "f1": c.f1,
                             "support": c.support} for c in self.classes],
                "confusion": self.confusion}


def classification_report(truth: Sequence[Hashable], predicted: Sequence[Hashable],
                          labels: Sequence[Hashable] | None = None) -> ClassificationReport:
    """The metrics of the module docstring for ``predicted`` against ``truth`` (same length, at least one).

    Raises ``InputError`` for lists of different lengths, no examples, repeated ``labels``, or a label outside
    ``labels``.
    """
    if len(truth) != len(predicted):
        raise InputError(f"{len(truth)} true labels but {len(predicted)} predictions: they must pair up")
    if not truth:
        raise InputError("no examples to score")
    if labels is None:
        classes = sorted(set(truth) | set(predicted), key=_sort_key)
    else:
        classes = list(labels)
        if len(set(classes)) != len(classes):
            raise InputError("labels repeat: each class must be named once")
        unknown = (set(truth) | set(predicted)) - set(classes)
        if unknown:
            raise InputError(f"labels not among the classes: {sorted(map(str, unknown))[:5]}")
    index = {label: i for i, label in enumerate(classes)}
    confusion = [[0] * len(classes) for _ in classes]
    for true, guess in zip(truth, predicted):
        confusion[index[true]][index[guess]] += 1
    scores = [_class_scores(label, i, confusion) for i, label in enumerate(classes)]
    correct = sum(confusion[i][i] for i in range(len(classes)))
    total_support = sum(c.support for c in scores)
    return ClassificationReport(
        labels=classes, accuracy=correct / len(truth), classes=scores,
        macro_f1=sum(c.f1 for c in scores) / len(scores),
        weighted_f1=(sum(c.f1 * c.support for c in scores) / total_support) if total_support else 0.0,
        confusion=confusion, examples=len(truth))


def _class_scores(label: Hashable, i: int, confusion: list[list[int]]) -> ClassScores:
    true_positive = confusion[i][i]
    predicted = sum(row[i] for row in confusion)
    support = sum(confusion[i])
    precision = true_positive / predicted if predicted else 0.0
    recall = true_positive / support if support else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return ClassScores(label, precision, recall, f1, support)


def _sort_key(label: Hashable) -> tuple[str, Any]:
    """Labels sort within their type (numbers as numbers, text as text), types by name: mixed types never meet."""
    return (type(label).__name__, label)
