"""``eval --task classify``: how well zero-shot labels and a linear probe predict a collection's label column, on a
held-out share of its points (a deterministic split by point id), measured by the founding article's metrics —
accuracy, per-class precision, recall and F1, macro and weighted F1, the confusion matrix
(``training.classification``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from mmindex.connectors.base import Store
from mmindex.errors import InputError
from mmindex.pipeline.classify.labelled import LabelledPoints, check_label_column, read_labelled
from mmindex.pipeline.classify.predictions import Labeler, check_labeler_model, model_record
from mmindex.pipeline.classify.probe import LinearProbe, check_labels, fit_probe
from mmindex.pipeline.classify.split import held_out
from mmindex.pipeline.classify.zero_shot import zero_shot_labeler
from mmindex.pipeline.collection.info import require_collection
from mmindex.pipeline.models.encoder import Runtime
from mmindex.pipeline.query.filters import compile_filter
from mmindex.pipeline.training.classification import ClassificationReport, classification_report

DEFAULT_HOLDOUT = 0.5
SPLIT_SALT = "eval-classify"
BARE_NAME = re.compile(r"[^\W\d][\w\-]*")


@dataclass
class ClassifierResult:
    """One classifier's scores on the held-out points: ``name`` ("zero-shot", "probe"), ``labeler`` (its
    ``describe()``), ``report`` (``classification.classification_report`` of the truth against its best class),
    ``warnings`` (true classes it cannot predict)."""

    name: str
    labeler: dict[str, Any]
    report: ClassificationReport
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"classifier": self.name, "labeler": self.labeler, "warnings": self.warnings,
                **self.report.to_dict()}


@dataclass
class ClassifyEvaluation:
    """The whole measurement: the collection and column, the split (``holdout`` share, ``seed``; ``train_points``
    fit the probe, ``heldout_points`` are scored), points without an image vector left out, and one
    ``ClassifierResult`` per classifier."""

    collection: str
    label_col: str
    where: str | None
    holdout: float
    seed: int
    points: int
    train_points: int
    heldout_points: int
    no_image_vector: int = 0
    results: list[ClassifierResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"collection": self.collection, "label_col": self.label_col, "where": self.where,
                "holdout": self.holdout, "seed": self.seed, "points": self.points, "train_points": self.train_points,
                "heldout_points": self.heldout_points, "no_image_vector": self.no_image_vector,
                "results": [result.to_dict() for result in self.results]}


def not_null_where(label_col: str, where: str | None) -> str:
    """The ``--where`` that keeps only the points carrying ``label_col`` (within ``where``)."""
    name = label_col if BARE_NAME.fullmatch(label_col) else f"`{label_col}`"
    return f"({where}) and {name} is not null" if where else f"{name} is not null"


def check_no_nulls(points: LabelledPoints, label_col: str, where: str | None) -> None:
    """InputError, saying how many and which ``--where`` leaves them out, when a point in scope has no label:
    a point without a label is never dropped from a measurement silently."""
    missing = sum(label is None for label in points.labels)
    if missing:
        raise InputError(f"label column {label_col!r}: {missing:,} of the {len(points.labels):,} points in scope have "
                         f"no value; measure the others with --where \"{not_null_where(label_col, where)}\"")
    if not points.labels:
        raise InputError("no point with an image vector in scope" + (f" (--where {where!r})" if where else ""))


def score(name: str, labeler: Labeler, vectors: np.ndarray, truth: Sequence[str]) -> ClassifierResult:
    """``labeler``'s best class (first on ties, as ``predictions.label_fields``) for each of ``vectors`` against
    ``truth``."""
    best = np.argmax(np.asarray(labeler.predict_proba(vectors)), axis=1)
    predicted = [labeler.classes[i] for i in best]
    unknown = sorted(set(truth) - set(labeler.classes))
    warnings = [f"{name}: true classes it cannot predict (always wrong): {', '.join(unknown[:10])}"] if unknown else []
    return ClassifierResult(name, labeler.describe(), classification_report(list(truth), predicted), warnings)


def evaluate_classifiers(store: Store, label_col: str, labels: Sequence[str] | None = None,
                         templates: Sequence[str] | None = None, probe: LinearProbe | None = None,
                         holdout: float = DEFAULT_HOLDOUT, seed: int = 0, where: str | None = None,
                         runtime: Runtime | None = None, place: str = "", model: str | None = None,
                         text_model: str | None = None) -> ClassifyEvaluation:
    """Score classifiers of ``label_col`` on the held-out side of the points ``where`` matches.

    The points are split by id (``split.held_out``: ``holdout`` of them, chosen by ``seed``; the same point always
    lands on the same side). Classifiers: zero-shot ``labels`` in ``templates`` (``zero_shot.zero_shot_labeler``)
    when given (its model loaded from ``model`` / ``text_model`` when given, as ``zero_shot_labeler`` takes them); and
    ``probe``, or without one a probe fitted on the other side (``probe.fit_probe``, its C chosen
    on a validation share of that side). Each is scored on the held-out points by
    ``classification.classification_report``.

    Raises StoreError for a missing collection; UsageError for a label column the collection lacks; InputError for
    a label column holding lists, points in scope without a label (how many, and the ``--where`` that leaves them
    out), an empty side, or a training side of one class; CollectionMismatchError for a probe of another model; FilterError for a bad
    ``where``. Nothing is written.
    """
    spec = require_collection(store, place)
    check_label_column(spec, label_col, store.collection)
    points = read_labelled(store, label_col, compile_filter(where, None, field_types=spec.payload_types))
    check_no_nulls(points, label_col, where)
    if probe is not None:
        check_labeler_model(probe, spec, f"collection {store.collection!r}")
    side = held_out(points.ids, holdout, seed, salt=SPLIT_SALT)
    if side.all() or not side.any():
        raise InputError(f"the split of {len(side):,} points with --holdout {holdout} leaves one side empty: give "
                         "more points or another --holdout")
    truth = [label for label, out in zip(points.labels, side) if out]
    evaluation = ClassifyEvaluation(store.collection, label_col, where, holdout, seed, len(points.ids),
                                    int((~side).sum()), int(side.sum()), points.no_image_vector)
    heldout_vectors = points.vectors[side]
    if labels:
        zero_shot = zero_shot_labeler(store, labels, templates, runtime, place=place, model=model,
                                      text_model=text_model)
        evaluation.results.append(score("zero-shot", zero_shot, heldout_vectors, truth))
    saved = probe is not None
    if probe is None:
        train_labels = check_labels([label for label, out in zip(points.labels, side) if not out],
                                    "the training side of the split")
        probe = fit_probe(points.vectors[~side], train_labels, model_record(spec), seed=seed,
                          ids=[i for i, out in zip(points.ids, side) if not out], label_col=label_col)
    evaluation.results.append(score("probe", probe, heldout_vectors, truth))
    if saved:  # nothing says which points it learnt from
        evaluation.results[-1].warnings.append(
            "probe: a saved probe (--probe), not fitted on this split: its figures are held-out figures only if it "
            "learnt none of the scored points")
    return evaluation
