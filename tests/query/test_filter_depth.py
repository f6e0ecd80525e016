"""A raw filter's JSON is bounded in nesting before anything walks it: however deep, in whatever clause or value, it
is a FilterError naming the bound (never a RecursionError), the same for search, delete, the CLI and HTTP; and no
filter within the bound of must/should/must_not levels is refused for its JSON depth."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmindex.errors import FilterError
from mmindex.pipeline.query.filters import compile_filter, json_depth, json_depth_limit
from mmindex.pipeline.query.where import check_filter_shape

CONDITION = {"key": "a", "match": {"value": 1}}
# Ways to nest JSON inside a filter: one level around ``part``, and what the innermost part is.
NESTINGS = {
    "must lists": (lambda part: {"must": [part]}, CONDITION),
    "must objects": (lambda part: {"must": part}, CONDITION),
    "must_not of lists of lists": (lambda part: {"must_not": [[part]]}, CONDITION),
    "nested filters": (lambda part: {"nested": {"key": "a", "filter": part}}, CONDITION),
    "min_should": (lambda part: {"min_should": {"min_count": 1, "conditions": [part]}}, CONDITION),
    "lists in a match": (lambda part: [part], 1),
    "objects in a match": (lambda part: {"x": part}, 1),
}


def deep_filter(nesting: str, levels: int):
    """The filter nested ``levels`` deep one way, built without recursion (no depth is too deep to build)."""
    wrap, part = NESTINGS[nesting]
    for _ in range(levels):
        part = wrap(part)
    return part if isinstance(part, dict) and "key" not in part else {"must": [{"key": "a", "match": {"any": part}}]}


def as_text(value) -> str:
    """JSON text of ``value`` at any depth (``json.dumps`` recurses), written by a loop."""
    pieces, pending = [], [value]
    while pending:
        node = pending.pop()
        if isinstance(node, Syntax):
            pieces.append(node)
        elif isinstance(node, (dict, list)):
            items = list(node.items()) if isinstance(node, dict) else [(None, item) for item in node]
            pieces.append("{" if isinstance(node, dict) else "[")
            pending.append(Syntax("}" if isinstance(node, dict) else "]"))
            for index in reversed(range(len(items))):
                key, item = items[index]
                pending.append(item)
                if key is not None:
                    pending.append(Syntax(json.dumps(key) + ":"))
                if index:
                    pending.append(Syntax(","))
        else:
            pieces.append(json.dumps(node))
    return "".join(pieces)


class Syntax(str):
    """A piece of JSON punctuation in ``as_text``'s stack (not a string value)."""


def json_depth_oracle(value) -> int:
    """Plain recursive depth (fine for the depths the oracle is given)."""
    if isinstance(value, dict):
        return 1 + max((json_depth_oracle(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((json_depth_oracle(v) for v in value), default=0)
    return 0


@pytest.mark.parametrize("nesting", sorted(NESTINGS))
@pytest.mark.parametrize("levels", [150, 400, 5_000])
@pytest.mark.parametrize("text", [True, False])
def test_a_filter_nested_any_depth_is_a_filter_error_naming_the_bound(nesting, levels, text):
    raw = deep_filter(nesting, levels)
    for bound in (None, 8):
        with pytest.raises(FilterError, match=r"nests .*deep|nests deeper than"):
            compile_filter(None, as_text(raw) if text else raw, origin="filter", max_depth=bound)


def test_the_issue_example_names_the_depth_limit():
    """~150 levels, 1.8 KB: under the HTTP size limit; was a RecursionError (a 500)."""
    text = as_text(deep_filter("must lists", 150))
    assert len(text) < 4_000
    with pytest.raises(FilterError) as error:
        compile_filter(None, text, origin="filter", max_depth=8, max_conditions=64)
    assert "at most 8 levels" in str(error.value) and str(json_depth_limit(8)) in str(error.value)


@st.composite
def filters(draw, levels: int):
    """A filter of at most ``levels`` levels of must/should/must_not (counted as the shape check counts them), with
    the deepest conditions Qdrant has (geo polygons, nested filters, min_should)."""
    if levels <= 1 or draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from([
            {"key": "a", "match": {"any": ["x", "y"]}},
            {"key": "geo", "geo_polygon": {"exterior": {"points": [{"lon": 1, "lat": 2}] * 4},
                                           "interiors": [{"points": [{"lon": 1, "lat": 2}] * 4}]}},
            {"has_id": [1, 2]}, {"is_empty": {"key": "a"}},
        ]))
    kind = draw(st.sampled_from(["must", "should", "must_not", "nested", "min_should", "must object"]))
    if kind == "nested" and levels >= 3:
        return {"nested": {"key": "n", "filter": {"must": [draw(filters(levels - 2))]}}}
    inner = [draw(filters(levels - 1)) for _ in range(draw(st.integers(1, 2)))]
    if kind == "min_should":
        return {"min_should": {"conditions": inner, "min_count": 1}}
    if kind == "must object":
        return {"must": inner[0]}
    return {kind if kind != "nested" else "must": inner}


@given(st.integers(2, 12).flatmap(lambda levels: st.tuples(st.just(levels), filters(levels - 1))))
@settings(max_examples=60, deadline=None)
def test_no_filter_within_the_level_bound_is_refused_for_its_json_depth(case):
    levels, inner = case
    spec = {"must": [inner]}  # a filter at the top, a condition or a filter inside
    check_filter_shape(spec, "filter", levels, None)  # within the bound, as the shape check counts
    assert json_depth(spec) == json_depth_oracle(spec) <= json_depth_limit(levels)
    compile_filter(None, spec, origin="filter", max_depth=levels)  # not refused


@given(st.recursive(st.none() | st.integers() | st.text(max_size=3),
                    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=2), children,
                                                                                       max_size=3),
                    max_leaves=40))
@settings(max_examples=100, deadline=None)
def test_json_depth_is_the_plain_recursive_depth(value):
    depth = json_depth_oracle(value)
    assert json_depth(value) == depth and json.loads(as_text(value)) == value
    for stop in range(5):  # with a stop, the walk may end early, but only once it is past the stop
        assert (json_depth(value, stop=stop) > stop) == (depth > stop)
