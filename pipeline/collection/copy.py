"""Copying a collection from one store to another (Edge ⇄ server, Edge → Edge), no model run.

Points travel with their vectors and payloads, page by page in id order; the collection's
record (model, fingerprint, id rule, sources, payload types), layout and payload indexes
come along. The scroll cursor is kept in the target's record, so a copy that stopped is
continued by running it again.
"""
from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Callable

import numpy as np

from mmindex.connectors.base import CollectionOptions, CollectionSpec, PointRecord, Store, StoredPoint
from mmindex.connectors.queries import SparseVector
from mmindex.errors import StoreError, UsageError
from mmindex.pipeline.config import StoreSettings

COPY_KEY = "copy_from"  # in the target's record while a copy into it is unfinished (index build included)
COPIED_KEY = "copied_from"  # in the target's record once the copy is complete: {source, points, finished_at}
# Keys of the record each store writes itself (when it creates the collection or an index),
# or that belong to one run on one store; every other key is carried over as it is.
OWN_KEYS = {"format", "dim", "distance", "vectors", "options", "indexed_fields", "payload_types", "model",
            "model_fingerprint", "text_model", "text_model_fingerprint", "model_precision", "indexing_threshold_before_load", COPY_KEY,
            COPIED_KEY}


@dataclass
class CopySummary:
    """What a copy did. ``copied`` counts the points written by this run (a resumed run writes
    only the rest); ``source_points`` and ``target_points`` are both collections' counts at
    the end, equal after a complete copy; ``resumed_from`` is the point id the run continued at.
    ``already_complete``: the target was a finished copy of this source already, and nothing was done;
    ``finished_at`` is when the copy was completed (UTC, ISO 8601)."""

    source: str
    target: str
    model: str
    copied: int = 0
    source_points: int = 0
    target_points: int = 0
    resumed_from: str | None = None
    indexed_fields: dict[str, str] | None = None
    seconds: float = 0.0
    already_complete: bool = False
    finished_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe(store: Store) -> str:
    """Where a store's collection lives, as a user reads it: ``qdrant-edge /data/photos``,
    ``qdrant-server http://host:6333 photos``. An alias is named by the collection it points to."""
    kind = getattr(store, "kind", type(store).__name__)
    folder = getattr(store, "folder", None)
    if folder is not None:
        return f"{kind} {os.path.realpath(folder)}"
    return f"{kind} {getattr(store, 'url', '?')} {_server_name(store)}"


def copy_collection(source: Store, target: Store, page: int = 256,
                    on_progress: Callable[[int, int], None] | None = None,
                    options: CollectionOptions | None = None) -> CopySummary:
    """Copy every point of ``source`` into ``target`` with its vectors and payload, and the collection's record.

    ``page`` is points read per scroll request (vectors included); the target's ``upsert``
    splits each page into requests bounded by bytes. ``on_progress(done, total)`` is called
    once before the first page and after each page is stored and its cursor recorded: ``done``
    points of ``total`` (the source's count) are in the target, resumed ones included.
    ``options`` lay out a new target (default: the source's layout).

    Resumable: after each page the target's record holds ``copy_from`` = {source, next_offset,
    copied, complete}; the same copy run again continues at ``next_offset``. When every point is
    copied the target is finished (``finish()``: index built, flushed) and both counts compared;
    only then is ``copy_from`` replaced by ``copied_from`` = {source, points, finished_at}. So a
    copy stopped at any moment, even while the index builds, goes on when run again, and a
    finished copy run again does nothing (``already_complete``). Copy from a source nothing
    writes to meanwhile: a point changed behind the cursor is not copied again.

    Raises ``StoreError`` when the source does not exist (or was not made by mmindex), when
    source and target are the same collection, when the target already holds points and is not
    an unfinished or finished copy of this source, or when the counts differ at the end (or, for
    a finished copy, differ now);
    ``CollectionMismatchError`` when the target holds another model's vectors.
    """
    started = time.monotonic()
    meta = _source_record(source)
    source_name, target_name = describe(source), describe(target)
    if _same_collection(source, target):
        raise UsageError(f"source and target are the same collection ({source_name}); copy to another "
                         "collection name, data directory or server")
    spec = CollectionSpec.from_metadata(meta)
    cursor, done, complete, finished = _resume_point(target, spec, source_name)
    summary = CopySummary(source_name, target_name, meta["model"], resumed_from=cursor)
    if finished is not None:
        return _already_complete(source, target, summary, finished, started)
    _prepare_target(source, target, spec, meta, options)
    if done == 0 and cursor is None and not complete:
        _mark(target, source_name, None, 0)  # from here on a rerun knows this target is our copy
    total = source.count()
    if on_progress:
        on_progress(done, total)
    while not complete:
        points, cursor = source.scroll(limit=page, offset=cursor, with_payload=True, with_vectors=True)
        if points:
            target.upsert([_record(point) for point in points])
        done += len(points)
        summary.copied += len(points)
        complete = cursor is None
        _mark(target, source_name, cursor, done, complete)
        if on_progress:
            on_progress(done, total)
    target.finish()  # the marker stays until this is done: a copy stopped while the index builds builds it again
    summary.source_points, summary.target_points = source.count(), target.count()
    summary.indexed_fields = dict((target.metadata() or {}).get("indexed_fields", {}))
    if summary.source_points != summary.target_points:
        raise StoreError(f"the copy is incomplete: the target {target_name} has {summary.target_points:,} points, "
                         f"the source {source_name} {summary.source_points:,} (was the source written to during "
                         "the copy?); delete the target and copy again while nothing writes to the source")
    summary.finished_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    target.update_metadata({COPY_KEY: None, COPIED_KEY: {"source": source_name, "points": summary.target_points,
                                                         "finished_at": summary.finished_at}})
    summary.seconds = time.monotonic() - started
    return summary


def _already_complete(source: Store, target: Store, summary: CopySummary, finished: dict[str, Any],
                      started: float) -> CopySummary:
    """The summary of a copy run again after it finished: nothing to do while both still hold the same points."""
    summary.source_points, summary.target_points = source.count(), target.count()
    summary.indexed_fields = dict((target.metadata() or {}).get("indexed_fields", {}))
    summary.already_complete, summary.finished_at = True, finished.get("finished_at")
    summary.resumed_from = None
    if summary.source_points != summary.target_points:
        raise StoreError(f"the target {summary.target} is a finished copy of {summary.source} (finished "
                         f"{summary.finished_at}, {finished.get('points', 0):,} points), but the source now has "
                         f"{summary.source_points:,} points and the target {summary.target_points:,}; to copy it "
                         "again, delete the target or copy to another --to-collection")
    changed = first_difference(source, target)
    if changed is not None:
        raise StoreError(f"the target {summary.target} is a finished copy of {summary.source} (finished "
                         f"{summary.finished_at}), but the source changed since: {changed}; to copy it again, delete "
                         "the target or copy to another --to-collection")
    summary.seconds = time.monotonic() - started
    return summary


def first_difference(source: Store, target: Store, page: int = 256) -> str | None:
    """Where ``target`` stops being a copy of ``source`` — a point missing, extra, or with another payload or
    vectors (compared to 1e-6) — or None. Both are read once, page by page in id order (memory: two pages)."""
    source_cursor = target_cursor = None
    while True:
        ours, source_cursor = source.scroll(limit=page, offset=source_cursor, with_payload=True, with_vectors=True)
        theirs, target_cursor = target.scroll(limit=page, offset=target_cursor, with_payload=True, with_vectors=True)
        for a, b in zip(ours, theirs):
            if a.id != b.id:
                return f"point {min(a.id, b.id)} is in one of them only"
            if a.payload != b.payload:
                return f"point {a.id} has another payload"
            vectors_a, vectors_b = a.vectors or {}, b.vectors or {}
            if set(vectors_a) != set(vectors_b) or any(
                    not np.allclose(vectors_a[name], vectors_b[name], atol=1e-6) for name in vectors_a):
                return f"point {a.id} has other vectors"
        if len(ours) != len(theirs) or (source_cursor is None) != (target_cursor is None):
            return "they hold other points"
        if source_cursor is None:
            return None


def _source_record(source: Store) -> dict[str, Any]:
    if not source.exists():
        raise StoreError(f"cannot copy collection {source.collection!r}: it does not exist ({describe(source)})")
    meta = source.metadata()
    if not meta or "model" not in meta or "dim" not in meta:
        raise StoreError(f"cannot copy collection {source.collection!r}: it was not made by mmindex "
                         "(no model recorded with it)")
    return meta


def _resume_point(target: Store, spec: CollectionSpec,
                  source_name: str) -> tuple[str | None, int, bool, dict[str, Any] | None]:
    """(cursor, points already copied, all points copied, the record of a finished copy of this source) to go on
    from; refuses a target that is not ours to fill."""
    if not target.exists():
        return None, 0, False, None
    existing = target.spec()
    if existing is None:
        raise StoreError(f"the target {describe(target)} exists but was not made by mmindex; copy to another name")
    spec.check_matches(existing, target.collection)
    meta = target.metadata() or {}
    marker, finished = meta.get(COPY_KEY), meta.get(COPIED_KEY)
    if marker is not None and marker.get("source") == source_name:
        return marker.get("next_offset"), int(marker.get("copied", 0)), bool(marker.get("complete")), None
    if marker is not None:
        raise StoreError(f"the target {describe(target)} holds an unfinished copy of {marker.get('source')}, "
                         "not of this source; finish that copy, or copy to another name")
    if finished is not None and finished.get("source") == source_name:
        return None, 0, True, finished
    points = target.count()
    if points:
        copy_of = f" (a copy of {finished.get('source')})" if finished else ""
        raise StoreError(f"the target {describe(target)} already holds {points:,} points{copy_of}; copy into a new "
                         "or empty collection (another --to-collection), or delete it first")
    return None, 0, False, None


def _prepare_target(source: Store, target: Store, spec: CollectionSpec, meta: dict[str, Any],
                    options: CollectionOptions | None) -> None:
    """Create (or check) the target for the source's model and layout; carry the record and the payload indexes."""
    if hasattr(target, "options"):  # both stores lay out what they create from this attribute
        known = {f.name for f in fields(CollectionOptions)}
        recorded = {k: v for k, v in meta.get("options", {}).items() if k in known}
        target.options = options or CollectionOptions(**recorded)
    target.ensure_collection(spec)
    carried = {key: value for key, value in meta.items() if key not in OWN_KEYS}
    if carried:
        target.update_metadata(carried)
    wanted = {**meta.get("indexed_fields", {}), **source.info().indexed_fields}
    have = (target.metadata() or {}).get("indexed_fields", {})
    for field_name, kind in sorted(wanted.items()):
        if have.get(field_name) != kind:
            target.create_payload_index(field_name, kind)
    target.begin_load()


def _mark(target: Store, source_name: str, cursor: str | None, done: int, complete: bool = False) -> None:
    target.update_metadata({COPY_KEY: {"source": source_name, "next_offset": cursor, "copied": done,
                                       "complete": complete}})


def _record(point: StoredPoint) -> PointRecord:
    # float32 is what both engines store, so the values pass through unchanged.
    vectors = {name: values if isinstance(values, SparseVector) else np.asarray(values, dtype=np.float32)
               for name, values in (point.vectors or {}).items()}  # keyword vectors (sparse) as they are
    return PointRecord(point.id, vectors, point.payload)


def _same_collection(a: Store, b: Store) -> bool:
    if type(a) is not type(b):
        return False
    if getattr(a, "folder", None) is not None:
        return describe(a) == describe(b)
    same_server = getattr(a, "client", None) is getattr(b, "client", None) or (
        getattr(a, "url", None) == getattr(b, "url", None) and getattr(a, "url", None) != ":memory:")
    return same_server and _server_name(a) == _server_name(b)


def _server_name(store: Store) -> str:
    """The collection a server store's name stands for (an alias resolved)."""
    try:
        return store.aliases().get(store.collection, store.collection)
    except StoreError:
        return store.collection


def copy_target(settings: StoreSettings, *, url: str | None = None, data_dir: str | None = None,
                collection: str | None = None, api_key: str | None = None, ca_cert: str | None = None) -> StoreSettings:
    """Where ``mmindex copy`` writes: a server (``url``, with its own key and CA), an embedded store's folder
    (``data_dir``), or the source's own store; the collection is ``collection``, else the source's name.
    UsageError when both or none of the places are given."""
    if url and data_dir:
        raise UsageError("give --to-url or --to-data-dir, not both")
    if not (url or data_dir or collection):
        raise UsageError("say where to copy to: --to-url, --to-data-dir and/or --to-collection")
    if url:
        target = replace(settings, url=url, api_key=api_key, ca_cert=ca_cert)
    elif data_dir:
        target = replace(settings, url=None, api_key=None, ca_cert=None, data_dir=data_dir)
    else:
        target = settings
    return replace(target, collection=collection or settings.collection)


def copy_between(source: StoreSettings, target: StoreSettings, page: int = 256,
                 on_progress: Callable[[int, int], None] | None = None) -> CopySummary:
    """``copy_collection`` from the collection ``source`` names to the one ``target`` names, opening and closing
    both stores."""
    source_store = source.open()
    try:
        target_store = target.open()
        try:
            return copy_collection(source_store, target_store, page=page, on_progress=on_progress)
        finally:
            target_store.close()
    finally:
        source_store.close()
