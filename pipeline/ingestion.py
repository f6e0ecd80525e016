"""The ingest job: source batches → decoded images → vectors → points → store.

Every row read ends in exactly one bucket of the summary (embedded and upserted,
unchanged, or rejected with a stage and a reason), so the numbers always add up.
"""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from connectors.base import CollectionSpec, Store
from pipeline.encoder import Encoder, model_identity
from pipeline.errors import InputError, MmindexError
from pipeline.images import DEFAULT_MAX_PIXELS, ImageBytes, RejectedImage, Rejection, image_bytes
from pipeline.records import (
    content_hash,
    index_kind,
    payload_columns,
    payload_types,
    point_id_from_content,
    point_id_from_key,
)
from pipeline.source import Source, SourceBatch, open_source
from pipeline.stages import HASH_KEY, Embedded, Job, Pipeline, PipelineStopped, embed_reference

SOURCE_KEY = "_source"
CAPTION_KEY = "caption"


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


@dataclass
class IngestSummary:
    """What a run did; ``read == upserted_new_or_changed + unchanged + rejected``."""

    collection: str
    files: int = 0
    read: int = 0
    embedded: int = 0
    upserted: int = 0
    unchanged: int = 0
    rejected: int = 0
    duplicate_ids: int = 0
    oom_retries: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.read / self.seconds if self.seconds else 0.0

    def adds_up(self) -> bool:
        return self.read == self.upserted + self.unchanged + self.rejected

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rows_per_second"] = round(self.rows_per_second, 2)
        data["rejections"] = [asdict(r) for r in self.rejections[:1000]]
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
    on_progress: Callable[[int], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> IngestSummary:
    """Read ``inputs``, embed every row with ``encoder`` and upsert one point per row into ``store``.

    Reading, decoding, the model's forward passes and store writes run concurrently
    (``options.workers`` decode threads, one model thread per replica in ``options.devices``);
    ``options.pipelined=False`` runs the single-threaded reference path instead.
    """
    options = options or IngestOptions()
    started = time.perf_counter()
    source = inputs if isinstance(inputs, Source) else open_source(
        list(inputs), options.image_col, options.caption_col, options.id_col, options.payload_cols
    )
    summary = IngestSummary(collection=store.collection, files=len(source.files), notes=list(source.mapping.notes))
    indexes = _index_plan(source, options.index_fields)
    spec = CollectionSpec(encoder.name, encoder.dim, payload_types(source.schema, source.mapping.payload))
    existing = store.spec()
    if existing is not None:
        spec.check_matches(existing, store.collection)
    store.ensure_collection(spec)
    for name, kind in indexes.items():
        store.create_payload_index(name, kind)
    store.begin_load()

    run = _Run(store, summary, on_progress)
    if options.pipelined:
        encoders = [encoder] + [encoder.replica(d) for d in options.devices[1:]] if options.devices else [encoder]
        pipeline = Pipeline(encoders, options.workers, run.write, options.max_pixels)
        try:
            for job in run.jobs(source, encoder.name, options.batch_size):
                pipeline.submit(job)
        except PipelineStopped:
            pass  # a stage failed; close() raises its error
        except BaseException as error:
            pipeline.abort(error)
        pipeline.close()
        summary.oom_retries = sum(e.oom_retries for e in encoders)
    else:
        for job in run.jobs(source, encoder.name, options.batch_size):
            run.write(embed_reference(job, encoder, options.max_pixels))
    if on_stage and options.optimize:
        on_stage("building the vector index")
    store.finish(optimize=options.optimize)
    summary.seconds = time.perf_counter() - started
    if options.rejects_path and summary.rejections:
        write_rejects(summary.rejections, options.rejects_path)
    return summary


class _Run:
    """The reading side (source → jobs) and the writing side (vectors → store) of one run."""

    def __init__(self, store: Store, summary: IngestSummary, on_progress: Callable[[int], None] | None):
        self.store = store
        self.summary = summary
        self.on_progress = on_progress
        # Reader and writer share the summary and the store; each lock is held only briefly,
        # so reading the next batch never waits for a write to finish.
        self.summary_lock = threading.Lock()
        self.store_lock = threading.Lock()
        # 64-bit prefixes of the point ids seen in this run (a UUID string would take ~4x more).
        self.seen: set[int] = set()

    def jobs(self, source: Source, model: str, batch_size: int) -> Iterator[Job]:
        for seq, source_batch in enumerate(source.batches(batch_size)):
            tally = IngestSummary(collection=self.summary.collection)
            rows = read_rows(source, source_batch, model, tally)
            with self.summary_lock:
                self.summary.read += tally.read
                self.summary.rejected += tally.rejected
                self.summary.rejections.extend(tally.rejections)
                self.summary.warnings.extend(tally.warnings)
                self._count_duplicates(rows)
            yield Job(seq, self._changed(rows), source_batch.batch.num_rows)

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
        if self.on_progress:
            self.on_progress(embedded.source_rows)

    def _count_duplicates(self, rows: list[SourceRow]) -> None:
        for row in rows:
            key = uuid.UUID(row.id).int >> 64
            if key in self.seen:
                self.summary.duplicate_ids += 1
                self.summary.warnings.append(f"{row.file} row {row.row}: id {row.key!r} seen before in this run; "
                                             "last wins")
            self.seen.add(key)

    def _changed(self, rows: list[SourceRow]) -> list[SourceRow]:
        """The rows whose image, caption, model or payload differ from what the store holds."""
        if not rows:
            return []
        with self.store_lock:
            stored = {p.id: p.payload for p in self.store.retrieve(list(dict.fromkeys(r.id for r in rows)))}
        todo = []
        unchanged = 0
        for row in rows:
            previous = stored.get(row.id)
            if previous is not None and previous.get(HASH_KEY) == row.hash and _same_payload(previous, row.payload):
                unchanged += 1
            else:
                todo.append(row)
        with self.summary_lock:
            self.summary.unchanged += unchanged
        return todo


def _index_plan(source: Source, fields: Sequence[str]) -> dict[str, str]:
    plan = {}
    for item in fields:
        name, _, kind = item.partition(":")
        if name == CAPTION_KEY and source.mapping.caption:
            plan[name] = kind or "text"
            continue
        if name not in source.mapping.payload:
            raise InputError(f"--index-fields {name!r} is not a payload column "
                             f"(payload: {', '.join(source.mapping.payload) or 'none'})")
        inferred = index_kind(source.schema.field(name).type)
        if not (kind or inferred):
            raise InputError(f"cannot index {name!r} of type {source.schema.field(name).type}; "
                             "give a type as NAME:keyword|integer|float|bool|datetime|text")
        plan[name] = kind or inferred
    return plan


def read_rows(source: Source, source_batch: SourceBatch, model: str, summary: IngestSummary) -> list[SourceRow]:
    """The rows of a batch whose image bytes could be read; the others are counted as rejected."""
    mapping = source.mapping
    file, first_row, batch = source_batch.file, source_batch.first_row, source_batch.batch
    images = batch.column(batch.schema.get_field_index(mapping.image)).to_pylist()
    captions = (batch.column(batch.schema.get_field_index(mapping.caption)).to_pylist()
                if mapping.caption else [None] * batch.num_rows)
    keys = (batch.column(batch.schema.get_field_index(mapping.id)).to_pylist()
            if mapping.id else [None] * batch.num_rows)
    payloads, warnings = payload_columns(batch, mapping.payload)
    summary.warnings.extend(f"{file}: {w}" for w in warnings)
    rows = []
    for index in range(batch.num_rows):
        row_number = first_row + index
        summary.read += 1
        key = keys[index]
        caption = captions[index]
        if caption is not None and not isinstance(caption, str):
            caption = str(caption)
        try:
            data = image_bytes(images[index], mapping.image_kind, source_batch.path, source.open_input)
        except RejectedImage as error:
            _reject(summary, file, row_number, key, "read", error.message)
            continue
        if mapping.id and key is None:
            _reject(summary, file, row_number, None, "read", f"id column {mapping.id!r} is null")
            continue
        point_id = point_id_from_key(key) if mapping.id else point_id_from_content(data.data, caption)
        payload = payloads[index]
        if caption is not None:
            payload[CAPTION_KEY] = caption
        payload[SOURCE_KEY] = {"file": file, "row": row_number, "path": data.path}
        rows.append(SourceRow(file, row_number, point_id, key, data, caption, payload,
                         content_hash(data.data, caption, model)))
    return rows


def _same_payload(previous: dict[str, Any], payload: dict[str, Any]) -> bool:
    # The source reference moves when files are renamed or rows reordered; that alone is no change.
    strip = lambda p: {k: v for k, v in p.items() if k not in (HASH_KEY, SOURCE_KEY)}  # noqa: E731
    return strip(previous) == strip(payload)


def _reject(summary: IngestSummary, file: str, row: int, key: Any, stage: str, reason: str) -> None:
    summary.rejected += 1
    summary.rejections.append(Rejection(file, row, None if key is None else str(key), stage, reason))


def write_rejects(rejections: Sequence[Rejection], path: str) -> None:
    """Write the rejected rows to a Parquet file that can be fixed and fed back."""
    table = pa.Table.from_pylist([asdict(r) for r in rejections], schema=pa.schema([
        ("file", pa.string()), ("row", pa.int64()), ("id", pa.string()), ("stage", pa.string()), ("reason", pa.string()),
    ]))
    pq.write_table(table, path)


__all__ = ["IngestOptions", "IngestSummary", "ingest", "write_rejects", "MmindexError", "model_identity"]
