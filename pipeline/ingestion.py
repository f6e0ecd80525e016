"""The ingest job: source batches → decoded images → vectors → points → store.

Every row read ends in exactly one bucket of the summary (embedded and upserted,
unchanged, or rejected with a stage and a reason), so the numbers always add up.
"""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from mmindex.connectors.base import CollectionSpec, Store
from mmindex.pipeline.encoder import Encoder, model_identity
from mmindex.pipeline.errors import InputError, MmindexError
from mmindex.pipeline.images import DEFAULT_MAX_PIXELS, THUMBNAIL_KEY, ImageBytes, RejectedImage, Rejection, image_bytes
from mmindex.pipeline.records import (
    clean_caption,
    column_values,
    content_hash,
    id_problem,
    index_kind,
    payload_columns,
    payload_types,
    point_id_from_content,
    point_id_from_key,
)
from mmindex.pipeline.source import CAPTION_KEY, Source, SourceBatch, open_source
from mmindex.pipeline.stages import HASH_KEY, Embedded, Job, Pipeline, PipelineStopped, embed_reference

SOURCE_KEY = "_source"
TRUNCATED_KEY = "_caption_truncated"
MISSING_CAPTION_POLICIES = ("image-only", "reject")
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024


@dataclass
class IngestOptions:
    """Everything an ingest run needs besides its inputs, store and model."""

    image_col: str | None = None
    caption_col: str | None = None
    id_col: str | None = None
    payload_cols: Sequence[str] | None = None
    index_fields: Sequence[str] = ()
    batch_size: int = 64
    workers: int = 4
    devices: Sequence[str] = ()  # one model replica per device; empty: the encoder's own device
    pipelined: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS
    optimize: bool = True
    rejects_path: str | None = None
    image_root: str | None = None  # image paths must stay inside this folder
    missing_caption: str = "image-only"  # or "reject": what to do with null/empty captions
    skip_bad_files: bool = False  # report unreadable Parquet files and go on, instead of stopping
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    stop: threading.Event | None = None  # set it (e.g. on SIGTERM) to finish the batches in flight and stop
    thumbnails: int = 0  # > 0: keep a JPEG thumbnail of this many pixels in the payload (for the web page)


@dataclass
class IngestSummary:
    """What a run did: ``read == upserted + unchanged + rejected + not_processed``.

    ``not_processed`` is non-zero only when a run stopped early (a signal or a failure):
    those rows were read but neither written nor rejected, and the next run takes them up.
    """

    collection: str
    status: str = "ok"  # ok, interrupted or failed
    model: str | None = None
    files: int = 0
    read: int = 0
    embedded: int = 0
    upserted: int = 0
    unchanged: int = 0
    rejected: int = 0
    not_processed: int = 0
    duplicate_ids: int = 0
    image_only: int = 0  # rows without a caption, stored with an image vector only
    truncated_captions: int = 0
    cleaned_captions: int = 0
    oom_retries: int = 0
    seconds: float = 0.0
    error: str | None = None
    rejects_file: str | None = None  # where this run's rejected rows were written, if anywhere
    skipped_files: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.read / self.seconds if self.seconds else 0.0

    @property
    def reject_rate(self) -> float:
        return self.rejected / self.read if self.read else 0.0

    def adds_up(self) -> bool:
        return self.read == self.upserted + self.unchanged + self.rejected + self.not_processed

    def stopped_early(self, status: str, error: str | None = None) -> None:
        """Mark a run that ended before all it read was written: what is left over was not processed."""
        self.status, self.error = status, error
        self.not_processed = max(0, self.read - self.upserted - self.unchanged - self.rejected)

    def rejections_by_stage(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for rejection in self.rejections:
            counts[rejection.stage] = counts.get(rejection.stage, 0) + 1
        return counts

    def to_dict(self, max_rejections: int = 1000) -> dict[str, Any]:
        data = asdict(self)
        data["rows_per_second"] = round(self.rows_per_second, 2)
        data["reject_rate"] = round(self.reject_rate, 6)
        data["rejected_by_stage"] = self.rejections_by_stage()
        data["rejections"] = [asdict(r) for r in self.rejections[:max_rejections]]
        data["adds_up"] = self.adds_up()
        return data


@dataclass
class SourceRow:
    """One readable row: where it came from, its point id, image bytes, caption, payload and hash."""

    file: str
    row: int
    id: str
    key: Any
    image: ImageBytes
    caption: str | None
    payload: dict[str, Any]
    hash: str


def ingest(
    inputs: Sequence[str] | Source,
    store: Store,
    encoder: Encoder,
    options: IngestOptions | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> IngestSummary:
    """Read ``inputs``, embed every row with ``encoder`` and upsert one point per row into ``store``.

    Reading, decoding, the model's forward passes and store writes run concurrently
    (``options.workers`` decode threads, one model thread per replica in ``options.devices``);
    ``options.pipelined=False`` runs the single-threaded reference path instead.

    ``on_progress(rows, rejected)`` is called after each batch is written with the number of
    source rows it finished and the run's running total of rejected rows; ``on_stage(note)``
    names a step such as building the vector index.

    If the run fails, the exception raised carries the partial summary as ``error.summary``
    (what was written before the failure); the rejects file is written either way.
    """
    options = options or IngestOptions()
    if options.missing_caption not in MISSING_CAPTION_POLICIES:
        raise InputError(f"missing_caption must be one of {', '.join(MISSING_CAPTION_POLICIES)}")
    started = time.perf_counter()
    source = inputs if isinstance(inputs, Source) else open_source(
        list(inputs), options.image_col, options.caption_col, options.id_col, options.payload_cols,
        skip_bad_files=options.skip_bad_files,
    )
    summary = IngestSummary(collection=store.collection, model=encoder.name, files=len(source.files),
                            notes=list(source.mapping.notes))
    try:
        _ingest(source, store, encoder, options, summary, on_progress, on_stage)
    except BaseException as error:
        summary.stopped_early("failed", str(error) or type(error).__name__)
        summary.seconds = time.perf_counter() - started
        if summary.read:  # a run refused before reading a row leaves the last run's rejects file alone
            _write_rejects_of(summary, options)
        error.summary = summary  # type: ignore[attr-defined]
        raise
    summary.seconds = time.perf_counter() - started
    _write_rejects_of(summary, options)
    return summary


def _ingest(source: Source, store: Store, encoder: Encoder, options: IngestOptions, summary: IngestSummary,
            on_progress: Callable[[int, int], None] | None, on_stage: Callable[[str], None] | None) -> None:
    prepare_collection(source, store, encoder.name, encoder.dim, options.index_fields)
    run = _Run(store, summary, options, encoder.captions_too_long, on_progress)
    if options.pipelined:
        encoders = [encoder] + [encoder.replica(d) for d in options.devices[1:]] if options.devices else [encoder]
        pipeline = Pipeline(encoders, options.workers, run.write, options.max_pixels, skip=run.skip)
        watcher = _StopWatcher(options.stop, pipeline.cancel)
        try:
            for job in run.jobs(source, encoder.name, options.batch_size):
                pipeline.submit(job)
        except PipelineStopped:
            pass  # a stage failed; close() raises its error
        except BaseException as error:
            pipeline.abort(error)
        finally:
            watcher.stop()
        pipeline.close()
        summary.oom_retries = sum(e.oom_retries for e in encoders)
    else:
        for job in run.jobs(source, encoder.name, options.batch_size):
            run.write(embed_reference(job, encoder, options.max_pixels))
    interrupted = options.stop is not None and options.stop.is_set()
    if interrupted:
        summary.status = "interrupted"
    optimize = options.optimize and not interrupted  # stop within seconds; the next run builds the index
    if on_stage and optimize:
        on_stage("building the vector index")
    store.finish(optimize=optimize)


def prepare_collection(source: Source, store: Store, model: str, dim: int, index_fields: Sequence[str]) -> None:
    """Create or check the collection for this model and source, its payload indexes, and start the load."""
    indexes = _index_plan(source, index_fields)
    spec = CollectionSpec(model, dim, payload_types(source.schema, source.mapping.payload, source.mapping.payload_key))
    existing = store.spec()
    if existing is not None:
        spec.check_matches(existing, store.collection)
    store.ensure_collection(spec)
    for name, kind in indexes.items():
        store.create_payload_index(name, kind)
    store.begin_load()


class _StopWatcher:
    """Calls ``on_stop`` from a helper thread as soon as ``event`` is set (signal handlers only set events)."""

    def __init__(self, event: threading.Event | None, on_stop: Callable[[], None]):
        self.event, self.on_stop = event, on_stop
        self.done = threading.Event()
        self.thread = None
        if event is not None:
            self.thread = threading.Thread(target=self._watch, name="mmindex-stop", daemon=True)
            self.thread.start()

    def _watch(self) -> None:
        while not self.done.is_set():
            if self.event.is_set():
                self.on_stop()
                return
            self.done.wait(0.05)

    def stop(self) -> None:
        self.done.set()
        if self.thread is not None:
            self.thread.join()
        if self.event is not None and self.event.is_set():
            self.on_stop()


class _Run:
    """The reading side (source → jobs) and the writing side (vectors → store) of one run."""

    def __init__(self, store: Store, summary: IngestSummary, options: IngestOptions,
                 too_long: Callable[[list[str]], list[bool]] | None, on_progress: Callable[[int, int], None] | None):
        self.store = store
        self.summary = summary
        self.options = options
        self.too_long = too_long
        self.on_progress = on_progress
        # Reader and writer share the summary and the store; each lock is held only briefly,
        # so reading the next batch never waits for a write to finish.
        self.summary_lock = threading.Lock()
        self.store_lock = threading.Lock()
        # 64-bit prefixes of the point ids seen in this run (a UUID string would take ~4x more).
        self.seen: set[int] = set()

    def jobs(self, source: Source, model: str, batch_size: int) -> Iterator[Job]:
        stop = self.options.stop
        for seq, source_batch in enumerate(source.batches(batch_size, self.options.skip_bad_files)):
            if stop is not None and stop.is_set():
                return
            tally, rows = read_batch(source, source_batch, model, self.options, self.too_long)
            yield Job(seq, self.admit(tally, rows), source_batch.batch.num_rows if source_batch.batch else 0,
                      self.options.thumbnails)

    def admit(self, tally: IngestSummary, rows: list[SourceRow]) -> list[SourceRow]:
        """Count a batch that was read (its ``tally``) and return the rows that need embedding."""
        with self.summary_lock:
            _add_tally(self.summary, tally)
            repeated = self._count_duplicates(rows)
        return self._changed(rows, repeated)

    def write(self, embedded: Embedded) -> None:
        points = embedded.points()
        if points:
            with self.store_lock:
                self.store.upsert(points)
        with self.summary_lock:
            for row, reason in embedded.rejected:
                _reject(self.summary, row.file, row.row, row.key, "decode", reason)
            self.summary.embedded += len(points)
            self.summary.upserted += len(points)
            rejected = self.summary.rejected
        if self.on_progress:
            self.on_progress(embedded.source_rows, rejected)

    def skip(self, job: Job) -> None:
        """A job the pipeline handed back unprocessed (the run was told to stop)."""
        with self.summary_lock:
            self.summary.not_processed += len(job.rows)

    def _count_duplicates(self, rows: list[SourceRow]) -> set[str]:
        repeated = set()
        for row in rows:
            key = uuid.UUID(row.id).int >> 64
            if key in self.seen:
                repeated.add(row.id)
                self.summary.duplicate_ids += 1
                if len(self.summary.warnings) < 1000:
                    self.summary.warnings.append(f"{row.file} row {row.row}: id {row.key!r} seen before in this "
                                                 "run; the last row with it wins")
            self.seen.add(key)
        return repeated

    def _changed(self, rows: list[SourceRow], repeated: set[str]) -> list[SourceRow]:
        """The rows whose image, caption, model or payload differ from what the store holds.

        A repeated id is always written: an earlier row with it may have been written in
        this run, and the last row must win.
        """
        if not rows:
            return []
        with self.store_lock:
            stored = {p.id: p.payload for p in self.store.retrieve(list(dict.fromkeys(r.id for r in rows)))}
        todo = []
        unchanged = 0
        for row in rows:
            previous = stored.get(row.id)
            if (row.id not in repeated and previous is not None and previous.get(HASH_KEY) == row.hash
                    and _same_payload(previous, row.payload)):
                unchanged += 1
            else:
                todo.append(row)
        with self.summary_lock:
            self.summary.unchanged += unchanged
        return todo


def read_batch(source: Source, source_batch: SourceBatch, model: str, options: IngestOptions,
               too_long: Callable[[list[str]], list[bool]] | None = None) -> tuple[IngestSummary, list[SourceRow]]:
    """One source batch read into rows, with its own tally of what was read and rejected."""
    tally = IngestSummary(collection="")
    if source_batch.batch is None:
        return tally, _lost_rows(source_batch, tally)
    return tally, read_rows(source, source_batch, model, tally, options, too_long)


def _add_tally(summary: IngestSummary, tally: IngestSummary) -> None:
    summary.read += tally.read
    summary.rejected += tally.rejected
    summary.image_only += tally.image_only
    summary.truncated_captions += tally.truncated_captions
    summary.cleaned_captions += tally.cleaned_captions
    summary.rejections.extend(tally.rejections)
    summary.skipped_files.extend(tally.skipped_files)
    room = max(0, 1000 - len(summary.warnings))
    summary.warnings.extend(tally.warnings[:room])


def _lost_rows(source_batch: SourceBatch, summary: IngestSummary) -> list[SourceRow]:
    """Account for a file skipped with skip_bad_files: its unreadable rows are rejected, one by one."""
    if source_batch.lost_rows is None:
        summary.skipped_files.append({"file": source_batch.file, "reason": source_batch.error})
        summary.warnings.append(f"{source_batch.file}: skipped, {source_batch.error}")
        return []
    for offset in range(source_batch.lost_rows):
        summary.read += 1
        _reject(summary, source_batch.file, source_batch.first_row + offset, None, "read",
                f"file unreadable from row {source_batch.first_row}: {source_batch.error}")
    return []


INDEX_KINDS = ("keyword", "integer", "float", "bool", "datetime", "text", "uuid")


def _index_plan(source: Source, fields: Sequence[str]) -> dict[str, str]:
    """Payload key → index type for ``--index-fields`` (payload keys, or the columns they come from)."""
    mapping = source.mapping
    columns = {mapping.payload_key(column): column for column in mapping.payload}
    plan = {}
    for item in fields:
        name, _, kind = item.rpartition(":")
        if not name or item in columns or item in mapping.payload:
            name, kind = item, ""  # a field whose name has a colon in it
        if kind and kind not in INDEX_KINDS:
            raise InputError(f"--index-fields {item!r}: {kind!r} is not an index type "
                             f"(types: {', '.join(INDEX_KINDS)})")
        if name == CAPTION_KEY and mapping.caption:
            plan[name] = kind or "text"
            continue
        if name not in columns and name in mapping.payload:
            name = mapping.payload_key(name)
        if name not in columns:
            raise InputError(f"--index-fields {name!r} is not a payload field "
                             f"(payload: {', '.join(columns) or 'none'})")
        arrow_type = source.schema.field(columns[name]).type
        inferred = index_kind(arrow_type)
        if kind and inferred and kind != inferred and (inferred, kind) != ("keyword", "text"):
            raise InputError(f"--index-fields {item!r}: {name!r} holds {inferred} values, which an index of type "
                             f"{kind} would not serve; leave the type out, or give {name}:{inferred}")
        if not (kind or inferred):
            raise InputError(f"cannot index {name!r} of type {arrow_type}; "
                             "give a type as NAME:keyword|integer|float|bool|datetime|text")
        plan[name] = kind or inferred
    return plan


def read_rows(source: Source, source_batch: SourceBatch, model: str, summary: IngestSummary,
              options: IngestOptions | None = None, too_long: Callable[[list[str]], list[bool]] | None = None
              ) -> list[SourceRow]:
    """The rows of a batch that can become points; every other row is rejected into ``summary``."""
    options = options or IngestOptions()
    mapping = source.mapping
    file, first_row, batch = source_batch.file, source_batch.first_row, source_batch.batch

    def column(name: str | None) -> tuple[list[Any], dict[int, str]]:
        if not name:
            return [None] * batch.num_rows, {}
        values, errors, warnings = column_values(batch.column(batch.schema.get_field_index(name)), name)
        summary.warnings.extend(f"{file}: {w}" for w in warnings)
        return values, errors

    images, image_errors = column(mapping.image)
    captions, caption_errors = column(mapping.caption)
    keys, key_errors = column(mapping.id)
    payloads, warnings, payload_errors = payload_columns(batch, mapping.payload, mapping.payload_key)
    summary.warnings.extend(f"{file}: {w}" for w in warnings)
    rows = []
    for index in range(batch.num_rows):
        row_number = first_row + index
        summary.read += 1
        key = keys[index]
        problem = (source_batch.row_errors.get(index) or image_errors.get(index) or caption_errors.get(index)
                   or key_errors.get(index) or payload_errors.get(index))
        if problem is None and mapping.id:
            trouble = id_problem(key)
            problem = f"id column {mapping.id!r} {trouble}" if trouble else None
        if problem is not None:
            _reject(summary, file, row_number, None if key_errors.get(index) else key, "read", problem)
            continue
        if not _is_text(captions[index]):
            _reject(summary, file, row_number, key, "read",
                    f"caption column {mapping.caption!r} holds {_kind_of(captions[index])}, not text "
                    "(name a text column with --caption-col)")
            continue
        caption, cleaned = clean_caption(captions[index])
        summary.cleaned_captions += cleaned
        if mapping.caption and caption is None:
            if options.missing_caption == "reject":
                _reject(summary, file, row_number, key, "read",
                        f"caption is {'null' if captions[index] is None else 'empty'} (--missing-caption reject)")
                continue
            summary.image_only += 1
        try:
            data = image_bytes(images[index], mapping.image_kind, source_batch.path, source.open_input,
                               options.image_root)
        except RejectedImage as error:
            _reject(summary, file, row_number, key, "read", error.message)
            continue
        point_id = point_id_from_key(key) if mapping.id else point_id_from_content(data.data, caption)
        payload = payloads[index]
        if caption is not None:
            payload[CAPTION_KEY] = caption
        payload[SOURCE_KEY] = {"file": file, "row": row_number, "path": data.path}
        oversize = _payload_problem(payload, options.max_payload_bytes)
        if oversize:
            _reject(summary, file, row_number, key, "read", oversize)
            continue
        rows.append(SourceRow(file, row_number, point_id, key, data, caption, payload,
                              content_hash(data.data, caption, model)))
    _flag_truncated(rows, too_long, summary)
    return rows


def _is_text(value: Any) -> bool:
    return value is None or isinstance(value, (str, bytes, bytearray, memoryview))


def _kind_of(value: Any) -> str:
    """A cell's kind for a rejection reason: 'a list of 3 values', 'a number (12)', …"""
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} value{'s' if len(value) != 1 else ''}"
    if isinstance(value, dict):
        return "a struct"
    if isinstance(value, bool):
        return f"true/false ({value})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    return f"a {type(value).__name__}"


def _flag_truncated(rows: list[SourceRow], too_long: Callable[[list[str]], list[bool]] | None,
                    summary: IngestSummary) -> None:
    """Mark captions the model cuts at its token limit: ``_caption_truncated: true`` in the payload."""
    captioned = [row for row in rows if row.caption is not None]
    if too_long is None or not captioned:
        return
    for row, cut in zip(captioned, too_long([row.caption for row in captioned])):
        if cut:
            row.payload[TRUNCATED_KEY] = True
            summary.truncated_captions += 1


def _payload_problem(payload: dict[str, Any], limit: int) -> str | None:
    try:
        size = len(json.dumps(payload, ensure_ascii=False, allow_nan=False).encode())
    except (TypeError, ValueError) as error:
        return f"payload cannot be stored as JSON: {error}"
    if size <= limit:
        return None
    sizes = {name: len(json.dumps(value, ensure_ascii=False).encode()) for name, value in payload.items()}
    biggest = max(sizes, key=sizes.get)
    return (f"payload is {size:,} bytes, over the limit of {limit:,} (--max-payload-bytes); "
            f"largest field {biggest!r} is {sizes[biggest]:,} bytes")


def _same_payload(previous: dict[str, Any], payload: dict[str, Any]) -> bool:
    # The source reference moves when files are renamed or rows reordered; that alone is no change.
    # The thumbnail is made from the image, which the hash already covers.
    strip = lambda p: {k: v for k, v in p.items() if k not in (HASH_KEY, SOURCE_KEY, THUMBNAIL_KEY)}  # noqa: E731
    return strip(previous) == strip(payload)


def _reject(summary: IngestSummary, file: str, row: int, key: Any, stage: str, reason: str) -> None:
    summary.rejected += 1
    summary.rejections.append(Rejection(file, row, None if key is None else str(key), stage, reason))


REJECTS_SCHEMA = pa.schema([
    ("file", pa.string()), ("row", pa.int64()), ("id", pa.string()), ("stage", pa.string()), ("reason", pa.string()),
])


def write_rejects(rejections: Sequence[Rejection], path: str) -> None:
    """Write the rejected rows (file, row, id, stage, reason) to Parquet, atomically."""
    table = pa.Table.from_pylist([asdict(r) for r in rejections], schema=REJECTS_SCHEMA)
    _write_atomically(path, lambda partial: pq.write_table(table, partial))


def _write_rejects_of(summary: IngestSummary, options: IngestOptions) -> None:
    """This run's rejects replace the previous run's file; with none, an old file is removed."""
    path = options.rejects_path
    if not path:
        return
    try:
        if summary.rejections:
            write_rejects(summary.rejections, path)
            summary.rejects_file = path
        elif os.path.islink(path) and os.path.isfile(path):
            write_rejects([], path)  # empty, through the link: the link is the user's, not ours to remove
        elif os.path.isfile(path):
            os.remove(path)
    except (OSError, MmindexError) as error:
        summary.warnings.append(f"cannot write the rejects file {path}: {error}")


def write_report(summary: IngestSummary, path: str, extra: dict[str, Any] | None = None) -> None:
    """The run summary as JSON (for schedulers and dashboards), written atomically."""
    data = {**summary.to_dict(), **(extra or {})}

    def dump(partial: str) -> None:
        with open(partial, "w") as handle:
            json.dump(data, handle, indent=2, default=str)

    _write_atomically(path, dump)


def _write_atomically(path: str, write: Callable[[str], None]) -> None:
    """``write`` a sibling file, then rename it over ``path``: readers never see half a file.

    A symbolic link is followed (the file it points to is replaced, the link kept). A path that
    is not a regular file (a named pipe, /dev/stdout) is written through, since there is no file
    to replace. A folder is an ``InputError``.
    """
    if os.path.isdir(path):
        raise InputError(f"{path} is a folder; give a file name")
    if os.path.exists(path) and not os.path.isfile(path):
        write(path)  # a pipe or a device: write into it, never replace it with a file
        return
    target = os.path.realpath(path) if os.path.islink(path) else path
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    partial = f"{target}.partial"
    write(partial)
    os.replace(partial, target)


__all__ = ["IngestOptions", "IngestSummary", "ingest", "write_rejects", "write_report", "MmindexError",
           "model_identity"]
