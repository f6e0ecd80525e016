"""``--group-by``: at most N hits per value of a payload field, read from one ranking until the page of groups
is full or the ranking ends — never a short page while more groups exist."""
from __future__ import annotations

from typing import Any, Callable

from mmindex.connectors.base import SearchRequest, Store
from mmindex.errors import StoreError, UsageError
from mmindex.keys import TRUNCATED_KEY
from mmindex.pipeline.query.hits import Hit, hit_from
from mmindex.pipeline.query.plan import DepthError
from mmindex.pipeline.query.ranking import ranking_to_end

GROUPABLE = ("keyword", "integer", "bool")
FIRST_SCAN = 64


def grouped(store: Store, request: Callable[..., SearchRequest], key: str, group_size: int, limit: int,
            offset: int, payload_types: dict[str, str], scan_limit: int = 100_000,
            tolerance: float = 0.0, matching: Callable[[], int] | None = None) -> list[Hit]:
    """Groups ``offset`` to ``offset + limit`` of the ranking ``request(size, with_payload)`` returns, each of its
    best ``group_size`` hits whose payload ``key`` holds the group's value (a list field: each of its values),
    groups ordered by their best hit. Points without the field are in no group (as Qdrant's group API).

    Reads the ranking deeper (doubling) until every group on the page is full or the ranking ends; raises
    StoreError past ``scan_limit`` hits rather than return a page that may be short, and UsageError for a field
    the collection does not have or cannot group by (floats, text, objects).

    ``matching``: for a ranking that covers only some candidates (fused or boosted: each leg's best
    ``--fusion-depth``), how many points the filter keeps; when the ranking ends before the page of groups is full
    and more points match than it ranked, FilterError says so (those points may hold more groups or members)
    rather than return a page that may be short.
    """
    check_group_field(key, payload_types, store.collection)
    depth = max(FIRST_SCAN, 2 * (offset + limit) * group_size)
    while True:
        points, ended = ranking_to_end(store, lambda size: request(size, True), depth, tolerance=tolerance)
        groups: dict[Any, list] = {}
        for point in points:
            for value in group_values(point.payload.get(key)):
                members = groups.setdefault(value, [])
                if len(members) < group_size:
                    members.append(point)
        page = list(groups.items())[offset:offset + limit]
        full = len(groups) >= offset + limit and all(len(m) == group_size for _, m in page)
        if ended and not full and matching is not None and matching() > len(points):
            raise DepthError(f"--group-by {key}: the ranking holds only {len(points):,} candidates (each leg's best "
                              "--fusion-depth), too few to fill this page of groups, and more points match: raise "
                              "--fusion-depth (up to 10,000), or group a plain dense search")
        if ended or full:
            return [grouped_hit(point, value) for value, members in page for point in members]
        if depth >= scan_limit:
            raise StoreError(f"--group-by {key}: the best {scan_limit:,} hits do not fill a page of groups; narrow "
                             "the search with a filter, or lower --group-size or the page")
        depth = min(depth * 2, scan_limit)


def grouped_hit(point: Any, value: Any) -> Hit:
    hit = hit_from(point.id, point.score, point.payload)
    hit.group = value
    return hit


def group_values(value: Any) -> list[Any]:
    """The groups a payload value puts its point in: itself, each element of a list (once), none for null."""
    if value is None:
        return []
    if isinstance(value, list):
        seen: list[Any] = []
        for item in value:
            if item is not None and not isinstance(item, (list, dict)) and item not in seen:
                seen.append(item)
        return seen
    if isinstance(value, dict):
        return []
    return [value]


def check_group_field(key: str, payload_types: dict[str, str], collection: str) -> None:
    """UsageError unless ``key`` is a top-level payload field of a groupable type: keyword, integer or bool, or a
    list of them (recorded under its elements' type, ``records.index_kind``)."""
    known = {name: kind for name, kind in payload_types.items() if not name.startswith('"')}
    known.setdefault("caption", "keyword")
    known.pop(TRUNCATED_KEY, None)
    kind = known.get(key)
    groupable = sorted(name for name, k in known.items() if k in GROUPABLE)
    root = next((name for name in known if key.startswith(name + ".")), None) if kind is None else None
    if root is not None:
        raise UsageError(f"--group-by takes a top-level field; {key!r} lies below {root!r} (group by one of: "
                         f"{', '.join(groupable) or 'none'}; `mmindex facets {key}` counts its values)")
    if kind is None:
        raise UsageError(f"--group-by: no field {key!r} in collection {collection!r} (fields you can group by: "
                         f"{', '.join(groupable) or 'none'})")
    if kind not in GROUPABLE:
        raise UsageError(f"--group-by: field {key!r} holds {kind} values, which do not form groups; group by one "
                         f"of: {', '.join(groupable) or 'none'}")
