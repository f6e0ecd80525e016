"""Find Parquet files, map their columns, and stream record batches.

Inputs may be local files, directories (searched recursively, hidden and ``_`` entries
skipped), globs or object-store URIs (anything ``pyarrow.fs.FileSystem.from_uri`` knows:
``pipeline/ingest/files.py``), and data sets as Hugging Face ``datasets`` saves them — its
Arrow shards, a DatasetDict's split, the Hub's Parquet layout, a cached Hub name
(``hf_layout.py``, ``arrow_shards.py``; ``ClassLabel`` columns as names: ``class_labels.py``).
Batches are read one at a time, so memory does not grow with the dataset; every batch
knows its file and first row.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Sequence

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mmindex.errors import InputError, UsageError
from mmindex.pipeline.duplicates.signals import SIGNAL_KEYS
from mmindex.pipeline.ingest.arrow_shards import (piece_name, read_table_footer, read_table_footers,
                                                  table_holds_values, unreadable)
from mmindex.pipeline.ingest.class_labels import (ClassLabel, columns_to_read, features_beside, label_schema,
                                                  labels_of_files, name_labels, unnamed_label_notes)
from mmindex.pipeline.ingest.duplicates import LINK_KEYS
from mmindex.pipeline.ingest.files import discover
from mmindex.pipeline.ingest.hf_layout import SPLIT_FIELD, resolve_inputs
from mmindex.pipeline.ingest.records import left_out_binary, payload_types
from mmindex.pipeline.ingest.schema import (
    FOOTER_ERRORS,
    DatasetSchema,
    Footer,
    conform_batch,
    keep_recorded_types,
    plain_type,
    unify,
)

IMAGE_NAMES = ("image", "jpg", "jpeg", "png", "img", "image_bytes", "image_path", "webp")
CAPTION_NAMES = ("caption", "text", "txt", "title", "description", "alt")
ID_NAMES = ("id", "key", "uid", "uuid")
# Keys mmindex writes into payloads: a source column of one of these names is stored under the name plus "_".
RESERVED_PAYLOAD = ("_hash", "_source", "_caption_truncated", "_thumbnail", *SIGNAL_KEYS, *LINK_KEYS)
CAPTION_KEY = "caption"  # the payload key of the caption text, whichever column it comes from


@dataclass(frozen=True)
class ColumnMapping:
    """Which columns hold the image, the caption, the id, and what goes into the payload."""

    image: str
    caption: str | None
    id: str | None
    payload: tuple[str, ...]
    image_kind: str  # "bytes", "struct" (Hugging Face datasets {bytes, path}) or "path"
    notes: tuple[str, ...] = ()
    # Payload columns stored under another key, because mmindex writes their own name itself.
    renamed: tuple[tuple[str, str], ...] = ()

    def payload_key(self, column: str) -> str:
        """The payload key of a payload column (its name, unless renamed)."""
        return dict(self.renamed).get(column, column)

    def columns(self) -> list[str]:
        """Every column to read, in a stable order, without repeats."""
        wanted = [self.image, self.caption, self.id, *self.payload]
        return list(dict.fromkeys(c for c in wanted if c))


@dataclass
class SourceBatch:
    """Rows ``first_row`` … of one file, as Arrow; ``file`` is for people, ``path`` for the filesystem.

    With ``skip_bad_files``, a file that cannot be read (further) comes as a batch with no
    data and an ``error``: ``lost_rows`` rows from ``first_row`` on could not be read, or
    ``lost_rows`` is None when even the row count is unknown (the footer is unreadable).
    """

    file: str
    path: str
    first_row: int
    batch: pa.RecordBatch | None
    error: str | None = None
    lost_rows: int | None = None
    row_errors: dict[int, str] = field(default_factory=dict)  # row index → why a value did not convert


@dataclass(frozen=True)
class Unit:
    """The smallest piece of input given to one worker: one row group of one file.

    ``row_group`` is None for a file whose footer cannot be read (its size is unknown).
    """

    path: str
    row_group: int | None
    first_row: int = 0
    rows: int | None = None


SHARD_INDEX_VARIABLES = ("JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID", "MMINDEX_SHARD_INDEX")


def parse_shard(spec: str | None, environ: dict[str, str] | None = None) -> tuple[int, int] | None:
    """``"i/N"`` (0 ≤ i < N) as a pair, or None.

    ``auto/N`` takes i from the scheduler: a Kubernetes Indexed Job's JOB_COMPLETION_INDEX,
    a Slurm array's SLURM_ARRAY_TASK_ID (use --array=0-(N-1)), or MMINDEX_SHARD_INDEX.
    """
    if not spec:
        return None

    environ = os.environ if environ is None else environ
    head, _, tail = spec.partition("/")
    if head == "auto":
        found = next((environ[name] for name in SHARD_INDEX_VARIABLES if environ.get(name)), None)
        if found is None:
            raise UsageError(f"--shard {spec}: auto needs one of {', '.join(SHARD_INDEX_VARIABLES)} set")
        spec = f"{found}/{tail}"
    try:
        index, count = (int(part) for part in spec.split("/"))
    except ValueError:
        raise UsageError(f"--shard must look like I/N or auto/N (e.g. 0/4), got {spec!r}") from None
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"--shard {spec}: need 0 <= I < N")
    return index, count


@dataclass
class Source:
    """A set of Parquet files on one filesystem with a column mapping (and optionally one shard of it)."""

    filesystem: pafs.FileSystem
    files: list[str]
    schema: pa.Schema
    mapping: ColumnMapping
    display_names: dict[str, str] = field(default_factory=dict)
    shard: tuple[int, int] | None = None  # (index, count): this worker's share of the row groups
    dataset: DatasetSchema | None = None  # how each file differs from ``schema`` (None: they do not)
    inputs: tuple[str, ...] = ()  # as given: files, folders, globs, URIs
    footers: dict[str, Footer] = field(default_factory=dict)  # each file as listed; a file read later must match
    labels: dict[str, ClassLabel] = field(default_factory=dict)  # ClassLabel columns read as names (+ <col>_id)
    name: str | None = None  # the source name of a data set picked by split or Hub name (hf_layout.resolve_inputs)
    image_folders: dict[str, str] = field(default_factory=dict)  # file → its data set's folder (hf_layout)
    split: str | None = None  # the data-set split read, by its name (``--split dev`` may read ``validation``)

    def default_name(self) -> str:
        """The source name a run records when none is given (``ingest --source``).

        One input is its own name, a local one as an absolute path (``data/`` run from /srv is
        ``/srv/data``, a quoted glob ``/srv/data/*.parquet``); a URI stays as written. Several
        inputs (a glob the shell expanded) are named by the folder they share, since the
        list of files changes from run to run; ``--sync`` then needs an explicit ``--source``. A ``datasets``
        split picked with ``--split`` is ``/srv/beans#train``; a cached Hub name ``hf://datasets/owner/name``.
        """
        if self.name:
            return self.name
        names = [item.rstrip("/") if "://" in item else os.path.abspath(item) for item in self.inputs]
        if len(names) == 1:
            return names[0]
        folders = [name.rsplit("/", 1)[0] if "://" in name or not os.path.isdir(name) else name for name in names]
        common = folders[0].split("/")
        for folder in folders[1:]:
            parts = folder.split("/")
            size = 0
            while size < min(len(common), len(parts)) and common[size] == parts[size]:
                size += 1
            common = common[:size]
        return "/".join(common) or "/"

    def units(self) -> list[Unit]:
        """Every row group of every file, in order, as the footers read when the run listed the files said
        (``footers``); a file with an unreadable footer is one unit."""
        if getattr(self, "_units", None) is None:
            units = []
            for path in self.files:
                try:
                    footer = self.footers.get(path) or self._footer(path)
                except InputError:
                    units.append(Unit(path, None))
                    continue
                first = 0
                for index, rows in enumerate(footer.row_groups):
                    units.append(Unit(path, index, first, rows))
                    first += rows
            self._units = units
        return self._units

    def my_units(self) -> list[Unit]:
        """The units of this shard: every N-th row group (round-robin keeps shards balanced)."""
        units = self.units()
        if self.shard is None:
            return units
        index, count = self.shard
        return [unit for position, unit in enumerate(units) if position % count == index]

    def count_rows(self, skip_bad_files: bool = False) -> int:
        total = 0
        for unit in self.my_units():
            if unit.row_group is None and not skip_bad_files:
                self._footer(unit.path)  # raises the file's error
            total += unit.rows or 0
        return total

    def batches(self, batch_size: int = 256, skip_bad_files: bool = False,
                units: Sequence[Unit] | None = None) -> Iterator[SourceBatch]:
        """Stream the rows of this shard's units (or of ``units``) in order.

        A bad file or row group raises ``InputError`` naming the file (and row); with
        ``skip_bad_files`` it comes as a batch with an error instead (see ``SourceBatch``).
        """
        opened: dict[str, pq.ParquetFile] = {}
        for unit in (self.my_units() if units is None else units):
            try:
                yield from self._unit_batches(unit, batch_size, opened)
            except _BadFile as bad:
                if not skip_bad_files:
                    raise bad.error from bad.error.__cause__
                yield SourceBatch(self.display(unit.path), unit.path, bad.row, None, bad.error.message, bad.lost_rows)

    def _unit_batches(self, unit: Unit, batch_size: int, opened: dict[str, Any]) -> Iterator[SourceBatch]:
        if unit.rows == 0:
            return  # nothing to read, so nothing to check: an empty file beside real shards blocks nothing
        if unit.path not in opened:
            opened.clear()  # one file open at a time
            try:
                opened[unit.path] = self._open(unit.path)
            except InputError as error:
                opened[unit.path] = error
        parquet = opened[unit.path]
        if isinstance(parquet, InputError):
            # Every unit of a bad file is lost: the whole file when its size is unknown.
            raise _BadFile(parquet, unit.first_row, unit.rows)
        if unit.row_group is None:  # unreadable when listed, readable now
            raise _BadFile(InputError("the file changed while being read", file=self.display(unit.path)), 0, None)
        row = unit.first_row
        wanted = self.mapping.columns()
        present = [c for c in columns_to_read(wanted, self.labels) if c in parquet.schema_arrow.names]
        try:
            self._unchanged(unit.path)
            for batch in parquet.iter_batches(batch_size=batch_size, row_groups=[unit.row_group], columns=present):
                batch, errors = name_labels(batch, self.labels)
                if self.dataset is not None:
                    batch, converted = conform_batch(batch, wanted, self.dataset, unit.path)
                    errors = {**converted, **errors}
                if row + batch.num_rows > unit.first_row + (unit.rows or 0):
                    raise _Changed(f"row group {unit.row_group} holds more rows than its footer says ({unit.rows})")
                yield SourceBatch(self.display(unit.path), unit.path, row, batch, row_errors=errors)
                row += batch.num_rows
            if row != unit.first_row + (unit.rows or 0):
                raise _Changed(f"row group {unit.row_group} holds {row - unit.first_row} rows, its footer says "
                               f"{unit.rows}")
            self._unchanged(unit.path)  # rewritten while this row group was read: the rows may be of two files
        except (OSError, pa.ArrowException, MemoryError, _Changed) as error:
            kind = "Arrow" if piece_name(unit.path) == "record batch" else "Parquet"
            what = "" if isinstance(error, _Changed) else \
                f"cannot read {kind} data ({piece_name(unit.path)} {unit.row_group}): "
            failure = InputError(f"{what}{error}", file=self.display(unit.path), row=row)
            failure.__cause__ = error
            raise _BadFile(failure, row, unit.first_row + (unit.rows or 0) - row) from error

    def _unchanged(self, path: str, parquet: pq.ParquetFile | None = None) -> None:
        """_Changed when the file is no longer the one whose footer the run listed: its size, time or row groups
        differ (replaced or rewritten while the run reads it)."""
        listed = self.footers.get(path)
        if listed is None:
            return
        info = self.filesystem.get_file_info(path)
        groups = listed.row_groups if parquet is None else tuple(
            parquet.metadata.row_group(i).num_rows for i in range(parquet.metadata.num_row_groups))
        if info.type != pafs.FileType.File:
            how = "it is gone"
        elif info.size != listed.size:
            how = f"{listed.size:,} bytes then, {info.size:,} now"
        elif groups != listed.row_groups:
            how = f"{sum(listed.row_groups):,} rows in {len(listed.row_groups)} row group(s) then, {sum(groups):,} " \
                  f"in {len(groups)} now"
        elif listed.mtime_ns is not None and info.mtime_ns != listed.mtime_ns:
            how = "written again since"
        else:
            return
        raise _Changed(f"the file changed after the run listed it ({how}); run again once it is written")

    def _schema_problem(self, path: str, schema: pa.Schema) -> InputError | None:
        """Why this file cannot be read with the dataset's mapping, if it cannot.

        Other columns may be missing (their rows hold null); the image column may not.
        """
        if self.mapping.image not in schema.names:
            return InputError(f"no image column {self.mapping.image!r} in this file (has: {', '.join(schema.names)})",
                              file=self.display(path))
        image_type = schema.field(self.mapping.image).type
        silent = self.dataset.without_values.get(path, ()) if self.dataset is not None else ()
        if pa.types.is_null(image_type) or self.mapping.image in silent:
            return None  # no image here (each row is rejected on its own), so no type to disagree with
        try:
            kind = image_column_kind(image_type, self.mapping.image)
        except InputError as error:
            kind = str(error)
        if kind != self.mapping.image_kind:
            return InputError(
                f"image column {self.mapping.image!r} is {image_type} here, but {self.mapping.image_kind} in the "
                "other files; all files of one run need the same image column type (ingest each kind in a run of "
                "its own, into the same collection)", file=self.display(path),
            )
        return None

    def image_anchor(self, path: str) -> str:
        """The file whose folder a relative image path of ``path``'s rows resolves against: ``path`` itself, or for
        a file of a ``datasets`` layout, one in the data set's folder (``hf_layout.Resolved``)."""
        folder = self.image_folders.get(path)
        return path if folder is None else os.path.join(folder, os.path.basename(path))

    def display(self, path: str) -> str:
        return self.display_names.get(path, path)

    def open_input(self, path: str):
        return self.filesystem.open_input_file(path)

    def _footer(self, path: str) -> Footer:
        try:
            return read_table_footer(self.filesystem, path)[0]
        except FOOTER_ERRORS as error:
            raise InputError(f"{unreadable(path)}: {error}", file=self.display(path)) from error

    def _open(self, path: str) -> Any:
        """The file to read rows from, or InputError: unreadable, changed since listed, or not of the mapping."""
        try:
            parquet = read_table_footer(self.filesystem, path)[1]
        except FOOTER_ERRORS as error:
            raise InputError(f"{unreadable(path)}: {error}", file=self.display(path)) from error
        try:
            self._unchanged(path, parquet)
        except _Changed as error:
            raise InputError(str(error), file=self.display(path)) from None
        problem = self._schema_problem(path, parquet.schema_arrow)
        if problem is not None:
            raise problem
        return parquet


class _BadFile(Exception):
    """A file that cannot be read from ``row`` on; ``lost_rows`` is None when its size is unknown."""

    def __init__(self, error: InputError, row: int, lost_rows: int | None):
        super().__init__(str(error))
        self.error, self.row, self.lost_rows = error, row, lost_rows


class _Changed(Exception):
    """The file is not the one the run listed, or holds other rows than its footer says."""


def find_files(inputs: Sequence[str]) -> tuple[pafs.FileSystem, list[str], dict[str, str]]:
    """Expand files, directories, globs and URIs into Parquet file paths on one filesystem."""
    filesystem, files, display, _ = discover(inputs)
    return filesystem, files, display


def map_columns(
    schema: pa.Schema,
    image_col: str | None = None,
    caption_col: str | None = None,
    id_col: str | None = None,
    payload_cols: Sequence[str] | None = None,
) -> ColumnMapping:
    """Choose the image, caption and id columns (given or detected) and the payload columns."""
    names = schema.names
    notes: list[str] = []

    def pick(given: str | None, candidates: Sequence[str], role: str, required: bool) -> str | None:
        if given:
            if given not in names:
                raise UsageError(f"--{role}-col {given!r} is not a column (columns: {', '.join(names)})")
            return given
        lowered = {n.lower(): n for n in names}
        for candidate in candidates:
            if candidate in lowered:
                notes.append(f"{role} column: {lowered[candidate]!r} (detected; set --{role}-col to change)")
                return lowered[candidate]
        if required:
            raise UsageError(
                f"no {role} column found among {', '.join(names)}; name it with --{role}-col"
            )
        return None

    image = pick(image_col, IMAGE_NAMES, "image", True)
    caption = pick(caption_col, CAPTION_NAMES, "caption", False)
    if caption is None:
        notes.append("caption column: none found; only image vectors will be stored (set --caption-col)")
    identifier = pick(id_col, ID_NAMES, "id", False)
    if identifier is None:
        notes.append("id column: none; point ids come from a hash of image bytes and caption")
    image_kind = image_column_kind(schema.field(image).type, image)

    if payload_cols is not None:
        for column in payload_cols:
            if column not in names:
                raise UsageError(f"--payload-cols {column!r} is not a column (columns: {', '.join(names)})")
        payload = tuple(c for c in payload_cols if c not in (image, caption))
    else:
        payload_list = []
        for f in schema:
            if f.name in (image, caption):
                continue
            if not f.name:
                notes.append("payload: a column without a name left out (no payload key or --where could name it)")
                continue
            if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type) or pa.types.is_fixed_size_binary(f.type):
                notes.append(f"payload: binary column {f.name!r} left out (name it in --payload-cols to keep it as base64)")
                continue
            payload_list.append(f.name)
        payload = tuple(payload_list)
    # Binary below the top level (image bytes in a Sequence(Image()) column) is never stored (records.py).
    payload, binary_notes = left_out_binary(schema, payload)
    notes.extend(binary_notes)
    # A column named like a key mmindex writes keeps its data under that name plus "_" (as many as
    # it takes to be unique): `caption_` when --caption-col is another column, `_source_`, …
    renamed = []
    taken = set(names)
    for column in payload:
        if column in RESERVED_PAYLOAD or (column == CAPTION_KEY and caption is not None):
            key = column + "_"
            while key in taken:
                key += "_"
            taken.add(key)
            renamed.append((column, key))
            why = (f"the key {CAPTION_KEY!r} holds the text of the caption column {caption!r}"
                   if column == CAPTION_KEY else f"mmindex writes the key {column!r} itself")
            notes.append(f"payload: column {column!r} is stored as {key!r} ({why})")
    return ColumnMapping(image, caption, identifier, payload, image_kind, tuple(notes), tuple(renamed))


def image_column_kind(arrow_type: pa.DataType, name: str) -> str:
    """Tell raw bytes, the Hugging Face ``{bytes, path}`` struct and path strings apart.

    Every encoding of a type counts as the type: a dictionary of paths (pandas' categorical),
    large or view strings and binaries.
    """
    arrow_type = plain_type(arrow_type)
    if pa.types.is_null(arrow_type):
        return "null"  # no file holds an image: every row is rejected on its own
    if pa.types.is_binary(arrow_type) or pa.types.is_fixed_size_binary(arrow_type):
        return "bytes"
    if pa.types.is_string(arrow_type):
        return "path"
    if pa.types.is_struct(arrow_type):
        fields = {arrow_type.field(i).name for i in range(arrow_type.num_fields)}
        if "bytes" in fields or "path" in fields:
            return "struct"
    raise InputError(
        f"image column {name!r} has type {arrow_type}; expected binary (image bytes), "
        "string (a path) or a struct with 'bytes'/'path' fields (Hugging Face datasets)"
    )


def open_source(
    inputs: Sequence[str],
    image_col: str | None = None,
    caption_col: str | None = None,
    id_col: str | None = None,
    payload_cols: Sequence[str] | None = None,
    skip_bad_files: bool = False,
    shard: tuple[int, int] | None = None,
    split: str | None = None,
) -> Source:
    """Find the files, read every file's schema into one for the dataset, and map the columns.

    Files whose schemas drift are reconciled (``pipeline/ingest/schema.py``): a column in some files is
    kept, types are promoted or converted as read, Hive partition keys become columns. A ``datasets``
    folder or cached Hub name is read as the files of ``split`` (``hf_layout.resolve_inputs``: ``"all"``
    reads every split, its name in the payload field ``split``), and ``ClassLabel`` columns as their names
    plus ``<col>_id`` (``class_labels.py``). Raises UsageError for a split to choose, InputError for unreadable
    inputs.
    """
    resolved = resolve_inputs(inputs, split)
    filesystem, files, display, roots = discover(resolved.inputs)
    footers: dict[str, Footer] = {}
    failures: list[tuple[str, Exception]] = []
    for path, found in zip(files, read_table_footers(filesystem, files)):
        if isinstance(found, Footer):
            footers[path] = found
        elif not skip_bad_files:
            raise InputError(f"{unreadable(path)}: {found}", file=display[path]) from found
        else:
            failures.append((path, found))
    if not footers:
        path, error = failures[0]
        raise InputError(f"{unreadable(path)}: {error} (and none of the {len(files)} input file(s) is)",
                         file=display[path])
    dataset = unify({path: footer.schema for path, footer in footers.items()}, roots, display,
                    {path: sum(footer.row_groups) for path, footer in footers.items()},
                    lambda path, column: table_holds_values(filesystem, path, column))
    labels = _datasets_columns(dataset, footers, display, resolved.splits,
                               features_beside if isinstance(filesystem, pafs.LocalFileSystem) else None)
    try:
        mapping = map_columns(dataset.schema, image_col, caption_col, id_col, payload_cols)
    except InputError as error:
        if error.file is not None or len(footers) != 1:
            raise
        raise type(error)(error.message, file=display[next(iter(footers))]) from None  # the one file it is about
    mapping = replace(mapping, notes=mapping.notes + tuple(resolved.notes) + tuple(dataset.notes))
    source = Source(filesystem, files, dataset.schema, mapping, display, shard, dataset, tuple(inputs), footers,
                    labels, resolved.name, resolved.image_folders, resolved.split)
    if not skip_bad_files:  # a file the run could not read is refused now, before any model loads
        problem = next(filter(None, (source._schema_problem(path, footer.schema) for path, footer in footers.items()
                                     if sum(footer.row_groups))), None)  # a file without rows is never read
        if problem is not None:
            raise problem
    return source


def _datasets_columns(dataset: DatasetSchema, footers: dict[str, Footer], display: dict[str, str],
                      splits: dict[str, str | None], beside: Any) -> dict[str, ClassLabel]:
    """Change ``dataset`` for what ``datasets`` wrote: each ``ClassLabel`` column as names plus ``<col>_id``
    (the labels returned), and, with ``--split all``, each file's split name as the column ``split``."""
    labels = labels_of_files({path: footer.schema for path, footer in footers.items()}, display, beside)
    dataset.notes += unnamed_label_notes({path: footer.schema for path, footer in footers.items()}, dataset.schema,
                                         beside)
    def holder(column: str, integers: bool) -> str | None:  # the first file holding ``column`` (as integers)
        return next((display[path] for path, footer in footers.items() if column in footer.schema.names
                     and (not integers or pa.types.is_integer(footer.schema.field(column).type)
                          or pa.types.is_list(footer.schema.field(column).type))), None)

    dataset.schema, labels = label_schema(dataset.schema, labels, holder)
    for column, label in labels.items():
        dataset.notes.append(f"ClassLabel column {column!r}: its names are the payload field {column!r}, its "
                             f"integers {label.id_column!r}")
    if splits:
        if SPLIT_FIELD in dataset.schema.names:
            raise UsageError(f"--split all writes each row's split into the payload field {SPLIT_FIELD!r}, but the "
                             f"data set has a column {SPLIT_FIELD!r}; read one split at a time (--split NAME)")
        for path, name in splits.items():
            dataset.partitions.setdefault(path, {})[SPLIT_FIELD] = name
        dataset.schema = dataset.schema.append(pa.field(SPLIT_FIELD, pa.string()))
        dataset.partition_fields += (SPLIT_FIELD,)
        dataset.notes.append(f"--split all: each row's split name is the payload field {SPLIT_FIELD!r}")
    return labels


def keep_stored_types(source: Source, recorded: dict[str, str], collection: str) -> None:
    """Read the payload columns in the types ``collection`` records for their fields (``recorded``, by payload
    key), converted as between the files of one run; see ``schema.keep_recorded_types``."""
    if source.dataset is None:
        return
    mapping = source.mapping
    keys = {column: mapping.payload_key(column) for column in mapping.payload}
    now = payload_types(source.dataset.schema, mapping.payload, mapping.payload_key)
    made_from = {label.id_column: name for name, label in source.labels.items()}  # <col>_id: the files hold <col>

    def any_values(column: str) -> bool:
        column = made_from.get(column, column)
        return any(table_holds_values(source.filesystem, path, column) for path, footer in source.footers.items()
                   if column in footer.schema.names and sum(footer.row_groups)
                   and column not in source.dataset.without_values.get(path, ()))

    keep_recorded_types(source.dataset, keys, recorded, now, collection, source.display_names, any_values)
    source.schema = source.dataset.schema
