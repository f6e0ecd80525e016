"""Arrow IPC shards as Hugging Face ``datasets`` writes them, read the way Parquet files are read.

``Dataset.save_to_disk`` writes ``data-00000-of-00002.arrow`` …, and the ``datasets`` cache holds
``name-train.arrow`` (``name-train-00000-of-00002.arrow`` when sharded): Arrow IPC *streams*, one record
batch after another (``datasets.arrow_writer.ArrowWriter``). A local shard is memory-mapped, so its rows
are not copied into memory, and each record batch plays the part of a Parquet row group: a ``Unit`` of the
source, counted when the run lists the files (``read_shard``), its rows checked as they are read. The
change check is the one Parquet files get (``Source._unchanged``): the size, the time and the batches'
row counts the run listed. The IPC *file* format (Feather v2, ``ARROW1`` magic) is read too.

``read_table_footer`` and the other ``*_table_*`` functions pick the reader by the file name: ``.arrow`` is
an Arrow shard, anything else Parquet (``pipeline/ingest/schema.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mmindex.pipeline.ingest.schema import FOOTER_ERRORS, Footer, holds_values, read_footer, read_footers

ARROW_SUFFIX = ".arrow"
FILE_MAGIC = b"ARROW1"  # the IPC file format starts (and ends) with it; a stream starts with a message


def is_arrow_shard(path: str) -> bool:
    """Whether ``path`` is read as an Arrow IPC shard (its name ends in ``.arrow``) rather than as Parquet."""
    return path.endswith(ARROW_SUFFIX)


def unreadable(path: str) -> str:
    """The start of the message for a file that cannot be read: which kind of file it was taken for."""
    return "not a readable Arrow IPC shard" if is_arrow_shard(path) else "not a readable Parquet file"


def piece_name(path: str) -> str:
    """What a unit of the file is called in messages: a record batch of a shard, a row group of Parquet."""
    return "record batch" if is_arrow_shard(path) else "row group"


@dataclass(frozen=True)
class _Rows:
    num_rows: int


@dataclass(frozen=True)
class ShardMetadata:
    """The part of ``pq.FileMetaData`` the source asks a file for: its row groups (record batches) and rows."""

    batch_rows: tuple[int, ...]

    @property
    def num_row_groups(self) -> int:
        return len(self.batch_rows)

    @property
    def num_rows(self) -> int:
        return sum(self.batch_rows)

    def row_group(self, index: int) -> _Rows:
        return _Rows(self.batch_rows[index])


class ArrowShard:
    """An Arrow IPC shard opened to read rows, with the members of ``pq.ParquetFile`` the source uses
    (``schema_arrow``, ``metadata``, ``iter_batches``); its record batches are views of the memory map."""

    def __init__(self, schema: pa.Schema, batches: Sequence[pa.RecordBatch]):
        self.schema_arrow = schema
        self._batches = list(batches)
        self.metadata = ShardMetadata(tuple(batch.num_rows for batch in self._batches))

    def iter_batches(self, batch_size: int = 65536, row_groups: Sequence[int] | None = None,
                     columns: Sequence[str] | None = None, **_: Any) -> Iterator[pa.RecordBatch]:
        """The rows of record batches ``row_groups`` (all when None), ``columns`` only, ``batch_size`` at a time.

        Each record batch is checked in full before its rows are handed on (``RecordBatch.validate(full=True)``):
        offsets beyond their buffers, invalid UTF-8… raise ``pa.ArrowInvalid`` instead of reading out of bounds.
        """
        for index in range(len(self._batches)) if row_groups is None else row_groups:
            batch = self._batches[index]
            batch.validate(full=True)
            if columns is not None:
                batch = batch.select(list(columns))
            for start in range(0, batch.num_rows, batch_size):
                yield batch.slice(start, batch_size)


def read_shard(filesystem: pafs.FileSystem, path: str) -> tuple[Footer, ArrowShard]:
    """The shard's "footer" (size, time, the rows of each record batch, schema) and the shard opened to read.

    A local shard is memory-mapped (``pa.memory_map``); on another filesystem it is read into memory. Every
    message of the stream is read (only its header: the data stays in the map), so a shard cut short or
    not Arrow at all raises here: ``pa.ArrowInvalid`` or ``OSError`` (both in ``FOOTER_ERRORS``).
    """
    info = filesystem.get_file_info(path)
    if isinstance(filesystem, pafs.LocalFileSystem):
        handle = pa.memory_map(path)
    else:
        handle = filesystem.open_input_file(path)
    size = handle.size()
    if size == 0:
        raise pa.ArrowInvalid("0 bytes: an empty file is not an Arrow IPC stream")
    if handle.read_at(len(FILE_MAGIC), 0) == FILE_MAGIC:
        reader = pa.ipc.open_file(handle)
        batches = [reader.get_batch(index) for index in range(reader.num_record_batches)]
        schema = reader.schema
    else:
        stream = pa.ipc.open_stream(handle)
        batches = list(stream)
        schema = stream.schema
    for batch in batches:
        batch.validate()  # lengths and buffer sizes agree; the values are checked when read (iter_batches)
    mtime = info.mtime_ns if info.type == pafs.FileType.File else None
    shard = ArrowShard(schema, batches)
    return Footer(size, mtime, shard.metadata.batch_rows, schema), shard


def read_table_footer(filesystem: pafs.FileSystem, path: str) -> tuple[Footer, pq.ParquetFile | ArrowShard]:
    """``read_shard`` for an Arrow shard, ``schema.read_footer`` for a Parquet file; raises ``FOOTER_ERRORS``."""
    if is_arrow_shard(path):
        return read_shard(filesystem, path)
    return read_footer(filesystem, path)


def read_table_footers(filesystem: pafs.FileSystem, files: Sequence[str]) -> list[Footer | Exception]:
    """Every file's footer (``read_table_footer``), or the error reading it."""
    return read_footers(filesystem, files, read=lambda fs, path: read_table_footer(fs, path)[0])


def open_rows(filesystem: pafs.FileSystem, path: str) -> pq.ParquetFile | ArrowShard:
    """A file opened to read a column or two (``iter_batches(batch_size=…, columns=[…])``, ``schema_arrow``);
    raises ``OSError`` or ``pa.ArrowException``."""
    if is_arrow_shard(path):
        return read_shard(filesystem, path)[1]
    return pq.ParquetFile(filesystem.open_input_file(path))


def table_holds_values(filesystem: pafs.FileSystem, path: str, column: str) -> bool:
    """``schema.holds_values`` for Parquet files and Arrow shards: whether ``column`` holds a value; True when
    the file cannot be read (reading its rows reports that)."""
    if not is_arrow_shard(path):
        return holds_values(filesystem, path, column)
    try:
        shard = read_shard(filesystem, path)[1]
        return any(batch.column(0).null_count < batch.num_rows
                   for batch in shard.iter_batches(batch_size=1 << 16, columns=[column]))
    except FOOTER_ERRORS:
        return True
