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
    condition count (the HTTP service's limits); a raw filter's JSON is bounded in depth before it is read
    (``check_json_depth``), so no nesting can exhaust the stack. Raises ``FilterError`` naming what is wrong: in ``where``, an unknown
    field or a literal of the wrong type; in ``raw``, invalid JSON or a filter Qdrant would refuse (its keys are not
    checked against ``field_types``); or a result over the bounds.
    """
    depth = max_depth if max_depth is not None else DEFAULT_DEPTH
    compiled = combine_filters(parse_where(where, field_types), load_raw_filter(raw, origin, depth))
    if compiled is not None and (max_depth is not None or max_conditions is not None):
        check_filter_shape(compiled, origin, depth, max_conditions)
    return compiled


DEFAULT_DEPTH = 32  # levels of must/should/must_not a filter may nest when the caller sets no bound


def load_raw_filter(raw: str | dict[str, Any] | None, origin: str = "--filter-json",
                    max_depth: int = DEFAULT_DEPTH) -> dict[str, Any] | None:
    """A raw Qdrant filter (JSON text or an object) → the checked filter, or None for none or blank text.

    Its nesting is bounded before anything walks it (``check_json_depth``), then it is checked against ``max_depth``
    levels of must/should/must_not and qdrant-client's schema; FilterError naming the bound otherwise.
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as error:
            raise FilterError(f"{origin} is not valid JSON: {error}") from error
        except RecursionError:  # the parser's own bound (about 1,000 levels), far past ours
            raise FilterError(too_deep(origin, max_depth)) from None
    check_json_depth(raw, origin, max_depth)
    if not isinstance(raw, dict):
        raise FilterError(f"{origin} must be a JSON object such as {{\"must\": [...]}}, not {json.dumps(raw)}")
    check_filter_shape(raw, origin, max_depth, None)
    return validate_filter(raw, origin)


def json_depth_limit(max_depth: int) -> int:
    """How deep a filter of ``max_depth`` levels of must/should/must_not can nest JSON objects and arrays: four per
    level (a ``nested`` condition's object, its ``filter`` object, a clause's object and its list) and eight for the
    innermost condition (``{"key", "match": {"any": [...]}}``), with room to spare."""
    return 4 * max_depth + 8


def json_depth(value: Any, stop: int | None = None) -> int:
    """How deep ``value`` nests dicts and lists (a scalar: 0, ``{}``: 1, ``{"a": [1]}``: 2), walked without
    recursion so that no nesting can exhaust the stack; with ``stop``, the walk ends as soon as it passes it."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        node, depth = pending.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if stop is not None and deepest > stop:
            return deepest
        pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def check_json_depth(value: Any, origin: str, max_depth: int) -> None:
    """FilterError when ``value`` nests objects and arrays deeper than a filter of ``max_depth`` levels can."""
    if json_depth(value, stop=json_depth_limit(max_depth)) > json_depth_limit(max_depth):
        raise FilterError(too_deep(origin, max_depth))


def too_deep(origin: str, max_depth: int) -> str:
    return (f"{origin} nests JSON objects and arrays more than {json_depth_limit(max_depth)} deep; a filter may nest "
            f"at most {max_depth} levels of must/should/must_not")


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
