"""Giving a collection's points their keyword vectors from what they store (``mmindex keywords``): no model, no image
vector read. A collection made before keyword search gains the sparse ``keywords`` vector; one whose ``--text-fields``
change has every vector made again. Resumable: the scroll cursor is kept in the collection's record.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mmindex.connectors.base import PointRecord, Store
from mmindex.connectors.queries import KEYWORDS, SparseVector
from mmindex.errors import InputError
from mmindex.keys import CAPTION_KEY
from mmindex.pipeline.collection.info import require_collection
from mmindex.pipeline.query.keywords import (
    BACKFILL_KEY,
    SETTINGS_KEY,
    KeywordSettings,
    has_keywords_vector,
    keyword_document,
    keyword_text,
    new_settings,
    recorded_settings,
)


@dataclass
class KeywordsSummary:
    """What ``backfill_keywords`` did. ``written``: points given a keyword vector by this run (a resumed run counts
    only its own); ``without_text``: points this run found with no indexable text (they get none); ``points``: the
    collection's points; ``resumed_from``: the point id the run continued at; ``added_vector``: the collection
    gained the sparse vector in this run; ``redone``: the rule or the fields changed, so every point's vector was
    made again; ``already_complete``: every point had its vector under this rule already, nothing was done."""

    collection: str
    fields: list[str] = field(default_factory=list)
    points: int = 0
    written: int = 0
    without_text: int = 0
    resumed_from: str | None = None
    added_vector: bool = False
    redone: bool = False
    already_complete: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def backfill_keywords(store: Store, text_fields: Sequence[str] | None = None, page: int = 256,
                      on_progress: Callable[[int, int], None] | None = None,
                      on_stage: Callable[[str], None] | None = None, place: str = "") -> KeywordsSummary:
    """Make every point's keyword vector (``pipeline/query/keywords.py``) from its stored caption and the payload
    fields ``text_fields`` (None: the recorded ones, else none), page by page in id order.

    ``page``: points read per scroll (payloads only). ``on_progress(done, total)`` after each page is written and
    its cursor recorded; ``on_stage(note)`` names the index build at the end. The rule and fields are recorded
    (``keywords``) before the first write, and ``keywords_backfill`` = {next, done, clear} after each page, so a run
    stopped at any moment continues where it stopped when run again (with the same fields; other fields start
    over), and queries refuse keyword search until it has finished. A finished run again does nothing
    (``already_complete``). A point whose text has no token gets no vector (one it held is removed).

    Raises ``StoreError`` when the collection does not exist (or the store's writer lock is held: a service or
    another run has it open), ``UsageError`` for a text field that is unknown or not text, ``InputError`` naming
    the point and field for a non-text value.
    """
    started = time.monotonic()
    require_collection(store, place)
    store.count()  # opens it: an embedded collection another process holds is refused before its record changes
    meta = store.metadata() or {}
    recorded = recorded_settings(meta)
    names = text_fields if text_fields is not None else (recorded.fields if recorded else ())
    wanted = new_settings(names, meta.get("payload_types"))
    summary = KeywordsSummary(store.collection, list(wanted.fields))
    checkpoint = meta.get(BACKFILL_KEY) if recorded is not None and recorded.same_rule(wanted) else None
    if recorded is not None and recorded.same_rule(wanted) and not checkpoint:
        summary.already_complete, summary.points = True, store.count()
        summary.seconds = time.monotonic() - started
        return summary
    if not has_keywords_vector(meta):
        store.add_keywords_vector()
        summary.added_vector = True
    if checkpoint:
        cursor, done, clear = checkpoint.get("next"), int(checkpoint.get("done", 0)), bool(checkpoint.get("clear"))
        summary.resumed_from = cursor
    else:
        # Points may hold vectors of an earlier rule unless the vector is new: those whose text is now empty lose it.
        cursor, done, clear = None, 0, not summary.added_vector
        summary.redone = recorded is not None
        store.update_metadata({SETTINGS_KEY: wanted.to_record(), BACKFILL_KEY: _mark(None, 0, clear)})
    _fill(store, wanted, cursor, done, clear, page, on_progress, summary)
    if on_stage:
        on_stage("building the vector index")
    store.finish(optimize=True)  # rewritten points left their indexed segments; the mark stays until this is done
    store.update_metadata({BACKFILL_KEY: None})
    summary.points = store.count()
    summary.seconds = time.monotonic() - started
    return summary


def _fill(store: Store, settings: KeywordSettings, cursor: str | None, done: int, clear: bool, page: int,
          on_progress: Callable[[int, int], None] | None, summary: KeywordsSummary) -> None:
    """Scroll from ``cursor``, write each page's vectors, then record the next cursor."""
    total = store.count()
    if on_progress:
        on_progress(done, total)
    while True:
        points, cursor = store.scroll(limit=page, offset=cursor, with_payload=True, with_vectors=False)
        items = [(point.id, point_document(point.id, point.payload, settings)) for point in points]
        write_keyword_vectors(store, items, clear=clear)
        written = sum(vector is not None for _, vector in items)
        summary.written += written
        summary.without_text += len(items) - written
        done += len(items)
        if cursor is None:
            break  # the last page: the mark keeps the previous cursor until the index is built
        store.update_metadata({BACKFILL_KEY: _mark(cursor, done, clear)})
        if on_progress:
            on_progress(done, total)
    if on_progress:
        on_progress(done, total)


def _mark(cursor: str | None, done: int, clear: bool) -> dict[str, Any]:
    return {"next": cursor, "done": done, "clear": clear}


def point_document(point_id: str, payload: Mapping[str, Any], settings: KeywordSettings) -> SparseVector | None:
    """A stored point's keyword vector from its payload (``keyword_document``); an ``InputError`` names the point."""
    try:
        return keyword_document(payload.get(CAPTION_KEY), payload, settings.keys, settings)
    except InputError as error:
        raise InputError(f"point {point_id}: {error.message}") from error


def write_keyword_vectors(store: Store, items: Sequence[tuple[str, SparseVector | None]], clear: bool = True) -> None:
    """Set each point's keyword vector (other vectors and payload kept). A None vector with ``clear``: the point
    loses the one it holds, by writing it again without it (its other vectors read back for that): an engine's
    vector delete leaves the point in Qdrant Edge's IDF statistics (N and the token counts), a rewrite does not."""
    vectors = [(point_id, {KEYWORDS: vector}) for point_id, vector in items if vector is not None]
    if vectors:
        store.update_vectors(vectors)
    empty = [point_id for point_id, vector in items if vector is None]
    if not clear or not empty:
        return
    held = [point for point in store.retrieve(empty, with_vectors=True) if KEYWORDS in (point.vectors or {})]
    if held:
        store.upsert([PointRecord(point.id, {name: np.asarray(vector, dtype=np.float32)
                                             for name, vector in point.vectors.items() if name != KEYWORDS},
                                  point.payload) for point in held])


def changed_keywords(settings: KeywordSettings | None, updates: Sequence[tuple[str, dict[str, Any]]],
                     stored: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, SparseVector | None]]:
    """For payload-only updates (same image and caption, new payload) of an ingest: the new keyword vector of each
    point whose keyword text changed (a --text-field edited), for ``write_keyword_vectors``; [] without a rule."""
    if settings is None:
        return []
    changed = []
    for point_id, payload in updates:
        previous = stored.get(point_id) or {}
        before = keyword_text(previous.get(CAPTION_KEY), previous, settings.keys)
        if before != keyword_text(payload.get(CAPTION_KEY), payload, settings.keys):
            changed.append((point_id, point_document(point_id, payload, settings)))
    return changed
