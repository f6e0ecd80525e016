"""Reading rows: a source batch → ``SourceRow`` values (id, caption and payload checked) or rejections that name
the file, row and field."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from mmindex.keys import SOURCE_KEY, TRUNCATED_KEY
from mmindex.pipeline.ingest.images import ImageBytes, RejectedImage, image_bytes
from mmindex.pipeline.ingest.options import IngestOptions
from mmindex.pipeline.ingest.records import (
    clean_caption,
    column_values,
    content_hash,
    id_problem,
    payload_columns,
    point_id_from_content,
    point_id_from_key,
)
from mmindex.pipeline.ingest.source import CAPTION_KEY, Source, SourceBatch
from mmindex.pipeline.ingest.summary import IngestSummary, reject_row


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


def read_batch(source: Source, source_batch: SourceBatch, model: str, options: IngestOptions,
               too_long: Callable[[list[str]], list[bool]] | None = None) -> tuple[IngestSummary, list[SourceRow]]:
    """One source batch read into rows, with its own tally of what was read and rejected."""
    tally = IngestSummary(collection="")
    if source_batch.batch is None:
        return tally, lost_rows(source_batch, tally)
    return tally, read_rows(source, source_batch, model, tally, options, too_long)


MAX_LOST_ROWS = 100_000  # rows of one bad file rejected one by one; more are the claim of a footer to doubt


def lost_rows(source_batch: SourceBatch, summary: IngestSummary) -> list[SourceRow]:
    """Account for a file skipped with skip_bad_files: its unreadable rows are rejected, one by one.

    A file whose size is unknown, or whose footer claims more than ``MAX_LOST_ROWS`` rows that
    cannot be read, is listed as skipped instead: a broken footer's count is not trusted to make
    that many rejections (nor to make the run wait while it does).
    """
    summary.lost_files.append(source_batch.file)
    lost, first = source_batch.lost_rows, source_batch.first_row
    if lost is None or lost > MAX_LOST_ROWS:
        reason = source_batch.error if lost is None else (
            f"{source_batch.error} (its footer claims {lost:,} more rows from row {first}, too many to reject one by "
            "one)")
        summary.skipped_files.append({"file": source_batch.file, "reason": reason})
        summary.warnings.append(f"{source_batch.file}: skipped, {reason}")
        return []
    reason = f"file unreadable from row {first}: {source_batch.error}"
    for offset in range(lost):
        summary.read += 1
        reject_row(summary, source_batch.file, first + offset, None, "read", reason)
    return []


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
            reject_row(summary, file, row_number, None if key_errors.get(index) else key, "read", problem)
            _keep(summary, mapping.id, key, key_errors.get(index))
            continue
        if not _is_text(captions[index]):
            reject_row(summary, file, row_number, key, "read",
                    f"caption column {mapping.caption!r} holds {_kind_of(captions[index])}, not text "
                    "(name a text column with --caption-col)")
            _keep(summary, mapping.id, key)
            continue
        caption, cleaned = clean_caption(captions[index])
        summary.cleaned_captions += cleaned
        if mapping.caption and caption is None:
            if options.missing_caption == "reject":
                reject_row(summary, file, row_number, key, "read",
                        f"caption is {'null' if captions[index] is None else 'empty'} (--missing-caption reject)")
                _keep(summary, mapping.id, key)
                continue
            summary.image_only += 1
        try:
            data = image_bytes(images[index], mapping.image_kind, source.image_anchor(source_batch.path),
                               source.open_input, options.image_root)
        except RejectedImage as error:
            reject_row(summary, file, row_number, key, "read", error.message)
            _keep(summary, mapping.id, key)
            continue
        point_id = point_id_from_key(key) if mapping.id else point_id_from_content(data.data, caption)
        payload = payloads[index]
        if caption is not None:
            payload[CAPTION_KEY] = caption
        payload[SOURCE_KEY] = {"name": options.source_name, "file": file, "row": row_number, "path": data.path}
        oversize = _payload_problem(payload, options.max_payload_bytes)
        if oversize:
            reject_row(summary, file, row_number, key, "read", oversize)
            summary.kept_ids.append(point_id)
            continue
        rows.append(SourceRow(file, row_number, point_id, key, data, caption, payload,
                              content_hash(data.data, caption, model)))
    flag_truncated(rows, too_long, summary)
    return rows


def _keep(summary: IngestSummary, id_column: str | None, key: Any, key_error: str | None = None) -> None:
    """Record the point id of a rejected row when the id column gives it: a sync keeps that point."""
    if id_column and key_error is None and id_problem(key) is None:
        summary.kept_ids.append(point_id_from_key(key))


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


def flag_truncated(rows: list[SourceRow], too_long: Callable[[list[str]], list[bool]] | None,
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
