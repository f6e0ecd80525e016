"""One way from what a user writes to a checked Qdrant filter, for search, delete and the HTTP service alike: a
``--where`` expression (compiled against the collection's recorded field types) ANDed with a raw Qdrant filter
(JSON text or an object, checked against qdrant-client's schema), optionally bounded in shape.
"""
from __future__ import annotations

import json
from typing import Any

from mmindex.errors import FilterError
from mmindex.pipeline.query.where import check_filter_shape, parse_where, validate_filter


def compile_filter(where: str | None = None, raw: str | dict[str, Any] | None = None, *,
                   field_types: dict[str, str] | None = None, origin: str = "--filter-json",
                   max_depth: int | None = None, max_conditions: int | None = None) -> dict[str, Any] | None:
    """``where`` AND ``raw`` → one Qdrant filter (a dict in Qdrant's filter JSON), or None when neither is given.

    ``field_types``: the collection's recorded payload types (``CollectionSpec.payload_types``), which type each
    comparison of ``where`` (None: literals are inferred and any field is accepted). ``raw``: a Qdrant filter as JSON
    text or as an object; ``origin`` names it in messages (``--filter-json``, ``filter``). With ``max_depth``
    and/or ``max_conditions`` (None: 32 levels, any number of conditions) the result is bounded in nesting and
    condition count (the HTTP service's limits). Raises ``FilterError`` naming what is wrong: in ``where``, an unknown
    field or a literal of the wrong type; in ``raw``, invalid JSON or a filter Qdrant would refuse (its keys are not
    checked against ``field_types``); or a result over the bounds.
    """
    compiled = combine_filters(parse_where(where, field_types), load_raw_filter(raw, origin))
    if compiled is not None and (max_depth is not None or max_conditions is not None):
        check_filter_shape(compiled, origin, max_depth if max_depth is not None else 32, max_conditions)
    return compiled


def load_raw_filter(raw: str | dict[str, Any] | None, origin: str = "--filter-json") -> dict[str, Any] | None:
    """A raw Qdrant filter (JSON text or an object) → the checked filter, or None for none or blank text."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as error:
            raise FilterError(f"{origin} is not valid JSON: {error}") from error
    if not isinstance(raw, dict):
        raise FilterError(f"{origin} must be a JSON object such as {{\"must\": [...]}}, not {json.dumps(raw)}")
    return validate_filter(raw, origin)


def combine_filters(*filters: dict[str, Any] | None) -> dict[str, Any] | None:
    """AND several Qdrant filters together (None and empty ones are left out)."""
    present = [f for f in filters if f]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return {"must": present}


def source_filter(name: str) -> dict[str, Any]:
    """The Qdrant filter for the points a source wrote (``_source.name``)."""
    return {"must": [{"key": "_source.name", "match": {"value": name}}]}


CLAUSES = ("must", "should", "must_not", "min_should")


def matches_everything(spec: dict[str, Any] | None) -> bool:
    """Whether a Qdrant filter (JSON form) holds by its shape alone, so it matches every point: None, ``{}``,
    ``{"must": []}``, ``{"must_not": [{"must_not": [{}]}]}``… Conditions (key, has_id, is_empty, nested…) count as
    unknown: a filter whose outcome depends on one is not (even if the data make it match all points). Exact for
    filters without conditions; ``tests/query/test_filters.py`` checks it against the engine."""
    return spec is None or _decided(spec, True)


def _decided(spec: Any, value: bool) -> bool:
    """Whether ``spec`` is ``value`` (True: matches every point, False: none) whatever its conditions say. Qdrant's
    rules: ``must`` all, ``should`` any (or none given), ``must_not`` none; ``min_should`` is left undecided."""
    if not isinstance(spec, dict) or not set(spec) <= set(CLAUSES) or spec.get("min_should"):
        return False  # a condition, or a clause this does not reason about
    must, should, must_not = ([part] if isinstance(part, dict) else list(part or [])
                              for part in (spec.get("must"), spec.get("should"), spec.get("must_not")))
    if value:
        return (all(_decided(p, True) for p in must) and (not should or any(_decided(p, True) for p in should))
                and all(_decided(p, False) for p in must_not))
    return (any(_decided(p, False) for p in must) or (bool(should) and all(_decided(p, False) for p in should))
            or any(_decided(p, True) for p in must_not))
