"""Predicted labels in payloads, whatever predicts them: the ``Labeler`` protocol (zero-shot labels, a linear probe),
``label_fields`` (probabilities → the payload fields), and ``label_collection`` (``mmindex label``: every point's
fields from its stored image vector, page by page, resumable). The fields of a labeler named FIELD are FIELD (the
best class), FIELD_score (its probability), FIELD_top and FIELD_top_scores (the top k, best first).
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, NamedTuple, Protocol, Sequence, runtime_checkable

import numpy as np
import pyarrow as pa

from mmindex.connectors.base import CollectionSpec, Store
from mmindex.errors import CollectionMismatchError, InputError, UsageError
from mmindex.pipeline.collection.info import require_collection
from mmindex.pipeline.ingest.records import payload_types
from mmindex.pipeline.query.fields import SYSTEM_FIELDS

LABELS_KEY = "labels"  # the collection record's key: field → the labeler that wrote it, and a stopped run's place
IMAGE = "image"
FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
SCORE_DECIMALS = 6  # probabilities as stored: a fresh and a stored vector of one image differ in the last bits


@runtime_checkable
class Labeler(Protocol):
    """Anything that predicts classes from image vectors: ``classes`` (C names), ``kind`` ("zero-shot", "probe"),
    ``model`` (``model_record`` of the model whose image vectors it reads), ``predict_proba`` ((n, d) vectors →
    (n, C) probabilities, rows summing to 1) and ``describe`` (a JSON-able dict for the collection's record; its
    ``sha``, when present, identifies the predictions: the same sha writes the same fields)."""

    classes: list[str]
    kind: str
    model: dict[str, Any]

    def predict_proba(self, vectors: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


class FieldKeys(NamedTuple):
    """The payload keys a labeler named ``best`` writes."""

    best: str
    score: str
    top: str
    top_scores: str


def field_keys(name: str) -> FieldKeys:
    return FieldKeys(name, f"{name}_score", f"{name}_top", f"{name}_top_scores")


def model_record(spec: CollectionSpec | None) -> dict[str, Any]:
    """The image model a labeler belongs to, as a collection's spec names it (name, fingerprint, size, precision)."""
    if spec is None:
        return {}
    return {"model": spec.model, "fingerprint": spec.fingerprint, "dim": spec.dim, "precision": spec.precision}


def check_labeler_model(labeler: Labeler, spec: CollectionSpec, where: str) -> None:
    """Refuse a labeler made for another image model than ``spec``'s (``where``: "collection 'photos'"):
    CollectionMismatchError in one line, before anything is written."""
    record = labeler.model or {}
    ours = CollectionSpec(record.get("model") or "?", int(record.get("dim", -1)), fingerprint=record.get("fingerprint"),
                          precision=record.get("precision", "fp32"))
    if not ours.same_image_model(spec):
        raise CollectionMismatchError(
            f"the {labeler.kind} labeler was made for image vectors of {_model_words(ours, spec)}; {where} holds "
            f"vectors of {_model_words(spec, ours)}: its probabilities would mean nothing there. Make the labeler "
            "for this model")


def _model_words(spec: CollectionSpec, other: CollectionSpec) -> str:
    """The model of ``spec`` in words, down to what tells it from ``other`` (same name and size: the fingerprint
    of its weights or the precision of its vectors)."""
    words = f"model {spec.model!r} (size {spec.dim}"
    if (spec.model, spec.dim) == (other.model, other.dim):
        if spec.precision != other.precision:
            words += f", {spec.precision} vectors"
        else:
            words += f", weights {spec.fingerprint or 'of unknown fingerprint'}"
    return words + ")"


def labeler_sha(labeler: Labeler) -> str:
    """The labeler's ``describe()['sha']``, else the SHA-256 of its description."""
    described = labeler.describe()
    return described.get("sha") or hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


def check_top_k(top_k: int, labeler: Labeler) -> int:
    """``top_k`` (at least 1; UsageError otherwise), at most the number of classes."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise UsageError(f"--top-k must be a whole number of at least 1, not {top_k!r}")
    return min(top_k, len(labeler.classes))


def label_fields(labeler: Labeler, vectors: np.ndarray, name: str = "label", top_k: int = 3) -> list[dict[str, Any]]:
    """One payload dict per row of ``vectors`` ((n, d) image vectors): ``name`` (the most probable class),
    ``name_score`` (its probability), ``name_top`` (the ``top_k`` most probable classes, best first; ties in the
    classes' order) and ``name_top_scores`` (their probabilities), probabilities rounded to 6 decimals."""
    keys = field_keys(name)
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(vectors) == 0:
        return []
    probabilities = np.asarray(labeler.predict_proba(vectors), dtype=np.float64)
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :check_top_k(top_k, labeler)]
    rows = []
    for row, best in zip(probabilities, order):
        scores = [round(float(row[i]), SCORE_DECIMALS) for i in best]
        names = [labeler.classes[i] for i in best]
        rows.append({keys.best: names[0], keys.score: scores[0], keys.top: names, keys.top_scores: scores})
    return rows


def recorded_labels(meta: dict[str, Any] | None) -> dict[str, Any]:
    """The collection's label record: field → {labeler, model, top_k, filter, written_by, progress, partial}."""
    return dict((meta or {}).get(LABELS_KEY) or {})


def recorded_label_keys(meta: dict[str, Any] | None) -> list[str]:
    """Every payload key the recorded labelers write (kept when an ingest replaces a point's payload)."""
    return [key for name in recorded_labels(meta) for key in field_keys(name)]


def label_types(name: str) -> dict[str, str]:
    """The payload types a collection records for a labeler's fields, as ingest records columns of these types."""
    keys = field_keys(name)
    schema = pa.schema([(keys.best, pa.string()), (keys.score, pa.float64()), (keys.top, pa.list_(pa.string())),
                        (keys.top_scores, pa.list_(pa.float64()))])
    return payload_types(schema, list(keys))


def check_field(name: str, meta: dict[str, Any] | None, columns: Sequence[str] = (), option: str = "--field") -> None:
    """Refuse (UsageError, naming ``option``: the command's option that gave the name) a field name that is not a plain name, or whose keys hold the collection's own data (a
    recorded payload field no labeler wrote, or one of ``columns``) or another labeler's keys."""
    if not isinstance(name, str) or not FIELD_NAME.fullmatch(name):
        raise UsageError(f"{option} {name!r}: a label field is a plain name (a letter, then letters, digits or _), "
                         "e.g. label or predicted_shape")
    recorded = recorded_labels(meta)
    types = (meta or {}).get("payload_types", {})
    keys = set(field_keys(name))
    for key in field_keys(name):
        if key in columns or key in SYSTEM_FIELDS or (key in types and name not in recorded):
            kind = f" ({types[key]})" if key in types else ""
            raise UsageError(f"{option} {name}: payload field {key!r}{kind} holds the collection's own data; write the "
                             f"predictions under another {option}, e.g. {option} predicted_{name}")
    for other in recorded:
        if other != name and keys & set(field_keys(other)):
            raise UsageError(f"{option} {name}: its keys {', '.join(sorted(keys & set(field_keys(other))))} are those "
                             f"of the label field {other!r}; pick a name apart from it")


@dataclass
class LabelReport:
    """What ``label_collection`` did. ``points``: the points the filter matches; ``labelled``: those given fields
    (a resumed run counts the earlier run's too); ``skipped``: reason → points left as they were;
    ``counts``: class → points whose best class it is (the classes' order); ``cleared``: points outside the filter
    whose fields of other, earlier labels were removed; ``replaced``: the field held other labels before."""

    collection: str
    field: str
    kind: str
    classes: list[str]
    top_k: int
    points: int = 0
    labelled: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    resumed_from: str | None = None
    replaced: bool = False
    cleared: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


NO_IMAGE_VECTOR = "no image vector"


def label_collection(store: Store, labeler: Labeler, field: str = "label", top_k: int = 3,
                     filter: dict[str, Any] | None = None, page: int = 256,
                     on_progress: Callable[[int, int], None] | None = None, resume: bool = True,
                     place: str = "") -> LabelReport:
    """Write ``labeler``'s predictions into the payload of every point ``filter`` (Qdrant filter JSON) matches, from
    each point's stored image vector (no image is decoded, no model runs on images), ``page`` points per scroll in
    id order. The fields (``label_fields``) are merged into the payload; the field's earlier keys are replaced.
    ``field`` and ``field_score`` get keyword and float payload indexes, and their types are recorded, so
    ``--where "label = cat"`` and ``mmindex facets label`` work.

    Resumable: the record's ``labels[field]`` keeps the labeler and, after each page, the next page's cursor, so a
    stopped run continues after its last written page when run again with the same labeler, top-k and filter
    (``resume``); other labels start over, and remove the field's keys from points outside ``filter``, as the same
    labels do when the field is not whole (a stopped run under another filter, an ingest that left it partial), so
    one field never holds two labelers' fields.
    ``on_progress(done, total)`` after each recorded page. Points without an image vector are counted in
    ``skipped``.

    Raises StoreError for a missing collection; CollectionMismatchError when the labeler was made for another
    model; UsageError for a bad ``field`` or ``top_k``; InputError when no matched point has an image vector —
    each before anything is written.
    """
    started = time.monotonic()
    spec = require_collection(store, place)
    total = store.count(filter)  # opens it: an embedded collection another process holds is refused here
    check_labeler_model(labeler, spec, f"collection {store.collection!r}")
    meta = store.metadata() or {}
    check_field(field, meta)
    top_k = check_top_k(top_k, labeler)
    run = {"sha": labeler_sha(labeler), "top_k": top_k, "filter": filter}
    recorded = recorded_labels(meta).get(field)
    report = LabelReport(store.collection, field, labeler.kind, list(labeler.classes), top_k, points=total,
                         counts=dict.fromkeys(labeler.classes, 0))
    same = recorded is not None and {key: recorded.get(key) for key in run} == run
    progress = recorded.get("progress") if same and resume else None  # a stopped run of these labels continues
    cursor = None
    if progress:
        cursor, report.resumed_from = progress["next"], progress["next"]
        report.labelled, report.skipped = progress["labelled"], dict(progress["skipped"])
        report.counts.update(progress["counts"])
    done = progress["done"] if progress else 0
    # Other labels (or top-k) replace the field everywhere; the same ones over another filter add to it, but only to
    # a field they hold whole: after a stopped run or an ingest that left it partial, points outside this run's
    # filter may still hold an earlier labeler's fields, so they are cleared as for other labels.
    report.replaced = recorded is not None and (recorded.get("sha"), recorded.get("top_k")) != (run["sha"], top_k)
    unfinished = (recorded is not None and not report.replaced and not progress
                  and bool(recorded.get("partial") or recorded.get("progress")))
    begun = bool(progress)
    if on_progress:
        on_progress(done, total)
    while True:
        points, cursor = store.scroll(filter, limit=page, offset=cursor, with_payload=True, with_vectors=True)
        usable = [point for point in points if IMAGE in (point.vectors or {})]
        if len(usable) < len(points):
            report.skipped[NO_IMAGE_VECTOR] = report.skipped.get(NO_IMAGE_VECTOR, 0) + len(points) - len(usable)
        if usable and not begun:
            begun = True
            report.cleared = _begin(store, labeler, field, run, meta, clear_outside=report.replaced or unfinished)
        _write_page(store, labeler, field, top_k, usable, report)
        done += len(points)
        if begun:
            mark = {"next": cursor, "done": done, "labelled": report.labelled, "skipped": report.skipped,
                    "counts": report.counts} if cursor is not None else None
            _record(store, field, {**recorded_labels(store.metadata())[field], "progress": mark})
        if on_progress:
            on_progress(done, total)
        if cursor is None:
            break
    if not begun and total:
        raise InputError(f"collection {store.collection!r} has no image vector in its {total:,} points"
                         + (" that the filter matches" if filter else "") + ": labels are predicted from the stored "
                         "image vectors (ingest images with a CLIP-style model)")
    report.seconds = time.monotonic() - started
    return report


def _write_page(store: Store, labeler: Labeler, name: str, top_k: int, points: list, report: LabelReport) -> None:
    if not points:
        return
    fields = label_fields(labeler, np.asarray([point.vectors[IMAGE] for point in points], np.float32), name, top_k)
    keys = field_keys(name)
    store.overwrite_payloads([(point.id, {**{k: v for k, v in point.payload.items() if k not in keys}, **given})
                              for point, given in zip(points, fields)])
    report.labelled += len(points)
    for given in fields:
        report.counts[given[name]] += 1


def _begin(store: Store, labeler: Labeler, name: str, run: dict[str, Any], meta: dict[str, Any],
           clear_outside: bool) -> int:
    """Before the first write: remove the field's keys of other labels from points outside the run's filter (they
    would mix two labelers), then record the labeler, the field types, and the payload indexes. Returns the
    points cleared."""
    cleared = 0
    if clear_outside and run["filter"] is not None:
        keys = field_keys(name)
        outside = {"must": [{"must_not": [{"is_empty": {"key": name}}]}], "must_not": [run["filter"]]}
        cursor = None
        while True:
            points, cursor = store.scroll(outside, limit=256, offset=cursor, with_payload=True)
            store.overwrite_payloads([(p.id, {k: v for k, v in p.payload.items() if k not in keys}) for p in points])
            cleared += len(points)
            if cursor is None:
                break
    # Progress from the start (no page written yet, ``next`` None: the first page): a run stopped anywhere before its
    # last page, even in its first write, leaves the record unfinished, never "whole".
    started = {"next": None, "done": 0, "labelled": 0, "skipped": {}, "counts": {}}
    _record(store, name, {**run, "labeler": labeler.describe(), "model": labeler.model, "written_by": "label",
                          "partial": False, "progress": started}, types=True)
    return cleared


def _record(store: Store, name: str, entry: dict[str, Any], types: bool = False) -> None:
    """Set the collection record's ``labels[name]`` (and with ``types`` the field's payload types and indexes)."""
    meta = store.metadata() or {}
    changes: dict[str, Any] = {LABELS_KEY: {**recorded_labels(meta), name: entry}}
    if types:
        changes["payload_types"] = {**meta.get("payload_types", {}), **label_types(name)}
    store.update_metadata(changes)
    if types:
        keys = field_keys(name)
        store.create_payload_index(keys.best, "keyword")
        store.create_payload_index(keys.score, "float")


# The ingest hook: IngestOptions.labelers holds (field, top_k, labeler) entries; a labeler may also be a function of
# the run's encoder that makes one (zero-shot labels embed their prompts with the ingest's own text model).
LabelerEntry = tuple[str, int, Any]


def bind_labelers(entries: Sequence[LabelerEntry], encoder: Any,
                  columns: Sequence[str] = ()) -> list[tuple[str, int, Labeler]]:
    """The entries with each labeler made (a function of ``encoder`` is called with it) and checked: made for the
    encoder's image model (CollectionMismatchError), a plain field name apart from ``columns`` (the inputs' payload
    keys) and from each other, a top-k of at least 1 (UsageError). Before anything is written."""
    bound: list[tuple[str, int, Labeler]] = []
    for name, top_k, labeler in entries:
        if not isinstance(labeler, Labeler) and callable(labeler):
            labeler = labeler(encoder)
        check_labeler_model(labeler, encoder.spec(), "this ingest's model")
        check_field(name, None, columns, option="--label-field")
        if any(set(field_keys(name)) & set(field_keys(other)) for other, _, _ in bound):
            raise UsageError(f"--label-field {name}: two labelers would write the same payload keys")
        bound.append((name, check_top_k(top_k, labeler), labeler))
    return bound


def begin_ingest_labels(store: Store, entries: Sequence[tuple[str, int, Labeler]]) -> list[str]:
    """Before an ingest's first write: record each labeler's field (types, indexes, the labeler) in the collection.
    A field the collection's points already hold from other labels is marked ``partial``: the points this run
    does not embed keep them. Returns a warning for each such field. UsageError for a field holding data."""
    warnings = []
    had_points = store.count() > 0 if entries else False
    for name, top_k, labeler in entries:
        meta = store.metadata() or {}
        check_field(name, meta, option="--label-field")
        run = {"sha": labeler_sha(labeler), "top_k": top_k, "filter": None}
        recorded = recorded_labels(meta).get(name)
        if recorded is not None and {key: recorded.get(key) for key in run} == run:
            if had_points and (recorded.get("partial") or recorded.get("progress")):
                warnings.append(f"the {name!r} field is not on every point (an earlier run stopped, or points were "
                                f"embedded again without it), and this run labels only the points it embeds: "
                                f"`mmindex label -c {store.collection} --field {name} …` labels the rest")
            continue  # the same labels: the points this run does not embed hold them already (or none)
        _record(store, name, {**run, "labeler": labeler.describe(), "model": labeler.model, "written_by": "ingest",
                              "partial": had_points, "progress": None}, types=True)
        if had_points:
            warnings.append(f"the points this run does not embed keep their earlier {name!r} fields (or none): "
                            f"`mmindex label -c {store.collection} --field {name} …` gives every point these labels")
    return warnings


def mark_labels_dropped(store: Store, dropped: dict[str, int]) -> list[str]:
    """After an ingest: ``dropped`` (label field → points embedded again without it: their image or caption changed,
    so their old labels may be wrong and are not carried over) marks each field's record ``partial`` and returns a
    warning for each, saying how to label those points again."""
    if not dropped:
        return []
    meta = store.metadata() or {}
    labels, warnings = recorded_labels(meta), []
    for name, count in sorted(dropped.items()):
        entry = labels.get(name)
        if entry is None:
            continue
        _record(store, name, {**entry, "partial": True})
        given = "--probe FILE" if (entry.get("labeler") or {}).get("kind") == "probe" else "--labels FILE"
        warnings.append(f"{count:,} points embedded again no longer carry the {name!r} fields (their image or "
                        f"caption changed): run `mmindex label -c {store.collection} --field {name} {given}` again")
    return warnings


def with_labels(points: list, entries: Sequence[tuple[str, int, Labeler]]) -> list:
    """``points`` (``PointRecord``s with an ``image`` vector) with each labeler's fields in their payloads."""
    if not points:
        return points
    vectors = np.asarray([point.vectors[IMAGE] for point in points], dtype=np.float32) if entries else None
    for name, top_k, labeler in entries:
        if not isinstance(labeler, Labeler):  # a function of the encoder, never called: not a local ingest
            raise UsageError("labels at ingest (--labels) are made with the run's model on the local engine; on "
                             "Ray, ingest first, then run `mmindex label`")
        for point, given in zip(points, label_fields(labeler, vectors, name, top_k)):
            point.payload.update(given)
    return points
