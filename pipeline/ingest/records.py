"""Rows become points: deterministic ids, content hashes, and Arrow values as JSON payload.

Ids are UUIDv5, from the id column when there is one, else from the image bytes and
caption, so running the same ingest twice writes the same points. Payload values map
from Arrow to JSON that Qdrant can store and filter.
"""
from __future__ import annotations

import base64
import datetime as dt
import decimal
import functools
import hashlib
import math
import uuid
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa

from mmindex.keys import qdrant_key
from mmindex.pipeline.models.backend import CONTROL

# Fixed namespace: ids must be identical across machines and versions.
ID_NAMESPACE = uuid.UUID("6b1f9a52-43a4-5d3e-9d3c-6d6d696e6465")
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def point_id_from_key(key: Any) -> str:
    """The point id for a row whose id column holds ``key``.

    A whole float is its integer (``20.0`` and ``20`` are one id: pandas writes an integer id
    column that has a null as float64); text and numbers with the same digits are one id too.
    """
    if isinstance(key, bytes):
        key = key.hex()
    elif isinstance(key, float) and key.is_integer():
        key = int(key)
    return str(uuid.uuid5(ID_NAMESPACE, f"id:{key}"))


def id_problem(key: Any) -> str | None:
    """Why a value of the id column cannot identify a point, or None if it can."""
    if key is None:
        return "is null"
    if isinstance(key, float) and not math.isfinite(key):
        return f"is {key}"
    if isinstance(key, (list, tuple, dict)):
        return f"must be a single value, not a {type(key).__name__}"
    if isinstance(key, str) and not key.strip():
        return "is an empty string"
    return None


def clean_caption(value: Any) -> tuple[str | None, bool]:
    """The caption text to embed and store, and whether it had to be cleaned.

    Bytes are decoded as UTF-8 (bad sequences replaced), other values become strings,
    control characters become spaces; an empty or blank caption is None.
    """
    if value is None:
        return None, False
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = bytes(value).decode("utf-8", "replace")
    elif isinstance(value, str):
        text = value
    else:
        text = str(value)
    # U+FFFD marks bytes that were not UTF-8 (replaced here or when the column was read).
    cleaned = "\ufffd" in text
    if CONTROL.search(text):
        text = CONTROL.sub(" ", text)
        cleaned = True
    text = text.strip()
    return (text or None), cleaned


def column_values(column: pa.Array | pa.ChunkedArray, name: str) -> tuple[list[Any], dict[int, str], list[str]]:
    """A column as Python values, with per-row errors for values Python cannot hold, and warnings.

    Strings with invalid UTF-8 are decoded with replacement characters (a warning); values
    such as timestamps beyond year 9999 are errors for their row only, never for the batch.
    """
    try:
        return column.to_pylist(), {}, []
    except (UnicodeDecodeError, OverflowError, ValueError, pa.ArrowException):
        pass
    values: list[Any] = []
    errors: dict[int, str] = {}
    repaired = 0
    is_text = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
    raw = column.cast(pa.large_binary()) if is_text else None
    for index in range(len(column)):
        try:
            values.append(column[index].as_py())
        except UnicodeDecodeError as error:
            if raw is None:  # invalid UTF-8 nested in a struct or list: the row's value is unusable
                values.append(None)
                errors[index] = f"column {name!r}: text that is not valid UTF-8 ({error.reason})"
                continue
            values.append(raw[index].as_py().decode("utf-8", "replace"))
            repaired += 1
        except (OverflowError, ValueError, pa.ArrowException) as error:
            values.append(None)
            errors[index] = f"column {name!r}: value cannot be read ({error})"
    warnings = [f"{name}: {repaired} value(s) with invalid UTF-8; bad bytes replaced with U+FFFD"] if repaired else []
    return values, errors, warnings


def point_id_from_content(image: bytes, caption: str | None) -> str:
    """The point id for a row without an id column: a hash of what it holds."""
    digest = hashlib.sha256(image).hexdigest() + ":" + hashlib.sha256((caption or "").encode()).hexdigest()
    return str(uuid.uuid5(ID_NAMESPACE, f"content:{digest}"))


def content_hash(image: bytes, caption: str | None, model: str) -> str:
    """What a point was made from; equal hashes mean re-embedding would give the same point."""
    h = hashlib.sha256()
    for part in (image, (caption or "").encode(), model.encode()):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def rfc3339(value: dt.datetime | dt.date) -> str:
    """A timestamp as RFC 3339, the form Qdrant's datetime filters and indexes accept."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        value = value.astimezone(dt.timezone.utc)
        text = value.strftime("%Y-%m-%dT%H:%M:%S")
        if value.microsecond:
            text += f".{value.microsecond:06d}"
        return text + "Z"
    return f"{value.isoformat()}T00:00:00Z"


def payload_columns(batch: pa.RecordBatch, columns: Sequence[str], key_of: Callable[[str], str] = str
                    ) -> tuple[list[dict[str, Any]], list[str], dict[int, str]]:
    """Convert the payload columns of a batch to JSON dicts, one per row, plus warnings and row errors.

    ``key_of`` gives each column's payload key (``ColumnMapping.payload_key``). Values are
    rendered by their Arrow type at every depth (``to_json_value``); a column that holds
    nothing but binary below its top level (``stored_type`` is None) writes no key.
    """
    rows: list[dict[str, Any]] = [{} for _ in range(batch.num_rows)]
    warnings: list[str] = []
    errors: dict[int, str] = {}
    for name in columns:
        column = batch.column(batch.schema.get_field_index(name))
        if stored_type(column.type) is None:
            continue
        column = floats_as_written(column)
        values, column_errors, column_warnings = column_values(column, name)
        warnings.extend(column_warnings)
        for index, problem in column_errors.items():
            errors.setdefault(index, problem)
        key, convert = key_of(name), json_converter(column.type)
        for index, value in enumerate(values):
            rows[index][key] = convert(value, warnings, name)
    return rows, warnings, errors


def short_float(value: float, arrow_type: pa.DataType) -> float:
    """A float32 (or float16) as the shortest decimal that reads back as it: 0.1, not 0.10000000149011612.

    Widened exactly, a float32 0.1 is 0.10000000149011612 as a float64, which no filter
    written as 0.1 would equal; the shortest decimal is the number the user wrote.
    """
    narrow = np.float16 if pa.types.is_float16(arrow_type) else np.float32
    return float(str(narrow(value)))


# -- the value rules, applied at every depth ------------------------------------------------
# A value inside a list, struct or map follows the rules of its own Arrow type, exactly as in a
# column of that type: float32 as its shortest decimal, timestamps as RFC 3339, and so on. The one
# difference is binary: a binary column is kept as base64 when named in --payload-cols, but binary
# below the top level (image bytes in a Hugging Face ``Sequence(Image())`` column) is left out, its
# sibling fields kept, and the run's notes name what was left out (``left_out_binary``).
def _decoded(arrow_type: pa.DataType) -> pa.DataType:
    """The type of the values behind an encoding (a dictionary's values)."""
    return arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type


def is_list_type(arrow_type: pa.DataType) -> bool:
    """list, large_list, fixed_size_list and the list views: JSON arrays all."""
    t = arrow_type
    return (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
            or pa.types.is_list_view(t) or pa.types.is_large_list_view(t))


def is_binary_type(arrow_type: pa.DataType) -> bool:
    t = _decoded(arrow_type)
    return (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)
            or pa.types.is_binary_view(t))


@functools.lru_cache(maxsize=1024)
def stored_type(arrow_type: pa.DataType, nested: bool = False) -> pa.DataType | None:
    """The Arrow type of what the payload stores for ``arrow_type``: binary below the top level removed.

    A struct keeps its other fields, a list or map of binary is removed whole, and None means
    nothing is left. A type without binary inside comes back as it is.
    """
    t = _decoded(arrow_type)
    if is_binary_type(t):
        return None if nested else arrow_type
    if pa.types.is_struct(t):
        kept = [(child, stored_type(child.type, True)) for child in t]
        if all(kind is not None and kind == child.type for child, kind in kept):
            return arrow_type
        fields = [child.with_type(kind) for child, kind in kept if kind is not None]
        return pa.struct(fields) if fields else None
    if is_list_type(t):
        item = stored_type(t.value_type, True)
        if item is None:
            return None
        return arrow_type if item == t.value_type else pa.list_(t.value_field.with_type(item))
    if pa.types.is_map(t):
        key, item = stored_type(t.key_type, True), stored_type(t.item_type, True)
        if key is None or item is None:
            return None
        return arrow_type if (key, item) == (t.key_type, t.item_type) else pa.map_(key, item)
    return arrow_type


def left_out_binary(schema: pa.Schema, columns: Sequence[str]) -> tuple[tuple[str, ...], list[str]]:
    """``columns`` without those that hold only binary below their top level, and notes naming what is left out.

    A note names each binary field inside a kept column (``crops[].bytes``) and each column left
    out whole; top-level binary columns are the caller's to decide (kept when named).
    """
    kept, notes = [], []
    for name in columns:
        arrow_type = schema.field(name).type
        paths = _binary_paths(arrow_type, name)
        if stored_type(arrow_type) is None:
            notes.append(f"payload: column {name!r} left out: it holds only binary values ({arrow_type}), which "
                         "are not stored inside lists, structs or maps")
            continue
        kept.append(name)
        if paths:
            notes.append(f"payload: binary field(s) {', '.join(paths)} left out (binary inside lists, structs and "
                         f"maps is never stored; the other fields of {name!r} are)")
    return tuple(kept), notes


def _binary_paths(arrow_type: pa.DataType, path: str, nested: bool = False) -> list[str]:
    t = _decoded(arrow_type)
    if is_binary_type(t):
        return [path] if nested else []
    if pa.types.is_struct(t):
        return [p for child in t for p in _binary_paths(child.type, f"{path}.{child.name}", True)]
    if is_list_type(t):
        return _binary_paths(t.value_type, f"{path}[]", True)
    if pa.types.is_map(t):
        return _binary_paths(t.key_type, f"{path}.<key>", True) + _binary_paths(t.item_type, f"{path}.*", True)
    return []


def floats_as_written(column: pa.Array) -> pa.Array:
    """``column`` with its float32 values, at any depth, as float64 holding their shortest decimal (in bulk).

    Arrow writes a float32 as its shortest round-trip decimal ("0.1"), which reads back as the
    float64 0.1. Float16, dictionaries of floats and what Arrow cannot cast stay for
    ``json_converter``, value by value.
    """
    wide = _float32_as(column.type, pa.float64())
    if wide == column.type:
        return column
    try:
        return column.cast(_float32_as(column.type, pa.string())).cast(wide)
    except (pa.ArrowException, ValueError):
        return column


def _float32_as(arrow_type: pa.DataType, other: pa.DataType) -> pa.DataType:
    t = arrow_type
    if pa.types.is_float32(t):
        return other
    if pa.types.is_struct(t):
        return pa.struct([child.with_type(_float32_as(child.type, other)) for child in t])
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        item = t.value_field.with_type(_float32_as(t.value_type, other))
        return (pa.list_(item) if pa.types.is_list(t) else pa.large_list(item) if pa.types.is_large_list(t)
                else pa.list_(item, t.list_size))
    if pa.types.is_map(t):
        return pa.map_(t.key_field.with_type(_float32_as(t.key_type, other)),
                       t.item_field.with_type(_float32_as(t.item_type, other)))
    return t


def to_json_value(value: Any, arrow_type: pa.DataType | None = None, warnings: list[str] | None = None,
                  field: str = "") -> Any:
    """One Arrow value (as Python) into JSON that Qdrant stores faithfully, by its Arrow type at every depth.

    Without ``arrow_type`` the value's Python type decides (a float is kept as it is).
    """
    if arrow_type is not None:
        return json_converter(arrow_type)(value, warnings, field)
    return None if value is None else _scalar_json(value, None, warnings, field)


Converter = Callable[[Any, "list[str] | None", str], Any]


@functools.lru_cache(maxsize=1024)
def json_converter(arrow_type: pa.DataType) -> Converter:
    """``convert(value, warnings, field)``: values of ``arrow_type`` (as Python) into JSON, the same rules at every
    depth; binary below the top level left out (``stored_type``). Built once per type: a column's values are many."""
    t = _decoded(arrow_type)
    if pa.types.is_struct(t):
        children = [(child.name, json_converter(child.type)) for child in t
                    if stored_type(child.type, True) is not None]
        return lambda value, warnings, field: None if value is None else {
            name: convert(value.get(name), warnings, f"{field}.{name}") for name, convert in children}
    if pa.types.is_map(t):
        key, item = json_converter(t.key_type), json_converter(t.item_type)
        return lambda value, warnings, field: None if value is None else {
            str(key(k, None, field)): item(v, warnings, f"{field}.{k}") for k, v in value}
    if is_list_type(t):
        item = json_converter(t.value_type)
        if item is _as_is:
            return _as_is  # a list of strings, integers or booleans is JSON already
        return lambda value, warnings, field: None if value is None else [item(v, warnings, field) for v in value]
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t) or (
            pa.types.is_integer(t) and not pa.types.is_uint64(t)):
        return _as_is  # JSON already (an int64 fits Qdrant's integers)
    if pa.types.is_float64(t):
        return _finite
    return lambda value, warnings, field: None if value is None else _scalar_json(value, t, warnings, field)


def _as_is(value: Any, warnings: list[str] | None, field: str) -> Any:
    return value


def _finite(value: Any, warnings: list[str] | None, field: str) -> Any:
    return value if value is None or math.isfinite(value) else None  # NaN and ±inf are null


def _scalar_json(value: Any, arrow_type: pa.DataType | None, warnings: list[str] | None, field: str) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if value > INT64_MAX or value < INT64_MIN:
            # Qdrant integers are 64-bit signed: keep the exact digits as a string.
            if warnings is not None and len(warnings) < 100:
                warnings.append(f"{field}: {value} does not fit a 64-bit signed integer; stored as a string")
            return str(value)
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if arrow_type is not None and (pa.types.is_float32(arrow_type) or pa.types.is_float16(arrow_type)):
            return short_float(value, arrow_type)
        return value
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return None
        number = float(value)
        if decimal.Decimal(repr(number)) != value.normalize() and warnings is not None and len(warnings) < 100:
            warnings.append(f"{field}: {value} has no exact 64-bit float; stored as {number!r}")
        return number
    if isinstance(value, str):
        return value
    if isinstance(value, (dt.datetime, dt.date)):
        return rfc3339(value)
    if isinstance(value, dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_json_value(v, None, warnings, f"{field}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v, None, warnings, field) for v in value]
    return str(value)


def index_kind(arrow_type: pa.DataType) -> str | None:
    """The Qdrant payload index type for an Arrow type, or None if it has none."""
    t = _decoded(arrow_type)
    if is_list_type(t):
        t = _decoded(t.value_type)  # one level: Qdrant matches the elements of an array, not of arrays in it
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "keyword"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "datetime"
    return None


def payload_types(schema: pa.Schema, columns: Sequence[str], key_of: Callable[[str], str] = str) -> dict[str, str]:
    """The payload field types a collection records (by payload key), from the Arrow schema.

    Every field below a column is recorded too, under its Qdrant path with the top-level key in
    double quotes (a key no column can have): ``"meta".y`` for a struct's field, ``"tags"[]``
    for a list's elements, ``"items"[].price`` for a field of a list of structs, ``"m".*`` for
    a map's values. So ``--where`` types ``meta.y = 2020`` or ``items.price < 5`` like a column,
    and knows how deep the lists go (``is null`` looks through every level).
    """
    types = {}
    for name in columns:
        arrow_type = stored_type(schema.field(name).type)
        if arrow_type is None:
            continue  # only binary below the top level: not stored
        key = key_of(name)
        types[key] = _recorded_type(arrow_type)
        if '"' not in key and "\\" not in key:
            types.update(_nested_fields(arrow_type, f'"{key}"'))
    return types


def _recorded_type(arrow_type: pa.DataType) -> str:
    return index_kind(arrow_type) or str(arrow_type)


def _nested_fields(arrow_type: pa.DataType, prefix: str) -> dict[str, str]:
    """Every path below ``prefix`` in ``arrow_type`` (binary already removed) → its recorded type."""
    t = _decoded(arrow_type)
    if is_list_type(t):
        children = [(f"{prefix}[]", t.value_type)]
    elif pa.types.is_map(t):
        children = [(f"{prefix}.*", t.item_type)]  # any key: unquoted * is no field name (qdrant_key quotes it)
    elif pa.types.is_struct(t):
        # A name with a quote or backslash cannot be written in Qdrant's paths.
        children = [(f"{prefix}.{qdrant_key(c.name)}", c.type) for c in t if '"' not in c.name and "\\" not in c.name]
    else:
        return {}
    found = {}
    for path, child_type in children:
        found[path] = _recorded_type(child_type)
        found.update(_nested_fields(child_type, path))
    return found
