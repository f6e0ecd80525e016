"""``ClassLabel`` columns of Hugging Face ``datasets``: their names into the payload, the integer kept too.

``datasets`` stores a ``ClassLabel`` as its integer (int64) and writes the names in the features it keeps
in the schema metadata key ``huggingface`` (``{"info": {"features": {…}}}``) of every Arrow shard and
Parquet file it writes; ``dataset_info.json`` beside the files has the same ``features`` (the fallback).
A column ``label`` of ``ClassLabel(names=["cat", "dog"])`` is read as two payload fields: ``label``, the
class name (``"dog"``), and ``label_id``, the integer (``1``). A ``Sequence(ClassLabel)`` or
``List(ClassLabel)`` column becomes a list of names and a list of integers.

* ``-1`` is how ``datasets`` writes "no label" (``ClassLabel.str2int`` of a missing label, test splits
  without labels): both fields are null, as for a null cell (in a list: a null item).
* Any other integer outside ``0 … len(names) - 1`` rejects its row, with the field and the value
  (``name_labels``'s row errors; the run names the file and row).
* A column already named ``<col>_id`` is refused (``InputError``): the integer would have nowhere to go.
* Only top-level columns and lists of labels are named (any Arrow list kind: ``list``, ``large_list``,
  ``fixed_size_list`` as ``Sequence(ClassLabel, length=n)`` writes, ``list_view``, ``large_list_view``); a
  ``ClassLabel`` deeper down (inside a struct, a list of lists) is left as its integers, and the run's notes say
  which field and why (``unnamed_label_notes``). A column of strings (names already written out) is left as it is.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmindex.errors import InputError

HF_METADATA_KEY = b"huggingface"  # datasets.arrow_writer / datasets.features: schema metadata of its files
INFO_FILE = "dataset_info.json"  # datasets.config.DATASET_INFO_FILENAME
NO_LABEL = -1  # datasets' "no label"
LIST_TYPES = ("Sequence", "List", "LargeList")  # feature types that hold a list of their "feature"


@dataclass(frozen=True)
class ClassLabel:
    """A ``ClassLabel`` column: its names, in the order of their integers; ``many``: a list of labels per row."""

    column: str
    names: tuple[str, ...]
    many: bool = False

    @property
    def id_column(self) -> str:
        """The column (payload field) that keeps the integer: ``<column>_id``."""
        return f"{self.column}_id"


def features_in(schema: pa.Schema) -> dict[str, Any] | None:
    """The ``datasets`` features a file's schema metadata carries (``huggingface`` → info → features), or None."""
    raw = (schema.metadata or {}).get(HF_METADATA_KEY)
    if not raw:
        return None
    try:
        features = json.loads(raw).get("info", {}).get("features")
    except (ValueError, AttributeError):
        return None
    return features if isinstance(features, dict) else None


def features_beside(path: str) -> dict[str, Any] | None:
    """The ``features`` of ``dataset_info.json`` in a local file's folder or the folder above it, or None."""
    folder = os.path.dirname(path)
    for candidate in (folder, os.path.dirname(folder)):
        try:
            with open(os.path.join(candidate, INFO_FILE), encoding="utf-8") as handle:
                features = json.load(handle).get("features")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(features, dict):
            return features
    return None


def class_labels(features: Mapping[str, Any]) -> dict[str, ClassLabel]:
    """The ``ClassLabel`` and list-of-``ClassLabel`` columns among serialized ``datasets`` features."""
    found: dict[str, ClassLabel] = {}
    for column, feature in features.items():
        names = _names(feature)
        if names is not None:
            found[column] = ClassLabel(column, names)
            continue
        inner = _item_feature(feature)
        names = _names(inner) if inner is not None else None
        if names is not None:
            found[column] = ClassLabel(column, names, many=True)
    return found


def _names(feature: Any) -> tuple[str, ...] | None:
    if isinstance(feature, dict) and feature.get("_type") == "ClassLabel" and isinstance(feature.get("names"), list):
        return tuple(str(name) for name in feature["names"])
    return None


def _item_feature(feature: Any) -> Any:
    """The feature of a list's items: ``{"_type": "List", "feature": …}``, or ``[…]`` as older versions write it."""
    if isinstance(feature, list) and len(feature) == 1:
        return feature[0]
    if isinstance(feature, dict) and feature.get("_type") in LIST_TYPES:
        return feature.get("feature")
    return None


def labels_of_files(schemas: Mapping[str, pa.Schema], display: Mapping[str, str],
                    beside: Callable[[str], dict[str, Any] | None] | None = None) -> dict[str, ClassLabel]:
    """The ``ClassLabel`` columns of a data set: each file's schema metadata, else ``beside(path)`` (the
    features of a ``dataset_info.json``). Raises InputError when two files give one column other names."""
    found: dict[str, ClassLabel] = {}
    first: dict[str, str] = {}
    for path, schema in schemas.items():
        features = features_in(schema)
        if features is None and beside is not None:
            features = beside(path)
        for column, label in class_labels(features or {}).items():
            if column not in found:
                found[column], first[column] = label, path
            elif found[column] != label:
                raise InputError(
                    f"column {column!r} is a ClassLabel with names {list(label.names)} here but "
                    f"{list(found[column].names)} in {display.get(first[column], first[column])}; ingest the two "
                    "apart", file=display.get(path, path))
    return found


def label_schema(schema: pa.Schema, labels: Mapping[str, ClassLabel],
                 where: Callable[[str, bool], str | None] | None = None) -> tuple[pa.Schema, dict[str, ClassLabel]]:
    """``schema`` with each ``ClassLabel`` column of integers as names (strings, or lists of them) followed by
    its ``<col>_id`` integers; and the labels named so. Raises InputError if ``<col>_id`` is a column already,
    naming the file ``where(column, False)`` says holds that column and the one ``where(column, True)`` says
    holds the ClassLabel's integers."""
    named: dict[str, ClassLabel] = {}
    fields: list[pa.Field] = []
    for field in schema:
        label = labels.get(field.name)
        if label is None or not _of_integers(field.type, label.many):
            fields.append(field)
            continue
        if label.id_column in schema.names:
            labelled = where(field.name, True) if where else None
            raise InputError(
                f"column {field.name!r} is a ClassLabel{f' in {labelled}' if labelled else ''}: its names go into the "
                f"payload field {field.name!r} and its integers into {label.id_column!r}, but {label.id_column!r} is a "
                "column of this file already; rename that column (or cast the ClassLabel column to its names) first",
                file=where(label.id_column, False) if where else None)
        wrap = pa.list_ if label.many else (lambda kind: kind)
        fields += [pa.field(field.name, wrap(pa.string())), pa.field(label.id_column, wrap(pa.int64()))]
        named[field.name] = label
    return pa.schema(fields, metadata=schema.metadata), named


def is_list_kind(arrow_type: pa.DataType) -> bool:
    """Whether ``arrow_type`` is one of Arrow's list types (list, large_list, fixed_size_list, list views)."""
    checks = ("is_list", "is_large_list", "is_fixed_size_list", "is_list_view", "is_large_list_view")
    return any(getattr(pa.types, check, lambda _: False)(arrow_type) for check in checks)  # views: pyarrow ≥ 16


def _of_integers(arrow_type: pa.DataType, many: bool) -> bool:
    if many:
        if not is_list_kind(arrow_type):
            return False
        arrow_type = arrow_type.value_type
    return pa.types.is_integer(arrow_type)


def _of_strings(arrow_type: pa.DataType) -> bool:
    if is_list_kind(arrow_type):
        arrow_type = arrow_type.value_type
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


def unnamed_label_notes(schemas: Mapping[str, pa.Schema], schema: pa.Schema,
                        beside: Callable[[str], dict[str, Any] | None] | None = None) -> list[str]:
    """Notes for the ``ClassLabel`` features that stay integers in the payload: one inside a struct or a list of
    lists (``meta.kind``, ``boxes[][]``: only top-level columns and lists of labels are named), or a column whose
    Arrow type is neither integers nor names (``schema``: the data set's, before ``label_schema``)."""
    nested: dict[str, None] = {}
    for path, file_schema in schemas.items():
        features = features_in(file_schema)
        if features is None and beside is not None:
            features = beside(path)
        for column, feature in (features or {}).items():
            if _names(feature) is None and _names(_item_feature(feature)) is None:
                nested.update(dict.fromkeys(_label_paths(feature, column)))
        for column, label in class_labels(features or {}).items():
            if column in schema.names and not (_of_integers(schema.field(column).type, label.many)
                                               or _of_strings(schema.field(column).type)):
                nested.setdefault(f"{column} ({schema.field(column).type})")
    return [f"ClassLabel {where} stays integers: only a top-level ClassLabel column or a list of them is read as "
            "names" for where in nested]


def _label_paths(feature: Any, path: str) -> list[str]:
    """The paths of the ``ClassLabel`` features inside ``feature`` (``a.b``, ``a[]``), itself included."""
    if _names(feature) is not None:
        return [path]
    inner = _item_feature(feature)
    if inner is not None:
        return _label_paths(inner, path + "[]")
    if isinstance(feature, dict) and "_type" not in feature:  # a struct: its fields by name
        return [found for key, value in feature.items() for found in _label_paths(value, f"{path}.{key}")]
    return []


def columns_to_read(wanted: Sequence[str], labels: Mapping[str, ClassLabel]) -> list[str]:
    """The columns to read from a file for ``wanted``: a ``<col>_id`` column is made from ``<col>``."""
    made = {label.id_column: column for column, label in labels.items()}
    return list(dict.fromkeys(made.get(column, column) for column in wanted))


def name_labels(batch: pa.RecordBatch, labels: Mapping[str, ClassLabel]) -> tuple[pa.RecordBatch, dict[int, str]]:
    """``batch`` with each ``ClassLabel`` column it holds as names plus its ``<col>_id`` column (``label_schema``),
    and ``{row index: reason}`` for rows holding an integer that is not a class (their values are null)."""
    present = [column for column in labels if column in batch.schema.names]
    if not present:
        return batch, {}
    arrays, fields, errors = [], [], {}
    for index, field in enumerate(batch.schema):
        label = labels.get(field.name)
        if label is None:
            arrays.append(batch.column(index))
            fields.append(field)
            continue
        names, ids, bad = label_arrays(batch.column(index), label)
        for row, value in bad:
            errors.setdefault(row, f"field {label.column!r}: class label {value} is not one of the "
                                   f"{len(label.names)} names of its ClassLabel ({_span(label.names)}; -1 means no "
                                   "label)")
        arrays += [names, ids]
        fields += [pa.field(field.name, names.type), pa.field(label.id_column, ids.type)]
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields)), errors


def _span(names: Sequence[str]) -> str:
    return f"0 to {len(names) - 1}" if names else "it has none"


def label_arrays(column: pa.Array, label: ClassLabel) -> tuple[pa.Array, pa.Array, list[tuple[int, int]]]:
    """(names, integers, [(row, value)] of values that are not a class) for one ``ClassLabel`` column; -1 and
    null give null in both; so does a value that is not a class."""
    if not label.many:
        names, ids, bad = _map_flat(column, label.names)
        return names, ids, [(int(row), int(column[int(row)].as_py())) for row in bad]
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]), pa.int32())
    flat = pc.list_flatten(column)
    names, ids, bad = _map_flat(flat, label.names)
    parents = np.repeat(np.arange(len(column)), lengths)
    mask = column.is_null()
    problems = [(int(parents[item]), int(flat[int(item)].as_py())) for item in bad]
    return (pa.ListArray.from_arrays(offsets, names, mask=mask), pa.ListArray.from_arrays(offsets, ids, mask=mask),
            problems)


def _map_flat(values: pa.Array, names: Sequence[str]) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """(names, integers, positions of values that are neither a class nor -1) of a flat array of integers."""
    ints = pc.cast(values, pa.int64())
    valid = pc.and_(pc.greater_equal(ints, 0), pc.less(ints, len(names)))
    ids = pc.if_else(valid, ints, pa.scalar(None, pa.int64()))
    named = pc.take(pa.array(list(names), pa.string()), ids)
    bad = pc.fill_null(pc.and_(pc.invert(valid), pc.not_equal(ints, NO_LABEL)), False)
    return named, ids, np.flatnonzero(bad.to_numpy(zero_copy_only=False))
