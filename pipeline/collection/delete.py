"""Delete points on purpose: by the id column's values, by point id, by a filter, or by source.

``select_points`` turns what the user names into the point ids it matches (read only, so a command
can show the count and ask before ``delete_points`` removes them). The HTTP service never
deletes; this is for the CLI and the Python API.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from mmindex.connectors.base import Store
from mmindex.errors import InputError, UsageError
from mmindex.pipeline.collection.info import require_collection
from mmindex.pipeline.ingest.records import id_problem, point_id_from_key
from mmindex.pipeline.ingest.sync import DELETE_BATCH, describe_id_rule
from mmindex.pipeline.query.filters import compile_filter, matches_everything, source_filter


@dataclass
class Selection:
    """The points a delete names: their ids, and what was asked for that matched nothing."""

    collection: str
    described: str  # "3 ids", "where year < 2000", "source 'nightly'"
    ids: list[str] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)  # asked-for ids (as given) with no point
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"collection": self.collection, "selected": self.described, "matched": len(self.ids),
                "not_found": self.not_found[:1000], "not_found_count": len(self.not_found)}


def select_points(store: Store, *, ids: Sequence[Any] = (), point_ids: Sequence[str] = (), where: str | None = None,
           filter_json: str | dict[str, Any] | None = None, source: str | None = None, page: int = 2048,
                  place: str = "") -> Selection:
    """The points of ``store`` that one kind of selector names (give exactly one kind).

    ``ids`` are values of the collection's id column (``--id-col`` at ingest; their point ids
    are UUIDv5 of them); ``point_ids`` are point ids (UUIDs) as search results show them;
    ``where`` is the ``--where`` language and ``filter_json`` a raw Qdrant filter (both may be
    given, ANDed); ``source`` is a source name (``ingest --source``). Raises UsageError for
    no selector or several kinds, InputError for a collection whose ids come from content when ``ids`` are
    given, or an invalid point id; FilterError for an invalid filter; StoreError when the
    collection does not exist.
    """
    ids = [ids] if isinstance(ids, (str, int, float)) else list(ids)
    point_ids = [point_ids] if isinstance(point_ids, str) else list(point_ids)
    kinds = [bool(ids), bool(point_ids), where is not None or filter_json is not None, source is not None]
    if sum(kinds) != 1:
        raise UsageError("name the points to delete one way: --ids, --point-ids, --where/--filter-json or --source")
    require_collection(store, place)
    meta = store.metadata()
    selection = Selection(store.collection, "")
    if ids or point_ids:
        wanted = _point_ids(meta, ids, point_ids)
        found: set[str] = set()
        keys = list(wanted)
        for start in range(0, len(keys), page):
            found.update(p.id for p in store.retrieve(keys[start:start + page]))
        selection.ids = [point for point in wanted if point in found]
        selection.not_found = [str(given) for point, given in wanted.items() if point not in found]
        selection.described = f"{len(wanted):,} id(s)" if ids else f"{len(wanted):,} point id(s)"
        return selection
    if source is not None:
        query = source_filter(source)
        known = sorted(meta.get("sources", {}))
        selection.described, selection.source = f"source {source!r}", source
        if source not in known:
            selection.described += f" (the collection records {', '.join(map(repr, known)) or 'no sources'})"
    else:
        query = compile_filter(where, filter_json, field_types=meta.get("payload_types", {}))
        if matches_everything(query):
            raise InputError("this filter has no condition, so it matches every point; name the points to delete (to "
                             "remove the whole collection, delete it: its folder under the data directory, or the "
                             "collection on the server)")
        selection.described = " and ".join(filter(None, [f"where {where}" if where else "",
                                                         "the --filter-json filter" if filter_json else ""]))
    offset = None
    while True:
        points, offset = store.scroll(query, limit=page, offset=offset, with_payload=False)
        selection.ids.extend(p.id for p in points)
        if offset is None:
            return selection


def _point_ids(meta: dict[str, Any], ids: Sequence[Any], point_ids: Sequence[str]) -> dict[str, Any]:
    """Point id → the value the user gave, in the order given, without repeats."""
    if point_ids:
        wanted = {}
        for given in point_ids:
            try:
                wanted[str(uuid.UUID(str(given)))] = given
            except ValueError:
                raise UsageError(f"--point-ids: {given!r} is not a point id (a UUID, as search results show)") from None
        return wanted
    rule = meta.get("id_rule") or {}
    if rule.get("rule") != "column":
        raise UsageError(f"collection makes point ids {describe_id_rule(rule) if rule else 'in an unrecorded way'}, "
                         "so there are no id values to name; select with --point-ids, --where or --source")
    wanted = {}
    for given in ids:
        trouble = id_problem(given)
        if trouble:
            raise UsageError(f"--ids: a value {trouble}")
        wanted[point_id_from_key(given)] = given
    return wanted


def delete_points(store: Store, selection: Selection, on_progress: Callable[[int], None] | None = None) -> int:
    """Delete the selected points in batches; returns how many were deleted.

    Deletes are by id, so a delete that was killed is finished by running it again. Deleting
    a whole source also removes its name from the collection's record of sources.
    """
    deleted = 0
    for start in range(0, len(selection.ids), DELETE_BATCH):
        chunk = selection.ids[start:start + DELETE_BATCH]
        store.delete(chunk)
        deleted += len(chunk)
        if on_progress:
            on_progress(len(chunk))
    if selection.source is not None:
        sources = dict((store.metadata() or {}).get("sources", {}))
        if sources.pop(selection.source, None) is not None:
            store.update_metadata({"sources": sources})
    return deleted


def delete(store: Store, *, ids: Sequence[Any] = (), point_ids: Sequence[str] = (), where: str | None = None,
           filter_json: dict[str, Any] | None = None, source: str | None = None) -> int:
    """Select (see ``select_points``) and delete in one call; returns the number of points deleted."""
    return delete_points(store, select_points(store, ids=ids, point_ids=point_ids, where=where, filter_json=filter_json,
                                       source=source))
