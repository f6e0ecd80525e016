"""Formula rescoring's two translations (connectors/edge_formula.py, connectors/server_formula.py): every expression
of Qdrant's formula JSON scores the same on Qdrant Edge and qdrant-client's ':memory:' as a hand computation; what
the engines do with missing and null fields (why the --boost compiler guards defaults itself); translation errors
as one-line FilterErrors; and a rescoring request through both stores."""
from __future__ import annotations

import datetime as dt
import math

import pytest

from helpers.congruence import SPEC, compare_store_results, points, vector
from helpers.rescoring import ENGINES, TwoEngines, close
from mmindex.connectors.base import SearchRequest
from mmindex.connectors.edge_formula import edge_formula
from mmindex.connectors.queries import Nearest, Prefetch, Rescore
from mmindex.connectors.server_formula import server_formula
from mmindex.errors import FilterError

UTC = dt.timezone.utc
DAY = 86400.0
NOW = dt.datetime(2024, 6, 1, tzinfo=UTC)
ROWS = [  # id → payload; ids 1…4, vectors along the axes so that the prefetch holds them all
    {"pop": 4, "rate": 0.5, "at": "2024-06-01T00:00:00Z", "meta": {"y": 2.0}, "dot.key": 1.0},
    {"pop": 9, "rate": None, "at": "2024-05-02T00:00:00Z", "meta": {"y": 3.0}, "dot.key": 2.0},
    {"pop": 1, "at": "2023-06-02T00:00:00Z", "meta": {"y": 4.0}, "dot.key": 3.0},
    {"pop": 16, "rate": 2.0, "at": "2024-05-25T00:00:00Z", "meta": {"y": 5.0}, "dot.key": 4.0},
]
QUERY = [1.0, 0.5, 0.25, 0.125]


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _rate(row: dict, default: float) -> float:
    return default if row.get("rate") is None else row["rate"]


# formula JSON → the score of a point, by hand (row, similarity)
CASES = [
    ("$score", lambda r, s: s),
    ({"sum": ["$score", {"mult": [0.5, "pop"]}]}, lambda r, s: s + 0.5 * r["pop"]),
    ({"neg": "pop"}, lambda r, s: -r["pop"]),
    ({"div": {"left": "pop", "right": {"sum": ["pop", -4.0]}, "by_zero_default": 7.0}},
     lambda r, s: 7.0 if r["pop"] == 4 else r["pop"] / (r["pop"] - 4)),
    ({"pow": {"base": "pop", "exponent": 0.5}}, lambda r, s: math.sqrt(r["pop"])),
    ({"sum": [{"sqrt": "pop"}, {"abs": {"neg": "pop"}}, {"exp": "$score"}, {"ln": "pop"}, {"log10": "pop"},
              {"acosh": {"sum": ["pop", 1.0]}}]},
     lambda r, s: (math.sqrt(r["pop"]) + r["pop"] + math.exp(s) + math.log(r["pop"]) + math.log10(r["pop"])
                   + math.acosh(r["pop"] + 1))),
    ({"max": ["pop", 5.0, "$score"]}, lambda r, s: max(r["pop"], 5.0, s)),
    ({"min": ["pop", 5.0]}, lambda r, s: min(r["pop"], 5.0)),
    ({"sum": ["meta.y", '"dot.key"']}, lambda r, s: r["meta"]["y"] + r["dot.key"]),
    ({"exp_decay": {"x": {"datetime_key": "at"}, "target": {"datetime": "2024-06-01T00:00:00Z"}, "scale": 30 * DAY,
                    "midpoint": 0.5}},
     lambda r, s: 0.5 ** (abs(_ts(r["at"]) - NOW.timestamp()) / (30 * DAY))),
    ({"gauss_decay": {"x": {"datetime_key": "at"}, "target": {"datetime": "2024-06-01T00:00:00Z"}, "scale": 30 * DAY}},
     lambda r, s: 0.5 ** (((_ts(r["at"]) - NOW.timestamp()) / (30 * DAY)) ** 2)),
    ({"lin_decay": {"x": "pop", "target": 5.0, "scale": 10.0, "midpoint": 0.2}},
     lambda r, s: max(0.0, 1 - 0.8 * abs(r["pop"] - 5) / 10)),
    ({"exp_decay": {"x": "$score"}}, lambda r, s: 0.5 ** abs(s)),
    ({"sum": [{"mult": [{"is_empty": {"key": "rate"}}, -1.0]},
              {"mult": [{"must_not": [{"is_empty": {"key": "rate"}}]}, "rate"]}]}, lambda r, s: _rate(r, -1.0)),
    ({"mult": [{"is_null": {"key": "rate"}}, 3.0]}, lambda r, s: 3.0 if "rate" in r and r["rate"] is None else 0.0),
    ({"sum": [{"should": [{"is_empty": {"key": "rate"}}, {"must": [{"is_null": {"key": "meta.z"}}]}]}, 0.25]},
     lambda r, s: 1.25 if "rate" not in r or r["rate"] is None else 0.25),
    ({"sum": ["$score", "rate"]}, lambda r, s: s + (r["rate"] if "rate" in r else 10.0)),  # defaults below
]
DEFAULTS = {len(CASES) - 1: {"rate": 10.0}}


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    both = TwoEngines(tmp_path_factory.mktemp("formula"), 4)
    axes = [[1.0 if j == i else 0.0 for j in range(4)] for i in range(4)]
    both.put([(i + 1, axes[i], row) for i, row in enumerate(ROWS)])
    yield both
    both.close()


@pytest.mark.parametrize("case", range(len(CASES)), ids=[str(c[0])[:50] for c in CASES])
def test_every_expression_scores_as_computed_by_hand_on_both_engines(engines, case):
    formula, by_hand = CASES[case]
    defaults = DEFAULTS.get(case, {})
    if case in DEFAULTS:  # the engines' own defaults: a null is not absent, so point 2 (rate: null) fails
        for engine in ENGINES:
            with pytest.raises(Exception):
                engines.rescore(engine, QUERY, formula, defaults)
        engines.put([(2, [0.0, 1.0, 0.0, 0.0], {k: v for k, v in ROWS[1].items() if k != "rate"})])
    try:
        for engine in ENGINES:
            similarity = engines.nearest(engine, QUERY)
            rows = {i + 1: row for i, row in enumerate(ROWS)}
            if case in DEFAULTS:
                rows[2] = {k: v for k, v in ROWS[1].items() if k != "rate"}
            expected = {point: by_hand(rows[point], similarity[point]) for point in rows}
            got = engines.rescore(engine, QUERY, formula, defaults)
            assert sorted(point for point, _ in got) == [1, 2, 3, 4], engine
            assert all(close(score, expected[point]) for point, score in got), (engine, got, expected)
            assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
    finally:
        engines.put([(2, [0.0, 1.0, 0.0, 0.0], ROWS[1])])


def test_a_field_missing_or_null_fails_the_query_on_both_engines(engines):
    """Why --boost guards each default with is_empty: neither engine scores a point whose field is null, even
    with a formula default, nor one where it is absent without a default."""
    for formula, defaults in (({"sum": ["$score", "rate"]}, {"rate": 0.0}), ({"sum": ["$score", "nowhere"]}, {}),
                              ({"datetime_key": "rate"}, {})):
        for engine in ENGINES:
            with pytest.raises(Exception):
                engines.rescore(engine, QUERY, formula, defaults)


@pytest.mark.parametrize("formula, message", [
    (True, "a formula has no value True"),
    (math.inf, "a formula constant must be finite, not inf"),
    ({"geo_distance": {"origin": {"lon": 0, "lat": 0}, "to": "at"}},
     "the embedded store cannot use the formula expression 'geo_distance'"),
    ({"key": "pop", "match": {"value": 1}}, "not a formula expression: {'key': 'pop', 'match': {'value': 1}}"),
    ({"must": [{"key": "pop", "match": {"value": 1}}]},
     "the embedded store's formulas take is_empty, is_null and must/should/must_not conditions, not key, match"),
])
def test_what_edge_cannot_take_is_one_line(formula, message):
    with pytest.raises(FilterError) as caught:
        edge_formula(formula)
    assert str(caught.value) == message


def test_what_the_client_schema_refuses_is_one_line():
    with pytest.raises(FilterError) as caught:
        server_formula({"sum": "pop"})
    assert str(caught.value).startswith("not a formula Qdrant takes: formula.") and "\n" not in str(caught.value)
    assert server_formula({"sum": ["$score", 1.0]}, {"rate": 1.0}).defaults == {"rate": 1.0}


def test_rescoring_through_both_stores_gives_the_same_hits(every_store):
    data = points(24)
    for index, point in enumerate(data):
        point.payload["pop"] = index % 5
    for store in every_store:
        store.ensure_collection(SPEC)
        store.upsert(data)
        store.finish()
    request = SearchRequest(limit=5, offset=2, query=Rescore({"sum": ["$score", {"mult": [0.1, "pop"]}]}, {}),
                            prefetch=(Prefetch(Nearest(vector(3), "image"), limit=20),),
                            filter={"must": [{"key": "year", "range": {"gte": 2016}}]})
    hits = compare_store_results(every_store, lambda store: store.search(request))
    assert len(hits) == 5 and all(h.payload["year"] >= 2016 for h in hits)
    image = {point.id: point.vectors["image"] for point in data}
    for hit in hits:  # the boost is in the score: similarity + 0.1 · pop
        assert close(hit.score, float(image[hit.id] @ vector(3)) + 0.1 * hit.payload["pop"])
