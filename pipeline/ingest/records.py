"""Rows become points: deterministic ids, content hashes, and Arrow values as JSON payload.

Ids are UUIDv5, from the id column when there is one, else from the image bytes and
caption, so running the same ingest twice writes the same points. Payload values map
from Arrow to JSON that Qdrant can store and filter.
"""
from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import math
import re
import uuid
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa

from mmindex.keys import qdrant_key

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


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")


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
    if _CONTROL.search(text):
        text = _CONTROL.sub(" ", text)
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

    ``key_of`` gives each column's payload key (``ColumnMapping.payload_key``).
    """
    rows: list[dict[str, Any]] = [{} for _ in range(batch.num_rows)]
    warnings: list[str] = []
    errors: dict[int, str] = {}
    for name in columns:
        column = batch.column(batch.schema.get_field_index(name))
        values, column_errors, column_warnings = column_values(column, name)
        warnings.extend(column_warnings)
        for index, problem in column_errors.items():
            errors.setdefault(index, problem)
        key = key_of(name)
        for index, value in enumerate(values):
            rows[index][key] = to_json_value(value, column.type, warnings, name)
    return rows, warnings, errors


def short_float(value: float, arrow_type: pa.DataType) -> float:
    """A float32 (or float16) as the shortest decimal that reads back as it: 0.1, not 0.10000000149011612.

    Widened exactly, a float32 0.1 is 0.10000000149011612 as a float64, which no filter
    written as 0.1 would equal; the shortest decimal is the number the user wrote.
    """
    narrow = np.float16 if pa.types.is_float16(arrow_type) else np.float32
    return float(str(narrow(value)))


def to_json_value(value: Any, arrow_type: pa.DataType | None = None, warnings: list[str] | None = None,
                  field: str = "") -> Any:
    """One Arrow value (as Python) into JSON that Qdrant stores faithfully."""
    if value is None:
        return None
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
        if arrow_type is not None and pa.types.is_map(arrow_type):
            return {str(k): to_json_value(v, None, warnings, f"{field}.{k}") for k, v in value}
        return [to_json_value(v, None, warnings, field) for v in value]
    return str(value)


def index_kind(arrow_type: pa.DataType) -> str | None:
    """The Qdrant payload index type for an Arrow type, or None if it has none."""
    t = arrow_type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        t = t.value_type  # one level: Qdrant matches the elements of an array, not of arrays in it
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "keyword"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "datetime"
    return None


def payload_types(schema: pa.Schema, columns: Sequence[str], key_of: Callable[[str], str] = str) -> dict[str, str]:
    """The payload field types a collection records (by payload key), from the Arrow schema.

    The fields inside struct columns are recorded too, under their path with the top-level key
    in double quotes (``"meta".y``), a key no column can have, so ``--where meta.y = 2020`` is
    typed like a column.
    """
    types = {}
    for name in columns:
        arrow_type = schema.field(name).type
        key = key_of(name)
        types[key] = index_kind(arrow_type) or str(arrow_type)
        if pa.types.is_struct(arrow_type) and '"' not in key and "\\" not in key:
            types.update(_struct_fields(arrow_type, f'"{key}"'))
    return types


def _struct_fields(arrow_type: pa.StructType, prefix: str) -> dict[str, str]:
    found = {}
    for index in range(arrow_type.num_fields):
        child = arrow_type.field(index)
        if '"' in child.name or "\\" in child.name:
            continue  # Qdrant's paths cannot name it
        path = f"{prefix}.{qdrant_key(child.name)}"
        found[path] = index_kind(child.type) or str(child.type)
        if pa.types.is_struct(child.type):
            found.update(_struct_fields(child.type, path))
    return found
