"""One compile path for filters (pipeline/query/filters.py): search, delete and the HTTP service select the same
points for the same where + raw filter, and that set is the plain-Python oracle's over the source rows."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.errors import FilterError, InputError
from mmindex.pipeline.collection.delete import delete, select_points
from mmindex.pipeline.ingest.run import ingest
from mmindex.pipeline.ingest.source import open_source
from mmindex.pipeline.query.filters import combine_filters, compile_filter, load_raw_filter, matches_everything
from mmindex.pipeline.query.search import search
from mmindex.pipeline.serve.checks import filter_of
from mmindex.pipeline.serve.settings import Limits


@pytest.fixture(scope="module")
def collection(tmp_path_factory, sample_dir, encoder):
    store = QdrantEdgeStore("f", data_dir=tmp_path_factory.mktemp("filters"))
    summary = ingest([str(sample_dir)], store, encoder)
    assert summary.upserted == 60
    rows = [row for batch in open_source([str(sample_dir)]).batches(1000) for row in batch.batch.to_pylist()]
    yield store, rows, encoder.encode_texts(["x"])[0]
    store.close()


def by_search(store, vector, where=None, raw=None):
    return {hit.id for hit in search(store, vector, where=where, filter_json=load_raw_filter(raw), limit=1000,
                                     exact=True)}


def by_delete(store, where=None, raw=None):
    return set(select_points(store, where=where, filter_json=load_raw_filter(raw)).ids)


def by_serve(store, value):
    compiled = filter_of(store, value, Limits())
    points, ids, offset = [], set(), None
    while True:
        points, offset = store.scroll(compiled, limit=256, offset=offset, with_payload=False)
        ids.update(p.id for p in points)
        if offset is None:
            return ids


def payload_ids(store, keep):
    """The points whose payload the plain-Python predicate ``keep`` accepts: the oracle."""
    found, offset = set(), None
    while True:
        points, offset = store.scroll(None, limit=256, offset=offset, with_payload=True)
        found.update(p.id for p in points if keep(p.payload))
        if offset is None:
            return found


COLORS = ["red", "green", "blue", "yellow", "purple", "orange"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(year=st.integers(2015, 2025), colors=st.lists(st.sampled_from(COLORS), min_size=1, max_size=3, unique=True),
       negate=st.booleans())
def test_search_delete_and_serve_select_what_the_oracle_selects(collection, year, colors, negate):
    store, _, vector = collection
    listed = ", ".join(f"'{c}'" for c in colors)
    where = f"year >= {year} and {'not ' if negate else ''}(color in ({listed}))"

    def keep(payload):
        inside = payload.get("color") in colors
        return payload.get("year") is not None and payload["year"] >= year and (not inside if negate else inside)

    expected = payload_ids(store, keep)
    assert by_search(store, vector, where=where) == expected
    assert by_delete(store, where=where) == expected
    assert by_serve(store, where) == expected


def test_where_and_a_raw_filter_are_anded_the_same_everywhere(collection):
    store, _, vector = collection
    raw = json.dumps({"must": [{"key": "shape", "match": {"value": "circle"}}]})
    expected = payload_ids(store, lambda p: p.get("year", 0) >= 2020 and p.get("shape") == "circle")
    assert expected, "the sample should hold circles from 2020 on"
    assert by_search(store, vector, "year >= 2020", raw) == expected
    assert by_delete(store, "year >= 2020", raw) == expected
    both = compile_filter("year >= 2020", raw, field_types=store.spec().payload_types)
    assert both == {"must": [compile_filter("year >= 2020", field_types=store.spec().payload_types),
                             json.loads(raw)]}


@pytest.mark.parametrize("raw, origin, message", [
    ("{must", "--filter-json", "--filter-json is not valid JSON"),
    ("[1]", "--filter-json", "must be a JSON object"),
    ('{"must": [{"key": "year", "range": {"gte": NaN}}]}', "filter", "filter"),
])
def test_a_bad_raw_filter_is_refused_naming_where_it_came_from(raw, origin, message):
    with pytest.raises(FilterError, match=message):
        compile_filter(raw=raw, origin=origin)


def test_shape_bounds_apply_to_where_and_raw_alike():
    deep = "year = 1" + " or (year = 2" * 10 + ")" * 10
    with pytest.raises(FilterError):
        compile_filter(deep, max_depth=4, max_conditions=64)
    many = {"should": [{"key": "year", "match": {"value": i}} for i in range(100)]}
    with pytest.raises(FilterError):
        compile_filter(raw=many, max_depth=8, max_conditions=64)
    assert compile_filter(raw=many) == many  # unbounded without limits


def test_nothing_given_is_no_filter():
    assert compile_filter() is None and compile_filter("  ", "  ") is None and compile_filter(raw={}) is None
    assert combine_filters(None, {}, None) is None


LEAF = {"key": "year", "match": {"value": -1}}  # a condition no point meets


def filters(depth: int = 3, top: bool = True):
    """Qdrant filters built from empty clauses, nested filters and (sometimes) a condition; a nested filter has at
    least one clause (the engine reads a bare {} inside a clause as no condition at all, and refuses it)."""
    leaf = st.just(LEAF)
    if depth == 0:
        return leaf
    inner = st.one_of(filters(depth - 1, top=False), leaf)
    clause = st.one_of(st.just([]), st.lists(inner, min_size=1, max_size=2))
    return st.dictionaries(st.sampled_from(["must", "should", "must_not"]), clause, min_size=0 if top else 1,
                           max_size=3)


def has_leaf(spec) -> bool:
    return spec == LEAF or (isinstance(spec, dict) and any(has_leaf(p) for c in spec.values() for p in c))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=filters())
def test_matches_everything_agrees_with_the_engine(collection, spec):
    """Differential, against Qdrant Edge itself: a filter said to match everything does (sound); one without any
    condition matches everything exactly when it is said to (exact)."""
    store, _, _ = collection
    everything = store.count(spec) == store.count(None)
    if matches_everything(spec):
        assert everything
    if not has_leaf(spec):
        assert matches_everything(spec) == everything


@pytest.mark.parametrize("raw", ["{}", " {} ", {}, '{"must": []}', {"must": None}, '{"should": []}',
                                 {"must": [{"should": []}]}, {"must_not": [{"must_not": [{"must": []}]}]}])
def test_delete_refuses_a_filter_without_a_condition_in_any_spelling(collection, raw):
    store, _, _ = collection
    with pytest.raises(InputError, match="no condition, so it matches every point"):
        select_points(store, filter_json=raw)
    with pytest.raises(InputError, match="no condition"):
        delete(store, filter_json=raw)
    assert store.count(None) == 60
