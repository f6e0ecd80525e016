"""Every `--where` operator, and a malformed raw filter, on every store."""
from __future__ import annotations

import pytest

from mmindex.connectors.base import SearchRequest
from mmindex.errors import FilterError
from mmindex.pipeline.query.where import parse_where
from helpers.congruence import SPEC, points, vector


@pytest.mark.parametrize(
    "where, keep",
    [
        ("year >= 2020", lambda p: p["year"] >= 2020),
        ("year > 2020", lambda p: p["year"] > 2020),
        ("year < 2018", lambda p: p["year"] < 2018),
        ("year <= 2018", lambda p: p["year"] <= 2018),
        ("year = 2019", lambda p: p["year"] == 2019),
        ("color = 'red'", lambda p: p["color"] == "red"),
        ("color != 'red'", lambda p: p["color"] != "red"),
        ("color in ('red', 'blue')", lambda p: p["color"] in ("red", "blue")),
        ("color not in ('red', 'blue')", lambda p: p["color"] not in ("red", "blue")),
        ("year in (2015, 2016)", lambda p: p["year"] in (2015, 2016)),
        ("tags = 'green'", lambda p: "green" in p["tags"]),
        ("created >= '2015-01-01'", lambda p: p["created"] >= "2015"),
        ("created < '2013-01-01T00:00:00Z'", lambda p: p["created"] < "2013"),
        ("year >= 2017 and color != 'green' and year < 2023", lambda p: 2017 <= p["year"] < 2023 and p["color"] != "green"),
        ("color = 'red' or year = 2016", lambda p: p["color"] == "red" or p["year"] == 2016),
    ],
)
def test_every_where_operator_filters_correctly(make_store, where, keep):
    store = make_store()
    store.ensure_collection(SPEC)
    data = points(40)
    store.upsert(data)
    expected = {p.id for p in data if keep(p.payload)}
    assert expected and len(expected) < len(data)  # the case really filters
    hits = store.search(SearchRequest(vector=vector(5), using="image", filter=parse_where(where, SPEC.payload_types),
                                      limit=100))
    assert {h.id for h in hits} == expected
    assert store.count(parse_where(where, SPEC.payload_types)) == len(expected)


def test_malformed_raw_filter_is_a_filter_error(make_store):
    store = make_store()
    store.ensure_collection(SPEC)
    store.upsert(points(4))
    with pytest.raises(FilterError):
        store.search(SearchRequest(vector=vector(1), filter={"must": [{"key": "year", "range": {"between": 1}}]}))
