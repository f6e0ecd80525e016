"""One schema per dataset: every input file's columns, their types reconciled, Hive partition keys.

The files of one dataset drift: a column added later, a caption column missing from the first
file, an id that is int64 in one file and numeric strings in another, Hive folders
(``year=2021/part-0.parquet``) whose key is in the path and not in the file. Each file's
schema is read (its footer only), and each column gets one type for the whole dataset:

* a column present in some files is kept; where a file lacks it, its rows hold null;
* encodings of one type are that type (dictionary, large, view: see ``plain_type``);
* types that pyarrow promotes without loss are promoted (int32 → int64, int → float64,
  timestamp units, …: ``pa.unify_schemas(promote_options="permissive")``);
* numbers and numeric strings become numbers (the strings are parsed value by value), and
  dates/timestamps and strings become timestamps;
* any other mix keeps the type of the first file that has the column.

A file whose type differs is named in a note; its values are converted as they are read
(``conform_batch``), and a value that does not convert rejects its row with the column and
the reason. Hive partition keys become columns (integers when every value is one).
"""
from __future__ import annotations

import datetime as dt
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Sequence
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc

from mmindex.pipeline.ingest.records import short_float


def plain_type(arrow_type: pa.DataType) -> pa.DataType:
    """The plain type behind an encoding: dictionary → its values, large/view strings and binaries → plain."""
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_large_string(arrow_type) or _is_view(arrow_type, "is_string_view"):
        return pa.string()
    if pa.types.is_large_binary(arrow_type) or _is_view(arrow_type, "is_binary_view"):
        return pa.binary()
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) \
            or _is_view(arrow_type, "is_list_view") or _is_view(arrow_type, "is_large_list_view"):
        return pa.list_(plain_type(arrow_type.value_type))
    return arrow_type


def _is_view(arrow_type: pa.DataType, test: str) -> bool:
    check = getattr(pa.types, test, None)  # view types arrived in pyarrow 16
    return bool(check and check(arrow_type))


HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"  # what Hive and Spark write for a null partition value


def hive_partitions(path: str, root: str | None) -> dict[str, str | None]:
    """``key=value`` folder names between ``root`` and the file, outermost first, URL-decoded as Hive
    writes them (``city=New%20York``); Hive's null folder is None."""
    if not root:
        return {}
    relative = posixpath.relpath(posixpath.dirname(path), root) if path.startswith(root) else ""
    found: dict[str, str | None] = {}
    for part in relative.split("/"):
        key, sep, value = part.partition("=")
        if sep and key and not key.startswith((".", "_")):
            found[unquote(key)] = None if value == HIVE_NULL else unquote(value)
    return found


@dataclass
class DatasetSchema:
    """The dataset's columns with one type each, and each file's Hive partition values."""

    schema: pa.Schema
    partitions: dict[str, dict[str, str | None]] = field(default_factory=dict)  # file → {key: value}
    partition_fields: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)


def unify(schemas: dict[str, pa.Schema], roots: dict[str, str] | None = None,
          display: dict[str, str] | None = None) -> DatasetSchema:
    """One schema over the files' schemas (in file order); ``roots`` give each file's input folder."""
    display = display or {}
    types: dict[str, list[tuple[str, pa.DataType]]] = {}
    file_types: dict[str, dict[str, pa.DataType]] = {}
    for path, schema in schemas.items():
        file_types[path] = {}
        for column in schema:
            file_types[path][column.name] = column.type
            types.setdefault(column.name, []).append((path, column.type))
    fields, notes = [], []
    for name, seen in types.items():
        target = _reconcile([plain_type(t) for _, t in seen])
        fields.append(pa.field(name, target))
        differing = [p for p, t in seen if plain_type(t) != target]
        if differing:
            shown = ", ".join(f"{display.get(p, p)} ({file_types[p][name]})" for p in differing[:3])
            more = f" and {len(differing) - 3} more" if len(differing) > 3 else ""
            notes.append(f"column {name!r} is {target} in the dataset; converted where read from {shown}{more} "
                         "(values that do not convert reject their rows)")
        if len(seen) < len(schemas):
            notes.append(f"column {name!r} is in {len(seen)} of {len(schemas)} files; rows of the others hold null")
    partitions = {path: hive_partitions(path, (roots or {}).get(path)) for path in schemas}
    keys: list[str] = []
    for found in partitions.values():
        keys.extend(k for k in found if k not in keys)
    partition_fields = []
    for key in keys:
        if key in types:
            notes.append(f"partition key {key!r} in folder names is also a column; files that have the column "
                         "keep its values, the others take the folder's")
            continue
        values = [found[key] for found in partitions.values() if found.get(key) is not None]
        kind = pa.string()
        if values and all(_is_int(v) for v in values):
            kind = pa.int64()
        elif values and all(_is_date(v) for v in values):
            kind = pa.date32()
        fields.append(pa.field(key, kind))
        partition_fields.append(key)
    if partition_fields:
        notes.append(f"partition key(s) {', '.join(partition_fields)} from folder names (key=value/) are payload "
                     "fields")
    return DatasetSchema(pa.schema(fields), partitions, tuple(partition_fields), notes)


def _is_int(text: str) -> bool:
    """An integer written as Python would print it: `01` is a code, not the number 1."""
    try:
        return str(int(text)) == text
    except ValueError:
        return False


def _is_date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10


def _reconcile(kinds: Sequence[pa.DataType]) -> pa.DataType:
    target = kinds[0]
    for kind in kinds[1:]:
        if kind == target:
            continue
        try:
            target = pa.unify_schemas([pa.schema([("c", target)]), pa.schema([("c", kind)])],
                                      promote_options="permissive").field("c").type
            continue
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            pass
        target = _mixed(target, kind)
    return target


def _mixed(first: pa.DataType, other: pa.DataType) -> pa.DataType:
    """Numbers win over strings (parsed value by value); timestamps over strings; else the first type."""
    for number, text in ((first, other), (other, first)):
        if pa.types.is_string(text) and (pa.types.is_integer(number) or pa.types.is_floating(number)):
            return pa.int64() if pa.types.is_integer(number) else pa.float64()
        if pa.types.is_string(text) and (pa.types.is_timestamp(number) or pa.types.is_date(number)):
            return number
    return first


def conform_batch(batch: pa.RecordBatch, columns: Sequence[str], dataset: DatasetSchema,
                  path: str) -> tuple[pa.RecordBatch, dict[int, str]]:
    """``columns`` of ``batch`` (read from ``path``) in the dataset's types, and rows that do not convert.

    Columns the file lacks are null; partition keys are the file's folder values. Returns the
    batch and ``{row index: reason}`` for values that cannot be converted (set to null).
    """
    if batch.schema.names == list(columns) and all(
            batch.schema.field(name).type == dataset.schema.field(name).type for name in columns):
        return batch, {}  # the usual case: this file is the dataset's schema
    arrays, errors = [], {}
    folders = dataset.partitions.get(path, {})
    for name in columns:
        target = dataset.schema.field(name).type
        if name in folders and name not in batch.schema.names:
            column, problems = convert_array(pa.array([folders[name]] * batch.num_rows, pa.string()), target, name)
            arrays.append(column)
            for index, reason in problems.items():
                errors.setdefault(index, f"{reason} (from the folder name {name}={folders[name]})")
            continue
        if name not in batch.schema.names:
            arrays.append(pa.nulls(batch.num_rows, target))
            continue
        column = batch.column(batch.schema.get_field_index(name))
        converted, problems = convert_array(column, target, name)
        arrays.append(converted)
        for index, reason in problems.items():
            errors.setdefault(index, reason)
    schema = pa.schema([dataset.schema.field(name) for name in columns])
    return pa.RecordBatch.from_arrays(arrays, schema=schema), errors


def convert_array(column: pa.Array, target: pa.DataType, name: str) -> tuple[pa.Array, dict[int, str]]:
    """``column`` as ``target``: whole when pyarrow casts it safely, else value by value with row errors."""
    if column.type == target:
        return column, {}
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
        if column.type == target:
            return column, {}
    if pa.types.is_float64(target) and (pa.types.is_float32(column.type) or pa.types.is_float16(column.type)):
        kind = column.type  # widen by value as written (0.1), not by bits (0.10000000149011612)
        return pa.array([None if v is None else short_float(v, kind) for v in column.to_pylist()], target), {}
    exact_floats = pa.types.is_floating(target) and pa.types.is_integer(column.type) and _beyond_float(column)
    textual = pa.types.is_string(column.type) and (pa.types.is_integer(target) or pa.types.is_floating(target))
    if not (exact_floats or textual):
        try:
            return pc.cast(column, target, safe=True), {}
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            pass
    values, errors = [], {}
    for index, value in enumerate(column.to_pylist()):
        try:
            values.append(_convert_value(value, target))
        except (ValueError, TypeError, OverflowError, pa.ArrowException) as error:
            values.append(None)
            why = str(error).splitlines()[0] if str(error) else type(error).__name__
            errors[index] = (f"column {name!r}: {_show(value)} does not convert to {target}, the column's type in "
                             f"the other files ({why})")
    return pa.array(values, target), errors


def _beyond_float(column: pa.Array) -> bool:
    """Whether some integer of ``column`` has no exact float64 (beyond 2**53)."""
    extremes = pc.min_max(column)
    return any(v is not None and abs(v) > 2**53 for v in (extremes["min"].as_py(), extremes["max"].as_py()))


_LEADING_ZERO = re.compile(r"[+-]?0\d")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _convert_value(value: Any, target: pa.DataType) -> Any:
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError("true/false is not a number")
    if isinstance(value, str) and (pa.types.is_integer(target) or pa.types.is_floating(target)):
        value = value.strip()
        if _LEADING_ZERO.match(value):
            raise ValueError("a leading zero would be lost")  # a code such as a ZIP, not a number
        if not _NUMBER.fullmatch(value):
            raise ValueError("not a number")
    if pa.types.is_integer(target):
        if isinstance(value, str):
            return int(value) if value.lstrip("+-").isdigit() else _integral(float(value))
        return _integral(value)
    if pa.types.is_floating(target):
        if isinstance(value, int) and abs(value) > 2**53:
            raise ValueError("no float64 holds it exactly")
        return float(value)
    if pa.types.is_timestamp(target) and isinstance(value, str):
        moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        if target.tz and moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.timezone.utc)
        return moment
    if pa.types.is_string(target) and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    # Anything else must already be what pyarrow can take as the target.
    pa.array([value], target)
    return value


def _integral(value: Any) -> int:
    if isinstance(value, int):
        return value  # exact: no detour through a float
    number = float(value)
    if not number.is_integer():
        raise ValueError("not a whole number")
    return int(number)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"
