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
* any other mix keeps the type of the first file that has values in the column;
* a column without values has no say: all of a file without rows, an Arrow ``null`` column, and
  where types disagree a column of nulls only (``unify``).

A file whose type differs is named in a note; its values are converted as they are read
(``conform_batch``), and a value that does not convert rejects its row with the column and
the reason. Hive partition keys become columns (integers when every value is one). A later run
reads a column in the type its collection records for it, with the same conversions
(``keep_recorded_types``). Footers are checked before anything trusts them (``read_footer``).
"""
from __future__ import annotations

import datetime as dt
import decimal
import math
import posixpath
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mmindex.connectors.base import FILTER_TYPES
from mmindex.errors import CollectionMismatchError
from mmindex.pipeline.ingest.records import index_kind, short_float


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


class BadFooter(ValueError):
    """A footer that does not describe its file (a length beyond the file, row counts that disagree)."""


@dataclass(frozen=True)
class Footer:
    """What a file's footer said when the run listed it: the file's size and time, the rows of each row group,
    and the schema."""

    size: int
    mtime_ns: int | None
    row_groups: tuple[int, ...]
    schema: pa.Schema


# What reading a footer raises (a column name that is not UTF-8 is a UnicodeDecodeError).
FOOTER_ERRORS = (OSError, pa.ArrowException, BadFooter, MemoryError, UnicodeDecodeError)
MAX_FOOTER_BYTES = 256 * 2**20  # more is a lie (or a dataset mmindex should not read in one piece)


def read_footer(filesystem: pafs.FileSystem, path: str) -> tuple[Footer, pq.ParquetFile]:
    """A file's footer, checked against the file before anything trusts it, and the file opened to read rows.

    Raises one of ``FOOTER_ERRORS``: a file that does not end as Parquet does (cut short), a footer
    longer than the file or than ``MAX_FOOTER_BYTES``, row counts that disagree; never allocates
    what a footer claims before checking it.
    """
    info = filesystem.get_file_info(path)
    handle = filesystem.open_input_file(path)
    size = handle.size()
    if size < 12:
        raise BadFooter(f"{size} bytes is too small for a Parquet file")
    tail = handle.read_at(8, size - 8)
    if tail[4:] not in (b"PAR1", b"PARE"):  # PARE: an encrypted footer, pyarrow's to refuse
        raise BadFooter(f"it does not end as a Parquet file does (cut short, still being written, or not Parquet; "
                        f"{size:,} bytes)")
    claimed = int.from_bytes(tail[:4], "little")
    if claimed > min(size - 12, MAX_FOOTER_BYTES):
        limit = "more than the file has" if claimed > size - 12 else f"over the {MAX_FOOTER_BYTES:,} mmindex reads"
        raise BadFooter(f"its footer claims {claimed:,} bytes, {limit} (the file has {size:,})")
    parquet = pq.ParquetFile(handle)
    metadata = parquet.metadata
    groups = tuple(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups))
    problem = footer_problem(metadata, groups)
    if problem:
        raise BadFooter(f"its footer does not describe it: {problem}")
    mtime = info.mtime_ns if info.type == pafs.FileType.File else None
    return Footer(size, mtime, groups, parquet.schema_arrow), parquet


def footer_problem(metadata: pq.FileMetaData, groups: tuple[int, ...]) -> str | None:
    """Why a footer cannot be the truth about its file, or None: the file holds as many rows as its row groups,
    none of them below zero. What the row groups claim beyond that is checked as they are read (a row
    group that holds other rows than it says is an error); their column chunks are not looked at here, since
    pyarrow aborts the process on some broken ones instead of raising."""
    if any(rows < 0 for rows in groups) or sum(groups) != metadata.num_rows:
        shown = ", ".join(f"{rows:,}" for rows in groups[:5]) + (" …" if len(groups) > 5 else "")
        return f"{metadata.num_rows:,} rows in all, but row groups of {shown or 'no'} rows"
    return None


def holds_values(filesystem: pafs.FileSystem, path: str, column: str) -> bool:
    """Whether ``column`` of the file holds a value, read a page at a time until one does; True when it cannot
    be read (reading the rows reports that). Column statistics would say it without reading, but pyarrow
    aborts the process on some broken ones."""
    try:
        parquet = pq.ParquetFile(filesystem.open_input_file(path), pre_buffer=False, buffer_size=1 << 16)
        for batch in parquet.iter_batches(batch_size=64, columns=[column], use_threads=False):
            if batch.column(0).null_count < batch.num_rows:
                return True
        return False
    except FOOTER_ERRORS:
        return True


def read_footers(filesystem: pafs.FileSystem, files: Sequence[str],
                 read: Callable[[pafs.FileSystem, str], Footer] | None = None) -> list[Footer | Exception]:
    """Every file's footer, or the error reading it; several at once, since on an object store each is a round
    trip. ``read(filesystem, path)``: how one footer is read (default: a Parquet footer, ``read_footer``)."""
    def read_one(path: str) -> Footer | Exception:
        try:
            return read(filesystem, path) if read is not None else read_footer(filesystem, path)[0]
        except FOOTER_ERRORS as error:
            return error

    if len(files) == 1:
        return [read_one(files[0])]
    with ThreadPoolExecutor(max_workers=min(16, len(files)), thread_name_prefix="mmindex-schema") as pool:
        return list(pool.map(read_one, files))


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
    """The dataset's columns with one type each, and each file's Hive partition values.

    ``origins`` names, per column, the first file that holds values of each of its types (plain
    types); ``without_values`` lists per file the columns known to hold no value there (all of a
    file without rows): they were not asked what type a column is, and every one of their values
    converts. ``reasons`` says, per column whose type a collection decided, why.
    """

    schema: pa.Schema
    partitions: dict[str, dict[str, str | None]] = field(default_factory=dict)  # file → {key: value}
    partition_fields: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    origins: dict[str, dict[pa.DataType, str]] = field(default_factory=dict)
    without_values: dict[str, frozenset[str]] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)


def unify(schemas: dict[str, pa.Schema], roots: dict[str, str] | None = None,
          display: dict[str, str] | None = None, rows: dict[str, int] | None = None,
          holds_values: Callable[[str, str], bool] | None = None) -> DatasetSchema:
    """One schema over the files' schemas (in file order); ``roots`` give each file's input folder.

    ``rows``: each file's row count. A column without values has no say in its type: every column
    of a file without rows, an Arrow ``null`` column, and, where the files' types disagree, a
    column that ``holds_values(file, column)`` finds all null (pandas writes an all-NaN column as
    double). So an empty file beside real shards decides nothing and blocks nothing. A column
    with no value in any file is ``null``, a type the next run may give it.
    """
    display, rows = display or {}, rows or {}
    empty = {path: frozenset(schema.names if rows.get(path) == 0 else ()) for path, schema in schemas.items()}
    with_rows = [path for path in schemas if rows.get(path) != 0]
    types: dict[str, list[tuple[str, pa.DataType]]] = {}
    for path, schema in schemas.items():
        for column in schema:
            types.setdefault(column.name, []).append((path, column.type))
    fields, notes = [], []
    origins: dict[str, dict[pa.DataType, str]] = {}
    for name, seen in types.items():
        valued = [(path, kind) for path, kind in seen if name not in empty[path] and not pa.types.is_null(kind)]
        if holds_values is not None and len({plain_type(kind) for _, kind in valued}) > 1:
            silent = {path for path, _ in valued if not holds_values(path, name)}
            empty.update({path: empty[path] | {name} for path in silent})
            valued = [(path, kind) for path, kind in valued if path not in silent]
        target = _reconcile([plain_type(kind) for _, kind in valued]) if valued else pa.null()
        fields.append(pa.field(name, target))
        origins[name] = {}
        for path, kind in valued:
            origins[name].setdefault(plain_type(kind), path)
        present = sum(1 for path, _ in seen if rows.get(path) != 0)
        notes.extend(_column_notes(name, target, valued, present, len(with_rows), display))
    without_rows = [path for path in schemas if rows.get(path) == 0]
    if without_rows and with_rows:
        shown = ", ".join(display.get(p, p) for p in without_rows[:3])
        more = f" and {len(without_rows) - 3} more" if len(without_rows) > 3 else ""
        notes.append(f"{len(without_rows)} file(s) without rows ({shown}{more}): their column types are not used")
    partitions = {path: hive_partitions(path, (roots or {}).get(path)) for path in schemas}
    partition_fields = _partition_fields(partitions, types, fields, notes)
    return DatasetSchema(pa.schema(fields), partitions, partition_fields, notes, origins, empty)


def _column_notes(name: str, target: pa.DataType, valued: list[tuple[str, pa.DataType]], present: int,
                  with_rows: int, display: dict[str, str]) -> list[str]:
    """Which files' values are converted, and in how many of the files with rows the column is."""
    notes = []
    differing = [(p, kind) for p, kind in valued if plain_type(kind) != target]
    if differing:
        shown = ", ".join(f"{display.get(p, p)} ({kind})" for p, kind in differing[:3])
        more = f" and {len(differing) - 3} more" if len(differing) > 3 else ""
        notes.append(f"column {name!r} is {target} in the dataset; converted where read from {shown}{more} "
                     "(values that do not convert reject their rows)")
    if present < with_rows:
        notes.append(f"column {name!r} is in {present} of {with_rows} files; rows of the others hold null")
    return notes


def _partition_fields(partitions: dict[str, dict[str, str | None]], types: dict[str, Any], fields: list[pa.Field],
                      notes: list[str]) -> tuple[str, ...]:
    """Hive partition keys as columns (appended to ``fields``): integers, dates or text as every value is written."""
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
    return tuple(partition_fields)


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


# The Arrow type a field recorded as integer, float or datetime is read in by a later run whose column differs.
_RECORDED_TYPES = {"integer": pa.int64(), "float": pa.float64(), "datetime": pa.timestamp("us", tz="UTC"),
                   "keyword": pa.string(), "bool": pa.bool_()}


def recorded_type(recorded: str, arrow_type: pa.DataType) -> pa.DataType | None:
    """The type a column of ``arrow_type`` is read in when a collection records its field as ``recorded``; None
    when there is no such type.

    The conversions are those a run makes between its own files, towards the recorded type:
    numbers (decimals too) and numeric text into an integer field (whole values only) or a float field (integers
    up to 2**53), ISO text into a datetime field; a list converts element by element. Numbers do
    not become text (2139 is not the '02139' another run stored), nor anything true/false.
    """
    kind = plain_type(arrow_type)
    if pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind):
        inner = recorded_type(recorded, kind.value_type)
        return None if inner is None else pa.list_(inner)
    numeric = (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
               or pa.types.is_string(kind) or pa.types.is_large_string(kind))
    if (recorded in ("integer", "float") and numeric) or (recorded == "datetime" and pa.types.is_string(kind)):
        return _RECORDED_TYPES[recorded]
    return None


def keep_recorded_types(dataset: DatasetSchema, keys: dict[str, str], recorded: dict[str, str], now: dict[str, str],
                        collection: str, display: dict[str, str] | None = None,
                        any_values: Callable[[str], bool] | None = None) -> None:
    """Read each column in the type ``collection`` records for its field, when a run's column has another.

    ``keys`` maps columns to payload keys, ``recorded`` and ``now`` map keys to the recorded type
    and this run's. The same conversions as between the files of one run apply across runs
    (``recorded_type``): a value that does not convert rejects its row, naming the column, the
    value and both types. A column that no conversion brings to the recorded type (numbers into a
    text field, text into a true/false one) refuses the run, in one line naming a file, the column
    and both types, unless ``any_values(column)`` finds it all null. A field with no value yet
    (``null``) on either side takes the other's type.
    """
    for column, key in keys.items():
        before, after = recorded.get(key), now.get(key)
        if before in (None, "null") or after in (None, "null") or before == after:
            continue
        if before not in FILTER_TYPES and after not in FILTER_TYPES:
            continue  # neither can be filtered on (structs, binaries…): the collection's check lets it be
        index = dataset.schema.get_field_index(column)
        arrow_type = dataset.schema.field(index).type
        target = recorded_type(before, arrow_type)
        if (target is None or before not in FILTER_TYPES) and any_values is not None and not any_values(column):
            target = _RECORDED_TYPES.get(before, pa.null())  # all null here: nothing to convert, nothing to refuse
        if target is None or (before not in FILTER_TYPES and not pa.types.is_null(target)):
            origin = next((path for kind, path in dataset.origins.get(column, {}).items()
                           if (index_kind(kind) or str(kind)) == after), None)
            where = f" (in {(display or {}).get(origin, origin)})" if origin else ""
            raise CollectionMismatchError(
                f"payload field {key!r} is {before} in collection {collection!r} but {after} ({arrow_type}) in column "
                f"{column!r} of these inputs{where}, and no conversion keeps its values; cast the column to {before} "
                "in the files, or ingest into another --collection")
        dataset.schema = dataset.schema.set(index, pa.field(column, target))
        dataset.reasons[column] = f"field {key!r} is {before} in collection {collection!r}"


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
        stored = dataset.reasons.get(name)
        converted, problems = convert_array(column, target, name, stored and f"{stored}, {column.type} in this file")
        arrays.append(converted)
        for index, reason in problems.items():
            errors.setdefault(index, reason)
    schema = pa.schema([dataset.schema.field(name) for name in columns])
    return pa.RecordBatch.from_arrays(arrays, schema=schema), errors


def convert_array(column: pa.Array, target: pa.DataType, name: str,
                  stored: str | None = None) -> tuple[pa.Array, dict[int, str]]:
    """``column`` as ``target``: whole when pyarrow casts it safely, else value by value with row errors.

    ``stored`` says why ``target`` (a collection's type, not the other files'), for the row errors.
    """
    if column.type == target:
        return column, {}
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
        if column.type == target:
            return column, {}
    widened = widen_floats_as_written(column, target)
    if widened is not None:
        return widened, {}
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
            errors[index] = (f"column {name!r}: {_show(value)} does not convert to {target} ({why}); {stored}"
                             if stored else f"column {name!r}: {_show(value)} does not convert to {target}, the "
                             f"column's type in the other files ({why})")
    return pa.array(values, target), errors


def widen_floats_as_written(column: pa.Array, target: pa.DataType) -> pa.Array | None:
    """``column`` as ``target`` when it holds float32/float16 values at any depth (a column, a list's elements,
    a struct's field), each widened as written (0.1), not by bits (0.10000000149011612); None when it holds none
    or when its values do not convert value by value (the caller converts them then)."""
    if not _holds_narrow_float(column.type):
        return None
    try:
        return pa.array([_as_written(value, column.type) for value in column.to_pylist()], target)
    except (ValueError, TypeError, OverflowError, pa.ArrowException):
        return None


def _holds_narrow_float(arrow_type: pa.DataType) -> bool:
    if pa.types.is_float32(arrow_type) or pa.types.is_float16(arrow_type):
        return True
    if pa.types.is_dictionary(arrow_type):
        return _holds_narrow_float(arrow_type.value_type)
    return any(_holds_narrow_float(arrow_type.field(i).type) for i in range(arrow_type.num_fields))


def _as_written(value: Any, arrow_type: pa.DataType) -> Any:
    """A Python value of ``arrow_type`` with its float32/float16 values at every depth as their shortest decimal."""
    if value is None:
        return None
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_float32(arrow_type) or pa.types.is_float16(arrow_type):
        return short_float(value, arrow_type)
    if pa.types.is_struct(arrow_type):
        return {child.name: _as_written(value.get(child.name), child.type) for child in arrow_type}
    if pa.types.is_map(arrow_type):
        return [(_as_written(k, arrow_type.key_type), _as_written(v, arrow_type.item_type)) for k, v in value]
    if arrow_type.num_fields == 1 and isinstance(value, list):  # the list types
        return [_as_written(item, arrow_type.field(0).type) for item in value]
    return value


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
        if isinstance(value, float) and math.isnan(value):
            return None  # NaN is stored as null whatever the column's type
        number = int(value) if isinstance(value, str) and value.lstrip("+-").isdigit() else _integral(
            float(value) if isinstance(value, str) else value)
        low, high = (0, 2**(8 * target.byte_width) - 1) if pa.types.is_unsigned_integer(target) else (
            -2**(8 * target.byte_width - 1), 2**(8 * target.byte_width - 1) - 1)
        if not low <= number <= high:
            raise ValueError(f"beyond the range of {target}")
        return number
    if pa.types.is_floating(target):
        # A float64 holds a number when its shortest decimal is that number (what the payload's JSON shows):
        # 0.1 and 36028797018963970 it holds, 9007199254740993 and 0.1000000000000000055… it does not.
        if isinstance(value, (int, str)) and decimal.Decimal(repr(float(value))) != decimal.Decimal(value):
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
