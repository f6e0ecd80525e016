"""Facets (pipeline/query/facets.py): each listed case, then the whole kind.

The differential test draws payloads with hypothesis (keywords, integers, bools, lists of keywords with repeats and
nulls, a struct, a list of structs, nulls and missing keys), writes them to both stores (Qdrant Edge and
qdrant-client's ``:memory:``), draws a ``--where`` filter and a field, and checks that ``facets`` answers exactly the
counts a plain-Python evaluation gives over the rows the same filter picks: the top ``limit`` values by count
(descending, then value ascending), and whether more values exist.
"""
from __future__ import annotations

import math
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmindex import Facet, FilterError, StoreError, UsageError, facets
from mmindex.connectors.base import CollectionSpec, PointRecord
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.qdrant_server import QdrantServerStore
from mmindex.pipeline.ingest.records import payload_types
from mmindex.pipeline.query.facets import FacetFieldError
from tests.helpers.where_trees import boolean_trees

SCHEMA = pa.schema([("color", pa.string()), ("n", pa.int64()), ("ok", pa.bool_()), ("tags", pa.list_(pa.string())),
                    ("s", pa.struct([("tag", pa.string())])), ("items", pa.list_(pa.struct([("tag", pa.string())]))),
                    ("x", pa.float64()), ("when", pa.timestamp("us", tz="UTC")), ("shot on", pa.int32()),
                    ("exif.make", pa.string()), ("empty", pa.null())])
TYPES = payload_types(SCHEMA, SCHEMA.names)  # what ingest records for these columns
KEYWORDS = ["red", "Red", "", "10001", "l'été", "a b"]
INTEGERS = [-3, 0, 1, 2, 2020]
TAGS = ["cat", "dog", "bird"]
MISSING = object()  # a key left out of the payload (a null is written as None)


def store_pair(folder: Path, name: str = "facets"):
    return [QdrantEdgeStore(name, data_dir=folder / "edge"), QdrantServerStore(name, url=":memory:")]


def write(stores, rows: list[dict], types: dict[str, str] = TYPES) -> None:
    """Each row as a point with random vectors; MISSING keys are left out of its payload."""
    rng = np.random.default_rng(0)
    points = [PointRecord(str(uuid.uuid5(uuid.NAMESPACE_URL, str(i))),
                          {"image": rng.random(4, dtype=np.float32), "text": rng.random(4, dtype=np.float32)},
                          {k: v for k, v in row.items() if v is not MISSING})
              for i, row in enumerate(rows)]
    for store in stores:
        store.ensure_collection(CollectionSpec("facet-test", 4, dict(types)))
        store.upsert(points)


def counted(facet: Facet) -> list[tuple]:
    return [(c.value, c.count) for c in facet.values]


@pytest.fixture
def stores(tmp_path):
    pair = store_pair(tmp_path)
    yield pair
    for store in pair:
        store.close()


# -- the listed cases ---------------------------------------------------------------------------------------------

def test_counts_under_a_filter_in_count_order_with_ties_by_value(stores):
    rows = [{"color": c, "n": i % 2} for i, c in enumerate(["red", "blue", "red", "green", "blue", "red", "amber"])]
    write(stores, rows)
    for store in stores:
        (everything,) = facets(store, "color")
        assert counted(everything) == [("red", 3), ("blue", 2), ("amber", 1), ("green", 1)]
        assert not everything.more
        (even,) = facets(store, ["color"], where="n = 0")  # rows 0, 2, 4, 6
        assert counted(even) == [("red", 2), ("amber", 1), ("blue", 1)]


def test_more_says_when_values_were_left_out_and_the_cut_keeps_the_smallest_tied_values(stores):
    write(stores, [{"color": c} for c in ["zeta", "eta", "beta", "alpha", "delta", "alpha"]])
    for store in stores:
        (top,) = facets(store, "color", limit=3)
        assert counted(top) == [("alpha", 2), ("beta", 1), ("delta", 1)] and top.more
        (exact_fit,) = facets(store, "color", limit=5)
        assert len(exact_fit.values) == 5 and not exact_fit.more


def test_each_list_element_counts_and_a_point_counts_once_per_value(stores):
    write(stores, [{"tags": ["cat", "cat", "dog"]}, {"tags": ["cat", None]}, {"tags": []}, {"tags": None}, {}])
    for store in stores:
        assert counted(facets(store, "tags")[0]) == [("cat", 2), ("dog", 1)]


def test_integers_bools_and_nested_fields_as_where_names_them(stores):
    rows = [{"n": 2, "ok": True, "s": {"tag": "x"}, "items": [{"tag": "p"}, {"tag": "q"}], "shot on": 1,
             "exif.make": "Canon"},
            {"n": 2, "ok": False, "s": {"tag": None}, "items": [{"tag": "p"}], "shot on": 1, "exif.make": "Nikon"},
            {"n": -3, "ok": True, "s": None, "items": None, "shot on": 2, "exif.make": "Canon"}]
    write(stores, rows)
    for store in stores:
        answers = facets(store, ["n", "ok", "s.tag", "items.tag", "items[].tag", "`shot on`", "exif.make"])
        assert [counted(a) for a in answers] == [[(2, 2), (-3, 1)], [(True, 2), (False, 1)], [("x", 1)],
                                                [("p", 2), ("q", 1)], [("p", 2), ("q", 1)], [(1, 2), (2, 1)],
                                                [("Canon", 2), ("Nikon", 1)]]
        assert [type(c.value) for a in answers[:2] for c in a.values] == [int, int, bool, bool]


def test_the_payload_index_is_created_once_and_recorded(stores):
    write(stores, [{"color": "red"}])
    for store in stores:
        assert "color" not in store.info().indexed_fields
        assert facets(store, "color")[0].index_created
        assert store.info().indexed_fields["color"] == "keyword"
        again = facets(store, "color")[0]
        assert not again.index_created and counted(again) == [("red", 1)]


def test_without_create_index_an_unindexed_field_is_refused(stores):
    write(stores, [{"color": "red"}])
    for store in stores:
        with pytest.raises(FacetFieldError, match="color has no payload index.*--index-fields color") as error:
            facets(store, "color", create_index=False)
        assert error.value.code == "unindexed_field"
        store.create_payload_index("color", "keyword")
        assert counted(facets(store, "color", create_index=False)[0]) == [("red", 1)]


def test_a_full_text_index_is_never_replaced(stores):
    write(stores, [{"color": "red"}])
    for store in stores:
        store.create_payload_index("color", "text")
        with pytest.raises(FacetFieldError, match="color has a text payload index") as error:
            facets(store, "color")
        assert error.value.code == "unfacetable_field"
        assert store.info().indexed_fields["color"] == "text"


def test_unknown_fields_name_the_fields_there_are(stores):
    write(stores, [{"color": "red"}])
    for store in stores:
        for name, shown in [("colour", "fields: _caption_truncated, caption, color, "), ("s.nope", "fields of s: tag")]:
            with pytest.raises(FacetFieldError, match=f"unknown field {name}") as error:
                facets(store, ["color", name])
            assert error.value.code == "unknown_field" and isinstance(error.value, UsageError)
            assert shown in error.value.message
            assert "fields facets can count: color, exif.make, items.tag, n, ok, s.tag, `shot on`, tags" in str(
                error.value)


@pytest.mark.parametrize("name, says", [
    ("x", "x holds float values: facets count the values of keyword, integer and bool fields only"),
    ("when", "when holds datetime values"),
    ("s", "s holds struct<tag: string>, which facets cannot count as a whole"),
    ("items", "items holds list<item: struct<tag: string>>, which facets cannot count as a whole"),
    ("_source", "_source holds objects: count a field inside them"),
    ("tags[0]", "does not pick list elements by position"),
])
def test_fields_whose_values_cannot_be_counted_are_refused_with_their_type(stores, name, says):
    write(stores, [{"color": "red"}])
    for store in stores:
        with pytest.raises(FacetFieldError, match="fields facets can count: color") as error:
            facets(store, name)
        assert error.value.code == "unfacetable_field" and says in error.value.message


def test_a_field_that_has_held_no_value_has_no_values(stores):
    write(stores, [{"color": "red", "empty": None}])
    for store in stores:
        (answer,) = facets(store, "empty")
        assert answer.values == [] and not answer.more and not answer.index_created


def test_where_and_filter_json_are_anded_and_checked_as_search_checks_them(stores):
    write(stores, [{"color": "red", "n": 1}, {"color": "red", "n": 2}, {"color": "blue", "n": 2}])
    raw = {"must": [{"key": "n", "match": {"value": 2}}]}
    for store in stores:
        assert counted(facets(store, "color", where="color = red", filter_json=raw)[0]) == [("red", 1)]
        assert counted(facets(store, "color", filter_json='{"must": [{"key": "n", "match": {"value": 2}}]}')[0]) == [
            ("blue", 1), ("red", 1)]
        with pytest.raises(FilterError, match="unknown field year"):
            facets(store, "color", where="year > 2")
        with pytest.raises(FilterError, match="not valid JSON"):
            facets(store, "color", filter_json="{nope")


@pytest.mark.parametrize("fields, limit, message", [
    ([], 20, "name at least one field"), ("color", 0, "limit must be a whole number of at least 1"),
    ("color", True, "limit must be"), ("color", 2.5, "limit must be"),
])
def test_bad_requests_are_usage_errors(stores, fields, limit, message):
    write(stores, [{"color": "red"}])
    with pytest.raises(UsageError, match=message):
        facets(stores[0], fields, limit=limit)


def test_a_missing_collection_is_a_store_error(tmp_path):
    for store in store_pair(tmp_path, "nothing-here"):
        with pytest.raises(StoreError, match="collection 'nothing-here' does not exist"):
            facets(store, "color")
        store.close()


# -- the whole kind: random payloads × random filters, both stores, a plain-Python oracle ----------------------------

def maybe(values):
    return st.one_of(st.just(MISSING), st.none(), values)


ROWS = st.fixed_dictionaries({
    "color": maybe(st.sampled_from(KEYWORDS)),
    "n": maybe(st.sampled_from(INTEGERS)),
    "ok": maybe(st.booleans()),
    "tags": maybe(st.lists(st.one_of(st.none(), st.sampled_from(TAGS)), max_size=4)),  # repeats allowed
    "s": maybe(st.fixed_dictionaries({"tag": st.one_of(st.none(), st.sampled_from(TAGS))})),
    "items": maybe(st.lists(st.fixed_dictionaries({"tag": st.one_of(st.none(), st.sampled_from(TAGS))}),
                            max_size=3)),
    "x": maybe(st.sampled_from([-1.5, 0.0, 2.0])),
})
# field → (its kind, the literals a comparison draws)
FIELDS = {"color": ("keyword", KEYWORDS), "n": ("integer", INTEGERS), "ok": ("bool", [True, False]),
          "tags": ("keyword", TAGS + ["fish"]), "s.tag": ("keyword", TAGS), "items.tag": ("keyword", TAGS),
          "x": ("float", [-1.5, 0.0, 2.0, 1.0])}
COUNTABLE = ["color", "n", "ok", "tags", "s.tag", "items.tag"]


def literal(kind: str, value) -> str:
    if kind == "keyword":
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if kind == "bool":
        return "true" if value else "false"
    return repr(value)


@st.composite
def comparisons(draw):
    name = draw(st.sampled_from(sorted(FIELDS)))
    kind, pool = FIELDS[name]
    ops = ["=", "!=", "in", "not in", "is null", "is not null"] + (["<", ">="] if kind in ("integer", "float") else [])
    op = draw(st.sampled_from(ops))
    if op.startswith("is"):
        return (name, op, None), f"{name} {op}"
    if op.endswith("in"):
        values = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3))
        return (name, op, values), f"{name} {op} ({', '.join(literal(kind, v) for v in values)})"
    value = draw(st.sampled_from(pool))
    return (name, op, value), f"{name} {op} {literal(kind, value)}"


expressions = boolean_trees(comparisons)


def cell_values(row: dict, name: str) -> list:
    """Every value a row holds in a field, through lists and structs; nulls and missing keys hold nothing."""
    root, _, part = name.partition(".")
    values = row.get(root, MISSING)
    values = [] if values is MISSING or values is None else values if isinstance(values, list) else [values]
    if part:
        values = [v.get(part) for v in values if isinstance(v, dict)]
    return [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def matches(tree, row: dict) -> bool:
    """The where language's meaning (docs/where-language.md, "Nulls and lists") in plain Python."""
    if tree[0] == "not":
        return not matches(tree[1], row)
    if tree[0] in ("and", "or"):
        both = (matches(tree[1], row), matches(tree[2], row))
        return all(both) if tree[0] == "and" else any(both)
    name, op, value = tree
    values = cell_values(row, name)
    if op in ("is null", "is not null"):
        return (not values) == (op == "is null")
    if op in ("=", "!="):
        return any(v == value for v in values) == (op == "=")
    if op in ("in", "not in"):
        return any(v in value for v in values) == (op == "in")
    return any(v < value if op == "<" else v >= value for v in values)


def expected_counts(rows: list[dict], tree, field: str, limit: int) -> tuple[list[tuple], bool]:
    """The top ``limit`` (value, points) of ``field`` over the rows ``tree`` picks, and whether more exist."""
    counts: dict = {}
    for row in rows:
        if tree is None or matches(tree, row):
            for value in set(cell_values(row, field)):
                counts[value] = counts.get(value, 0) + 1
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ordered[:limit], len(ordered) > limit


def check_against_python(rows: list[dict], asks: list[tuple]) -> None:
    """Write ``rows`` to both stores; each (expression or None, field, limit) of ``asks`` gets Python's answer."""
    with tempfile.TemporaryDirectory() as scratch:
        stores = store_pair(Path(scratch))
        try:
            write(stores, rows)
            for expression, field, limit in asks:
                tree, text = expression if expression else (None, None)
                values, more = expected_counts(rows, tree, field, limit)
                for store in stores:
                    (answer,) = facets(store, field, where=text, limit=limit)
                    assert (counted(answer), answer.more) == (values, more), (type(store).__name__, field, text)
        finally:
            for store in stores:
                store.close()


ASK = st.tuples(st.one_of(st.none(), expressions()), st.sampled_from(COUNTABLE), st.integers(1, 5))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@given(rows=st.lists(ROWS, min_size=1, max_size=16), asks=st.lists(ASK, min_size=6, max_size=6))
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_every_count_is_the_count_python_makes_over_the_rows_the_filter_picks(rows, asks):
    check_against_python(rows, asks)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@given(rows=st.lists(ROWS, min_size=1, max_size=40), asks=st.lists(ASK, min_size=10, max_size=10))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_every_count_is_python_s_over_many_more_tables(rows, asks):
    check_against_python(rows, asks)
