"""``/duplicates`` for the HTTP service: the library's duplicate groups (``pipeline/duplicates/find.py``) of a whole
collection, bounded to collections of at most ``--max-duplicates-points`` points (larger ones: the CLI), the last
run per collection and tier kept a few minutes so that paging through the groups does not run it again."""
from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass
from typing import Any

from mmindex.errors import InputError
from mmindex.pipeline.duplicates.find import DuplicatesReport, find_duplicates
from mmindex.pipeline.duplicates.members import id_column, id_value
from mmindex.pipeline.duplicates.signals import HEIGHT_KEY, WIDTH_KEY
from mmindex.pipeline.query.hits import hit_from
from mmindex.pipeline.serve.errors import ApiError
from mmindex.pipeline.serve.searching import public_hit
from mmindex.pipeline.serve.settings import ServeSettings

CACHE_SECONDS = 300.0  # a run's groups answer the pages asked for within this time, while the point count holds
CACHE_ENTRIES = 8  # (collection, tier) runs kept


@dataclass
class CachedRun:
    report: DuplicatesReport
    points: int
    made: float


async def run_duplicates(service, settings: ServeSettings, cache: dict, collection: str | None, tier: str,
                         limit: int, offset: int) -> dict[str, Any]:
    """The ``/duplicates`` answer: groups ``offset`` to ``offset + limit`` of ``collection`` (default: the service's;
    an alias: the collection it points to now) joined by pairs of ``tier`` or stronger, each member with its id-column
    value, caption, size and thumbnail URL, each pair with its evidence.

    ``cache``: (collection, tier) → ``CachedRun``, kept ``CACHE_SECONDS`` while the collection's point count is the
    same. 400 ``collection_too_large`` past ``limits.max_duplicates_points`` (with the CLI command to run instead),
    400 ``no_signals`` when no point has duplicate signals (with the command that adds them), 503 ``store_timeout``
    when the run takes longer than ``limits.duplicates_timeout``.
    """
    name = collection or settings.store.collection
    found, store, _ = await service.call(service.locate, name)
    points = await service.call(store.count)
    most = settings.limits.max_duplicates_points
    if points > most:
        raise ApiError(400, "collection_too_large", f"collection {name!r} holds {points:,} points; /duplicates runs on "
                                                    f"at most {most:,} here: run `mmindex duplicates -c {name}` (a "
                                                    "table, JSON lines or Parquet) for the whole collection")
    key = (found, tier)
    run = cache.get(key)
    cached = run is not None and run.points == points and time.monotonic() - run.made < CACHE_SECONDS
    if not cached:
        run = CachedRun(await timed(service, settings, functools.partial(checked_run, store, tier)), points,
                        time.monotonic())
        cache.pop(key, None)
        cache[key] = run
        while len(cache) > CACHE_ENTRIES:
            cache.pop(next(iter(cache)))
    report = run.report
    page = report.groups[offset:offset + limit]
    members = await service.call(member_details, store, [i for g in page for i in g.members], name,
                                 settings.image_root)
    groups = [{**group.to_dict(), "members": [members[i] for i in group.members]} for group in page]
    return {"collection": name, "alias_of": found if found != name else None, "tier": tier, "groups": groups,
            "total_groups": len(report.groups), "points": report.points,
            "without_signals": report.without_signals, "cached": cached}


async def timed(service, settings: ServeSettings, function):
    """``function()`` in the store pool; 503 ``store_timeout`` past ``limits.duplicates_timeout`` seconds."""
    future = asyncio.get_running_loop().run_in_executor(service.store_pool, function)
    try:
        return await asyncio.wait_for(future, settings.limits.duplicates_timeout)
    except asyncio.TimeoutError:
        raise ApiError(503, "store_timeout", f"finding duplicates took longer than "
                                             f"{settings.limits.duplicates_timeout:g} s: run `mmindex duplicates` "
                                             "instead") from None


def checked_run(store, tier: str) -> DuplicatesReport:
    """``find_duplicates`` over the whole collection; its InputError (no signals) as 400 ``no_signals``."""
    try:
        return find_duplicates(store, tier=tier)
    except InputError as error:
        raise ApiError(400, "no_signals", error.message) from None


def member_details(store, ids: list[str], collection: str, image_root: str | None) -> dict[str, dict[str, Any]]:
    """Each point id → ``id`` (the point id), ``id_value`` (the id column's value as text, when the collection makes
    point ids from a column: what tells copies apart, since they share a caption; else None), caption, decoded size
    (px) and thumbnail URL (stored thumbnails, or path images under ``image_root``, as ``/search`` hits show them)."""
    details = {}
    column = id_column(store) if ids else None
    for point in store.retrieve(list(dict.fromkeys(ids))) if ids else []:
        shown = public_hit(hit_from(point.id, 0.0, point.payload), collection, image_root)
        details[point.id] = {"id": point.id, "id_value": id_value(point.payload, column), "caption": shown["caption"],
                             "width": point.payload.get(WIDTH_KEY), "height": point.payload.get(HEIGHT_KEY),
                             "thumbnail": shown["thumbnail"]}
    for missing in set(ids) - set(details):  # deleted since the run
        details[missing] = {"id": missing, "id_value": None, "caption": None, "width": None, "height": None,
                            "thumbnail": None}
    return details

