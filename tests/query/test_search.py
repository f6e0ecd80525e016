"""The where language compiles to the Qdrant filter a person would write by hand."""
from __future__ import annotations

import pytest

from mmindex.errors import FilterError
from mmindex.pipeline.query.filters import combine_filters, load_raw_filter
from mmindex.pipeline.query.where import parse_where


@pytest.mark.parametrize(
    "expression, expected",
    [
        ("year >= 2020", {"must": [{"key": "year", "range": {"gte": 2020}}]}),
        ("year > 2020", {"must": [{"key": "year", "range": {"gt": 2020}}]}),
        ("year < 2020", {"must": [{"key": "year", "range": {"lt": 2020}}]}),
        ("year <= 2020", {"must": [{"key": "year", "range": {"lte": 2020}}]}),
        ("color = 'red'", {"must": [{"key": "color", "match": {"value": "red"}}]}),
        ("color == red", {"must": [{"key": "color", "match": {"value": "red"}}]}),
        ("year = 2020", {"must": [{"key": "year", "match": {"value": 2020}}]}),
        ("flag = true", {"must": [{"key": "flag", "match": {"value": True}}]}),
        ("score = 0.5", {"must": [{"key": "score", "range": {"gte": 0.5, "lte": 0.5}}]}),
        ("color != \"red\"", {"must_not": [{"key": "color", "match": {"value": "red"}}]}),
        ("color in ('red', 'blue')", {"must": [{"key": "color", "match": {"any": ["red", "blue"]}}]}),
        # "matches none of" (never Qdrant's `except`, which lets a list with one other element through)
        ("year not in (2019, 2020)", {"must_not": [{"key": "year", "match": {"any": [2019, 2020]}}]}),
        ("created >= '2021-06-01'", {"must": [{"key": "created", "range": {"gte": "2021-06-01T00:00:00Z"}}]}),
        ("meta.lang = en", {"must": [{"key": "meta.lang", "match": {"value": "en"}}]}),
    ],
)
def test_each_operator(expression, expected):
    assert parse_where(expression) == expected


def test_and_joins_conditions_and_or_groups_them():
    assert parse_where("year >= 2020 AND color != 'red' and shape = star") == {
        "must": [{"key": "year", "range": {"gte": 2020}}, {"key": "shape", "match": {"value": "star"}}],
        "must_not": [{"key": "color", "match": {"value": "red"}}],
    }
    assert parse_where("a = 1 or b = 2 and c = 3") == {
        "should": [
            {"key": "a", "match": {"value": 1}},
            {"must": [{"key": "b", "match": {"value": 2}}, {"key": "c", "match": {"value": 3}}]},
        ]
    }


def test_datetime_fields_use_ranges_for_equality():
    got = parse_where("created = '2021-01-02'", {"created": "datetime"})
    assert got == {"must": [{"key": "created", "range": {"gte": "2021-01-02T00:00:00Z", "lte": "2021-01-02T00:00:00Z"}}]}


@pytest.mark.parametrize(
    "expression, message",
    [
        ("year >=", "ends too early"),
        ("year 2020", "operator"),
        ("year >= 2020 color = red", "expected 'and' or 'or'"),
        ("color < 'red'", "ranges take numbers or dates"),
        ("flag > true", "no order"),
        ("x in 1, 2", "a list like"),
        ("year >= 2020 and", "ends too early"),
        ("year ~ 3", "cannot read"),
    ],
)
def test_malformed_expressions_say_what_is_wrong(expression, message):
    with pytest.raises(FilterError, match=message):
        parse_where(expression)


def test_empty_where_is_no_filter_and_filters_combine():
    assert parse_where("  ") is None
    a, b = {"must": [{"key": "a", "match": {"value": 1}}]}, {"must": [{"key": "b", "match": {"value": 2}}]}
    assert combine_filters(a, None) == a
    assert combine_filters(a, b) == {"must": [a, b]}


def test_filter_json_must_be_an_object():
    assert load_raw_filter('{"must": []}') == {"must": []}
    with pytest.raises(FilterError, match="not valid JSON"):
        load_raw_filter("{must")
    with pytest.raises(FilterError, match="JSON object"):
        load_raw_filter("[1]")
