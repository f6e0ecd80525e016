"""The ingest job: source batches → decoded images → vectors → points → store.

Every row read ends in exactly one bucket of the summary (embedded and upserted,
unchanged, or rejected with a stage and a reason), so the numbers always add up.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from connectors.base import CollectionSpec, PointRecord, Store
from pipeline.encoder import Encoder, model_identity
from pipeline.errors import InputError, MmindexError
from pipeline.images import DEFAULT_MAX_PIXELS, ImageBytes, RejectedImage, Rejection, decode_image, image_bytes
from pipeline.records import (
    content_hash,
    index_kind,
    payload_columns,
    payload_types,
    point_id_from_content,
    point_id_from_key,
)
from pipeline.source import Source, SourceBatch, open_source

SOURCE_KEY = "_source"
HASH_KEY = "_hash"
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
class _Row:
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
    on_notes: Callable[[list[str]], None] | None = None,
) -> IngestSummary:
    """Read ``inputs``, embed every row with ``encoder`` and upsert one point per row into ``store``."""
    options = options or IngestOptions()
    started = time.perf_counter()
    source = inputs if isinstance(inputs, Source) else open_source(
        list(inputs), options.image_col, options.caption_col, options.id_col, options.payload_cols
    )
    summary = IngestSummary(collection=store.collection, files=len(source.files), notes=list(source.mapping.notes))
    if on_notes:
        on_notes(summary.notes)
    indexes = _index_plan(source, options.index_fields)
    spec = CollectionSpec(encoder.name, encoder.dim, payload_types(source.schema, source.mapping.payload))
    existing = store.spec()
    if existing is not None:
        spec.check_matches(existing, store.collection)
    store.ensure_collection(spec)
    for name, kind in indexes.items():
        store.create_payload_index(name, kind)

    seen: set[str] = set()
    with ThreadPoolExecutor(max_workers=max(1, options.workers)) as pool:
        for source_batch in source.batches(options.batch_size):
            rows = _read_rows(source, source_batch, encoder.name, summary)
            for row in rows:
                if row.id in seen:
                    summary.duplicate_ids += 1
                    summary.warnings.append(f"{row.file} row {row.row}: id {row.key!r} seen before in this run; last wins")
                seen.add(row.id)
            _write_rows(rows, store, encoder, pool, options, summary)
            if on_progress:
                on_progress(source_batch.batch.num_rows)
    store.finish(optimize=options.optimize)
    summary.seconds = time.perf_counter() - started
    if options.rejects_path and summary.rejections:
        write_rejects(summary.rejections, options.rejects_path)
    return summary


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


def _read_rows(source: Source, source_batch: SourceBatch, model: str, summary: IngestSummary) -> list[_Row]:
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
        rows.append(_Row(file, row_number, point_id, key, data, caption, payload,
                         content_hash(data.data, caption, model)))
    return rows


def _write_rows(rows: list[_Row], store: Store, encoder: Encoder, pool: ThreadPoolExecutor,
                options: IngestOptions, summary: IngestSummary) -> None:
    if not rows:
        return
    stored = {p.id: p.payload for p in store.retrieve(list(dict.fromkeys(r.id for r in rows)))}
    todo = []
    for row in rows:
        previous = stored.get(row.id)
        if previous is not None and previous.get(HASH_KEY) == row.hash and _same_payload(previous, row.payload):
            summary.unchanged += 1
        else:
            todo.append(row)
    if not todo:
        return
    target = encoder.image_size
    decoded = list(pool.map(lambda r: _decode(r, target, options.max_pixels), todo))
    ready = []
    for row, image in zip(todo, decoded):
        if isinstance(image, str):
            _reject(summary, row.file, row.row, row.key, "decode", image)
        else:
            ready.append((row, image))
    if not ready:
        return
    image_vectors = encoder.encode_images([image for _, image in ready])
    captioned = [i for i, (row, _) in enumerate(ready) if row.caption]
    text_vectors = encoder.encode_texts([ready[i][0].caption for i in captioned])
    text_by_row = dict(zip(captioned, text_vectors))
    points = []
    for i, (row, _) in enumerate(ready):
        vectors = {"image": image_vectors[i]}
        if i in text_by_row:
            vectors["text"] = text_by_row[i]
        points.append(PointRecord(row.id, vectors, {**row.payload, HASH_KEY: row.hash}))
    summary.embedded += len(points)
    store.upsert(points)
    summary.upserted += len(points)


def _decode(row: _Row, target: int | None, max_pixels: int):
    try:
        return decode_image(row.image.data, target, max_pixels)
    except RejectedImage as error:
        return error.message


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
