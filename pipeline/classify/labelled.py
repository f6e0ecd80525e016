"""A collection's points with the value of a label column: reading them with their stored image vectors
(``read_labelled``), and ``train --task classify`` (``train_probe``): a linear probe fitted on the points that carry
a label, its predictions written into the payload of the points that do not.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mmindex.connectors.base import Store
from mmindex.errors import InputError, UsageError
from mmindex.pipeline.classify.predictions import IMAGE, LabelReport, check_field, label_collection, model_record
from mmindex.pipeline.classify.probe import LinearProbe, check_labels, fit_probe
from mmindex.pipeline.collection.info import require_collection
from mmindex.pipeline.query.filters import combine_filters, compile_filter

PAGE = 256


@dataclass
class LabelledPoints:
    """The points a scope holds, in id order: ``ids``, ``vectors`` ((n, d) float32 stored image vectors) and
    ``labels`` (the label column's value as text, None where the point has none); ``no_image_vector``: points of
    the scope left out because they hold no image vector."""

    ids: list[str]
    vectors: np.ndarray
    labels: list[str | None]
    no_image_vector: int = 0

    def labelled(self) -> np.ndarray:
        """(n,) bools: the points that carry a label."""
        return np.array([label is not None for label in self.labels], dtype=bool)


def check_label_column(spec, label_col: str, collection: str) -> None:
    """UsageError unless the collection records a payload field ``label_col`` (``spec``: its ``CollectionSpec``)."""
    fields = sorted(name for name in spec.payload_types if not name.startswith("_") and not name.endswith("[]"))
    if label_col not in spec.payload_types:
        shown = ", ".join(fields[:12]) + (", …" if len(fields) > 12 else "")
        raise UsageError(f"--label-col {label_col}: collection {collection!r} has no payload field {label_col!r} "
                         f"(its fields: {shown or 'none'})")


def label_text(value: Any, label_col: str, point_id: str) -> str | None:
    """A payload value as a class name: text as it is; a number as Python's ``str`` writes it (3 → "3", 2.5 → "2.5",
    3.0 → "3.0"); true and false as "true" and "false" (as JSON writes them); None for none. InputError for a list
    or an object (a label column holds one value per point) and for a number that is not finite. Text that is empty
    or only spaces is returned as it is: ``read_labelled`` refuses it (``blank_labels``)."""
    if value is None:
        return None
    if isinstance(value, (list, dict)):
        raise InputError(f"label column {label_col!r}: point {point_id} holds {type(value).__name__} {value!r:.60}; "
                         "a label column holds one value per point")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"label column {label_col!r}: point {point_id} holds {value!r}, which is no class; give it "
                         "a class or null")
    return value if isinstance(value, str) else str(value)


def is_blank(label: str | None) -> bool:
    """Whether a label is text that is empty or only spaces (no class: ``check_blank_labels`` refuses it)."""
    return label is not None and not label.strip()


def check_blank_labels(points: "LabelledPoints", label_col: str) -> None:
    """InputError, in one line, when points carry a label that is empty or only spaces: such a value names no class
    (it would be learnt and predicted as the class "", and shown as a blank row). Says how many, an example point,
    and how to fix it: set those values to null (then they count as points without a label) or give them a class,
    or leave them out with ``--where``."""
    blank = [(point_id, label) for point_id, label in zip(points.ids, points.labels) if is_blank(label)]
    if not blank:
        return
    empty_only = all(label == "" for _, label in blank)
    what = "''" if empty_only else "empty or only spaces"
    leave_out = f", or leave them out with --where \"`{label_col}` != ''\"" if empty_only else ""
    raise InputError(f"label column {label_col!r}: {len(blank):,} of the {len(points.labels):,} points in scope hold "
                     f"an empty label ({what}; e.g. point {blank[0][0]}), which names no class: set those values to "
                     f"null (they then count as points without a label) or give them a class{leave_out}")


def read_labelled(store: Store, label_col: str, filter: dict[str, Any] | None = None,
                  page: int = PAGE) -> LabelledPoints:
    """Every point ``filter`` matches with its image vector and ``label_col`` value, ``page`` points per scroll.
    InputError for a list-valued label, and for labels that are empty or only spaces (``check_blank_labels``)."""
    ids: list[str] = []
    vectors: list[Any] = []
    labels: list[str | None] = []
    missing, cursor = 0, None
    while True:
        points, cursor = store.scroll(filter, limit=page, offset=cursor, with_payload=True, with_vectors=True)
        for point in points:
            vector = (point.vectors or {}).get(IMAGE)
            if vector is None:
                missing += 1
                continue
            ids.append(point.id)
            vectors.append(vector)
            labels.append(label_text((point.payload or {}).get(label_col), label_col, point.id))
        if cursor is None:
            break
    array = np.asarray(vectors, dtype=np.float32) if vectors else np.zeros((0, 0), np.float32)
    labelled = LabelledPoints(ids, array, labels, missing)
    check_blank_labels(labelled, label_col)
    return labelled


@dataclass
class ProbeTrainReport:
    """What ``train_probe`` did: the probe's classes and training counts, the C chosen and the sweep, the points
    read (``points``; ``labelled`` carry a label) and the prediction run (``predictions``: ``LabelReport.to_dict()``,
    over the points without a label), the probe file and the payload field written."""

    collection: str
    label_col: str
    field: str
    output: str
    points: int
    labelled: int
    classes: list[str]
    counts: dict[str, int]
    c: float
    selection: list[dict[str, float]] = dataclasses.field(default_factory=list)
    no_image_vector: int = 0
    predictions: dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_field(label_col: str) -> str:
    """Where predictions of ``label_col`` go unless told: ``{label_col}_predicted`` (beside the column, never in
    it: the column keeps the labels people gave)."""
    return f"{label_col}_predicted"


def train_probe(store: Store, label_col: str, output: str | Path, field: str | None = None,
                where: str | None = None, seed: int = 0, top_k: int = 3, page: int = PAGE,
                on_progress: Callable[[int, int], None] | None = None, place: str = "") -> ProbeTrainReport:
    """Fit a probe (``probe.fit_probe``) on the points ``where`` matches that carry a value in ``label_col``, save
    it to ``output`` (JSON), and write its predictions (``predictions.label_collection``: ``field``, ``field_score``,
    ``field_top``, ``field_top_scores``; ``field`` defaults to ``default_field``) into the payload of the points
    ``where`` matches whose ``label_col`` is null.

    Raises StoreError for a missing collection; UsageError for a label column the collection lacks or a ``field``
    that holds data; InputError for a label column holding lists, with no labelled point or one class; FilterError
    for a bad ``where`` — all before anything is written.
    """
    started = time.monotonic()
    spec = require_collection(store, place)
    check_label_column(spec, label_col, store.collection)
    field = field or default_field(label_col)
    check_field(field, store.metadata(), columns=[label_col])
    scope = compile_filter(where, None, field_types=spec.payload_types)
    unlabelled = combine_filters(scope, compile_filter(f"`{label_col}` is null", None, field_types=spec.payload_types))
    points = read_labelled(store, label_col, scope, page)
    mask = points.labelled()
    where_text = f" matching --where {where!r}" if where else ""
    names = check_labels([label for label in points.labels if label is not None],
                         f"--label-col {label_col} of collection {store.collection!r}{where_text}")
    probe: LinearProbe = fit_probe(points.vectors[mask], names, model_record(spec), seed=seed,
                                   ids=[i for i, keep in zip(points.ids, mask) if keep], label_col=label_col,
                                   field=field)
    probe.save(output)
    predicted: LabelReport | None = None
    if not mask.all():
        predicted = label_collection(store, probe, field, top_k, unlabelled, page=page, on_progress=on_progress,
                                     place=place)
    return ProbeTrainReport(store.collection, label_col, field, str(output), len(points.ids), int(mask.sum()),
                            probe.classes, probe.counts, probe.c, probe.selection, points.no_image_vector,
                            predicted.to_dict() if predicted else {}, time.monotonic() - started)
