"""The typed --where language and raw filters: each listed case, then the whole kind.

The differential test builds tables with hypothesis (mixed types, nulls, NaN, lists,
timestamps, keyword digits, odd key names, two files whose schemas drift, and nested values: lists
of every kind, lists of lists, structs, lists of structs, maps, with float32/float16, decimals,
timestamps, dictionaries and binaries inside), ingests them for real into both stores (Qdrant
Edge and qdrant-client's ``:memory:``), and checks that every generated where-expression
returns exactly the rows a plain-Python evaluation of the same expression picks.
"""
from __future__ import annotations

import datetime as dt
import decimal
import io
import math
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mmindex import FilterError, IngestOptions, MmindexError, ingest, search
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.qdrant_server import QdrantServerStore
from mmindex.pipeline.query.where import parse_where, validate_filter
from tests.helpers.where_trees import boolean_trees

TYPES = {"year": "float", "zip": "keyword", "n": "integer", "color": "keyword", "tags": "keyword", "ok": "bool",
         "created": "datetime", "exif.make": "keyword", "shot on": "integer", "名前": "keyword",
         "meta": "struct<y: double, s: string>", '"meta".y': "float", '"meta".s': "keyword",
         "nested": "list<item: list<item: string>>", "items": "list<item: struct<price: double>>"}


# -- the listed cases, compiled --------------------------------------------------------------
@pytest.mark.parametrize("expression, expected", [
    # A float column (pandas: an integer column with a null) compared with integers.
    ("year in (2020, 2021)", {"should": [{"key": "year", "range": {"gte": 2020.0, "lte": 2020.0}},
                                         {"key": "year", "range": {"gte": 2021.0, "lte": 2021.0}}]}),
    ("year = 2020", {"must": [{"key": "year", "range": {"gte": 2020.0, "lte": 2020.0}}]}),
    # Digits on a keyword field are text.
    ("zip = 10001", {"must": [{"key": "zip", "match": {"value": "10001"}}]}),
    ("zip != 010001", {"must_not": [{"key": "zip", "match": {"value": "010001"}}]}),
    # A quoted number on an integer field is a number.
    ("n = '2020'", {"must": [{"key": "n", "match": {"value": 2020}}]}),
    # `not in` is "matches none of", like `!=`.
    ("color not in (red)", {"must_not": [{"key": "color", "match": {"value": "red"}}]}),
    ("tags not in (cat, dog)", {"must_not": [{"key": "tags", "match": {"any": ["cat", "dog"]}}]}),
    # Escapes: only \' \" \\ ; non-ASCII text stays as it is.
    (r"color = 'l\'été'", {"must": [{"key": "color", "match": {"value": "l'été"}}]}),
    (r"color = 'C:\path\\x'", {"must": [{"key": "color", "match": {"value": "C:\\path\\x"}}]}),
    # Field names: a dotted name that is a top-level key, backticks, another script.
    ("exif.make = Canon", {"must": [{"key": '"exif.make"', "match": {"value": "Canon"}}]}),
    ("`shot on` >= 3", {"must": [{"key": '"shot on"', "range": {"gte": 3}}]}),
    ("名前 = 'ネコ'", {"must": [{"key": "名前", "match": {"value": "ネコ"}}]}),
    ("_source.file = 'a.parquet'", {"must": [{"key": "_source.file", "match": {"value": "a.parquet"}}]}),
    ("_source.row = '3'", {"must": [{"key": "_source.row", "match": {"value": 3}}]}),
    # Fields inside a struct column are typed like columns.
    ("meta.y = 2020", {"must": [{"key": "meta.y", "range": {"gte": 2020.0, "lte": 2020.0}}]}),
    ("meta.s = 10001", {"must": [{"key": "meta.s", "match": {"value": "10001"}}]}),
    # Dates, quoted or bare, as moments in UTC.
    ("created >= 2021-06-01", {"must": [{"key": "created", "range": {"gte": "2021-06-01T00:00:00Z"}}]}),
    ("created < '2021-06-01 12:00+02:00'", {"must": [{"key": "created", "range": {"lt": "2021-06-01T10:00:00Z"}}]}),
    ("ok = TRUE", {"must": [{"key": "ok", "match": {"value": True}}]}),
    ("color is null", {"must": [{"is_empty": {"key": "color"}}]}),
    ("color is not null", {"must_not": [{"is_empty": {"key": "color"}}]}),
    ("not (n > 1 or color = red) and zip = 1", {
        "must": [{"key": "zip", "match": {"value": "1"}}],
        "must_not": [{"should": [{"key": "n", "range": {"gt": 1}}, {"key": "color", "match": {"value": "red"}}]}]}),
])
def test_listed_cases_compile_for_the_field_type(expression, expected):
    assert parse_where(expression, TYPES) == expected


@pytest.mark.parametrize("expression, message", [
    ("color > red", "color is a keyword field: it has no order for >"),
    ("ok < true", "ok is a true/false field"),
    ("n = 2020.5", "n holds integers: 2020.5 is never equal to one"),
    ("n = abc", "n holds integers: abc is not one"),
    ("year = 'x'", "year holds numbers"),
    ("created >= 2021", "quote one, e.g. created >= '2021-06-01'"),
    ("created = '2021-13-45'", "is not a date"),
    ("colour = red", "unknown field colour"),
    ("n > 4611686018427387904", "a range bound past 2**53 is not compared exactly"),
    ("meta.q = 1", "unknown field meta.q in: meta.q = 1 (fields of meta: s, y)"),
    ("meta = x", "meta holds struct<y: double, s: string>, which filters cannot compare as a whole"),
    ("nested = a", "nested holds list<item: list<item: string>>, which filters cannot compare"),
    ("items.price = 5", "--where cannot type fields inside a list of structs; use --filter-json"),
    ("exif.model = x", "unknown field `exif.model`"),
    ("color = null", "write color is null"),
    ("`shot on = 3", "close the quote"),
    ("color = 'red", "close the quote"),
    ("color in ()", "empty list"),
    ("(color = red", "')' to close '('"),
    ("color = red and", "expression ends too early"),
    ("color red", "expected an operator"),
])
def test_mistakes_are_one_line_errors_that_say_what_to_write(expression, message):
    with pytest.raises(FilterError) as caught:
        parse_where(expression, TYPES)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@given(st.text(max_size=40))
@settings(max_examples=300, deadline=None)
def test_any_text_compiles_or_fails_with_the_projects_error(text):
    try:
        compiled = parse_where(text, TYPES)
    except FilterError:
        return
    assert compiled is None or isinstance(compiled, dict)
    if compiled is not None:
        validate_filter(compiled, "where")  # what the language makes, Qdrant's schema accepts


# -- raw filters -------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, message", [
    ({"must": [{"key": "year", "match": {"value": 2020.5}}]}, "must[0].match.value is 2020.5"),
    ({"must": [{"key": "year", "range": {"gte": "soon"}}]}, "must[0].range.gte: Input should be a valid datetime"),
    ({"must": [{"key": "year", "match": {"value": None}}]}, "match takes strings, integers or true/false"),
    ({"must": [{"key": "year", "range": {"gte": float("nan")}}]}, "gte is nan, which matches nothing"),
    ({"must": [{"key": "year", "range": {"lt": float("inf")}}]}, "lt is inf"),
    ({"must": [{"kee": "year"}]}, "must[0]"),
    ({"musts": []}, "unknown clause 'musts'"),
    ({"must": [{"has_id": ["not-a-uuid"]}]}, "not a point id"),
    ({"must": [{"has_id": [-1]}]}, "not a point id"),
    ({"must": [{"key": "", "match": {"value": 1}}]}, "is not a payload key Qdrant can address"),
    ({"must": [{"key": "a..b", "match": {"value": 1}}]}, "is not a payload key Qdrant can address"),
    ({"must": [{"key": "n", "values_count": {"gt": -1}}]}, "values_count.gt is -1; it counts"),
    ({"min_should": {"conditions": [], "min_count": -1}}, "min_should.min_count is -1"),
    ({"must": [{"has_id": [2**64]}]}, "not a point id"),
    ({"must": [{"key": "n", "range": {"gte": True}}]}, "range.gte is true; a range takes numbers or dates"),
    ({"must": [{"key": "n", "match": {"value": 10**20}}]}, "beyond 64-bit integers"),
    ({"must": [{"key": "n", "match": {"any": [1, -10**20]}}]}, "beyond 64-bit integers"),
    ({"must": [{"key": "n", "range": {"gt": 2**62}}]}, "range bounds past 2**53 are not compared exactly"),
    ([1], "must be a JSON object"),
    ({"must": "year"}, "must"),
])
def test_raw_filters_are_checked_against_qdrants_schema(spec, message):
    with pytest.raises(FilterError) as caught:
        validate_filter(spec)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_valid_raw_filters_pass_unchanged_in_meaning():
    point = "5c56c793-69f3-4fbf-87e6-c4bf54c28c26"
    spec = {"must": [{"key": "year", "range": {"gte": 2020}}, {"has_id": [point, 7]}],
            "must_not": [{"key": "color", "match": {"any": ["red", "blue"]}}]}
    checked = validate_filter(spec)
    assert checked["must"][0] == {"key": "year", "range": {"gte": 2020.0}}
    assert checked["must"][1] == {"has_id": [point, 7]}
    assert checked["must_not"] == [{"key": "color", "match": {"any": ["red", "blue"]}}]


# -- the whole kind: hypothesis tables × expressions, both stores, a plain-Python oracle ---------
KEYWORDS = ["10001", "010001", "red", "Red", "l'été", "", "a b"]
INTEGERS = [-2, 0, 1, 3, 2020]
FLOATS = [-1.5, 0.0, 2.0, 2020.0, 2020.5]
MOMENTS = [dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2021, 6, 1, 12, tzinfo=dt.timezone.utc),
           dt.datetime(2021, 6, 1, tzinfo=dt.timezone.utc), dt.datetime(1999, 12, 31, 23, 59, tzinfo=dt.timezone.utc)]
TAGS = ["cat", "dog", "bird"]
# name → (Arrow type, recorded type, values a cell may hold)
COLUMNS = {
    "n": (pa.int64(), "integer", st.one_of(st.none(), st.sampled_from(INTEGERS))),
    "year": (pa.float64(), "float", st.one_of(st.none(), st.just(math.nan), st.sampled_from(FLOATS))),
    "zip": (pa.string(), "keyword", st.one_of(st.none(), st.sampled_from(KEYWORDS))),
    "ok": (pa.bool_(), "bool", st.one_of(st.none(), st.booleans())),
    "created": (pa.timestamp("us", tz="UTC"), "datetime", st.one_of(st.none(), st.sampled_from(MOMENTS))),
    "tags": (pa.list_(pa.string()), "keyword",
             st.one_of(st.none(), st.lists(st.sampled_from(TAGS + [None]), max_size=3, unique=True))),
    "exif.make": (pa.string(), "keyword", st.one_of(st.none(), st.sampled_from(["Canon", "Nikon"]))),
    "shot on": (pa.int32(), "integer", st.one_of(st.none(), st.sampled_from([1, 2, 3]))),
    "名前": (pa.string(), "keyword", st.one_of(st.none(), st.sampled_from(["ネコ", "犬"]))),
    # A struct column (Hugging Face datasets write them): its fields are filtered as meta.y, meta.s.
    "meta": (pa.struct([("y", pa.float64()), ("s", pa.string())]), "struct",
             st.one_of(st.none(), st.fixed_dictionaries({"y": st.one_of(st.none(), st.sampled_from(FLOATS)),
                                                          "s": st.one_of(st.none(), st.sampled_from(KEYWORDS))}))),
}
NARROW = [0.1, 0.3, -1.5, 2.0]  # written as float32/float16; stored as these decimals at every depth
DECIMALS = [decimal.Decimal("1.25"), decimal.Decimal("-3.50"), decimal.Decimal("2020.00")]
PATHS = ["a.jpg", "b.jpg"]


def maybe(values):
    return st.one_of(st.none(), values)


# Nested columns: every rule (float rendering, typing, binary left out, `is null`) at every depth.
NESTED = {
    "l32": (pa.list_(pa.float32()), maybe(st.lists(maybe(st.sampled_from(NARROW)), max_size=3))),
    "ll": (pa.list_(pa.list_(pa.float16())),
           maybe(st.lists(maybe(st.lists(maybe(st.sampled_from(NARROW)), max_size=2)), max_size=2))),
    "fl": (pa.list_(pa.int32(), 2), maybe(st.lists(maybe(st.sampled_from(INTEGERS)), min_size=2, max_size=2))),
    "s": (pa.struct([("score", pa.float32()), ("tags", pa.large_list(pa.string())), ("at", pa.timestamp("ms", tz="UTC")),
                     ("n", pa.int16()), ("dec", pa.decimal128(6, 2)), ("kind", pa.dictionary(pa.int8(), pa.string())),
                     ("raw", pa.binary())]),
          maybe(st.fixed_dictionaries({
              "score": maybe(st.sampled_from(NARROW)), "tags": maybe(st.lists(maybe(st.sampled_from(TAGS)), max_size=2)),
              "at": maybe(st.sampled_from(MOMENTS)), "n": maybe(st.sampled_from(INTEGERS)),
              "dec": maybe(st.sampled_from(DECIMALS)), "kind": maybe(st.sampled_from(TAGS)),
              "raw": maybe(st.just(b"\x00bytes"))}))),
    "items": (pa.list_(pa.struct([("price", pa.float16()), ("tag", pa.string()), ("at", pa.timestamp("us", tz="UTC"))])),
              maybe(st.lists(maybe(st.fixed_dictionaries({"price": maybe(st.sampled_from(NARROW)),
                                                          "tag": maybe(st.sampled_from(TAGS)),
                                                          "at": maybe(st.sampled_from(MOMENTS))})), max_size=3))),
    "m": (pa.map_(pa.string(), pa.float32()),
          maybe(st.dictionaries(st.sampled_from(["k", "j"]), maybe(st.sampled_from(NARROW)), max_size=2))),
    # A `datasets` Sequence(Image()) column: the bytes are left out, the paths are filtered.
    "crops": (pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
              maybe(st.lists(st.fixed_dictionaries({"bytes": st.just(b"\xff\xd8crop"),
                                                    "path": maybe(st.sampled_from(PATHS))}), max_size=2))),
}
COLUMNS.update({name: (arrow_type, "nested", values) for name, (arrow_type, values) in NESTED.items()})
# Fields an expression can name: the columns, and the fields inside the structs, lists of structs and maps.
FIELDS = {**{name: kind for name, (_, kind, _) in COLUMNS.items() if kind not in ("struct", "nested")},
          "meta.y": "float", "meta.s": "keyword", "l32": "float", "ll": "float", "fl": "integer",
          "s.score": "float", "s.tags": "keyword", "s.at": "datetime", "s.n": "integer", "s.dec": "float",
          "s.kind": "keyword", "items.price": "float", "items.tag": "keyword", "items.at": "datetime",
          "m.k": "float", "crops.path": "keyword"}
POOLS = {"tags": TAGS + ["fish"], "s.tags": TAGS, "items.tag": TAGS, "s.kind": TAGS, "crops.path": PATHS + ["c.jpg"],
         "l32": NARROW + FLOATS, "ll": NARROW + FLOATS, "s.score": NARROW + FLOATS, "items.price": NARROW + FLOATS,
         "m.k": NARROW + FLOATS, "s.dec": [1.25, -3.5, 2020.0, 0.0]}


def _image_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


IMAGE = _image_bytes()


@st.composite
def tables(draw):
    rows = draw(st.integers(min_value=1, max_value=14))
    return [{name: draw(values) for name, (_, _, values) in COLUMNS.items()} for _ in range(rows)]


def spell_field(draw, name: str) -> str:
    if name == "shot on":
        return "`shot on`"
    if name.startswith("items.") or name.startswith("crops."):
        return draw(st.sampled_from([name, name.replace(".", "[].")]))  # lists are looked through, [] or not
    if "." in name and name != "exif.make":
        return name  # a path into the struct or map; backticks would name a top-level key
    return draw(st.sampled_from([name, f"`{name}`"]))


def spell(draw, kind: str, value) -> str:
    """A literal as a user might write it for a field of ``kind``."""
    if kind == "keyword":
        escaped = value.replace("\\", "\\\\").replace("'", "\\'")
        forms = [f"'{escaped}'"]
        if value and all(c.isalnum() for c in value) and value.lower() not in ("and", "or", "not", "in", "is",
                                                                                  "null", "true", "false"):
            forms.append(value)  # bare word or bare digits
        return draw(st.sampled_from(forms))
    if kind == "integer":
        return draw(st.sampled_from([str(value), f"'{value}'", f"{value}.0"]))
    if kind == "float":
        return draw(st.sampled_from([repr(float(value)), f"'{value}'"] + ([str(int(value))]
                                                                            if float(value).is_integer() else [])))
    if kind == "bool":
        return draw(st.sampled_from(["true", "TRUE", "'true'"] if value else ["false", "False"]))
    text = value.strftime("%Y-%m-%dT%H:%M:%SZ")
    return draw(st.sampled_from([f"'{text}'", text] + ([f"'{value.date().isoformat()}'", value.date().isoformat()]
                                                       if value.hour == value.minute == 0 else [])))


def literal_pool(kind: str):
    return {"keyword": KEYWORDS + TAGS + ["Canon", "ネコ", "犬"], "integer": INTEGERS + [1, 2],
            "float": FLOATS, "bool": [True, False], "datetime": MOMENTS}[kind]


@st.composite
def comparisons(draw):
    name = draw(st.sampled_from(sorted(FIELDS)))
    kind = FIELDS[name]
    ops = ["=", "!=", "in", "not in", "is null", "is not null"]
    if kind in ("integer", "float", "datetime"):
        ops += ["<", "<=", ">", ">="]
    op = draw(st.sampled_from(ops))
    field = spell_field(draw, name)
    pool = POOLS.get(name) or literal_pool(kind)
    if op in ("is null", "is not null"):
        return (name, op, None), f"{field} {op}"
    if op in ("in", "not in"):
        values = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3))
        return (name, op, values), f"{field} {op} ({', '.join(spell(draw, kind, v) for v in values)})"
    value = draw(st.sampled_from(pool))
    return (name, op, value), f"{field} {op} {spell(draw, kind, value)}"


expressions = boolean_trees(comparisons)


def cell_values(row: dict, name: str) -> list:
    """What a row holds in a field, as the oracle sees it: every value reached through lists, structs and maps;
    nulls and NaN hold nothing."""
    if name in COLUMNS:
        values = [row[name]]
    else:
        root, part = name.split(".", 1)
        values = [v.get(part) if isinstance(v, dict) else None for v in flatten([row[root]])]
    return [v for v in flatten(values) if v is not None and not (isinstance(v, float) and math.isnan(v))]


def flatten(values: list) -> list:
    return [leaf for value in values for leaf in (flatten(value) if isinstance(value, list) else [value])]


def oracle(tree, row: dict) -> bool:
    """Plain-Python meaning of an expression tree (see pipeline/query/where.py's rules)."""
    if tree[0] == "not":
        return not oracle(tree[1], row)
    if tree[0] == "and":
        return oracle(tree[1], row) and oracle(tree[2], row)
    if tree[0] == "or":
        return oracle(tree[1], row) or oracle(tree[2], row)
    name, op, value = tree
    values = cell_values(row, name)
    if op == "is null":
        return not values
    if op == "is not null":
        return bool(values)
    if op in ("=", "!="):
        found = any(v == value for v in values)
        return found if op == "=" else not found
    if op in ("in", "not in"):
        found = any(v in value for v in values)
        return found if op == "in" else not found
    compare = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
               ">=": lambda a, b: a >= b}[op]
    return any(compare(v, value) for v in values)


def write_table(rows: list[dict], folder: Path, drift: bool = False) -> Path:
    """One Parquet file, or with ``drift`` two whose schemas differ as real datasets' do.

    The second file holds `n` as numeric strings, `shot on` as int64, `l32` as list<double> and has no
    `exif.make` column; the dataset's types are the first file's (`l32` widens to list<double>), and its
    values must mean the same. `n` drifts only when the first file holds a value of it: a column with no value
    has no say in the dataset's type (docs/ingest-and-columns.md), so numeric text beside an all-null integer
    column is text, and `n < 2` on it is refused, not an integer comparison.
    """
    def table(part: list[dict], offset: int, drifted: bool, text_n: bool = True) -> pa.Table:
        columns = {"id": pa.array([f"row-{offset + i}" for i in range(len(part))]),
                   "image": pa.array([IMAGE] * len(part), pa.binary()),
                   "caption": pa.array(["a red square"] * len(part))}
        for name, (arrow_type, _, _) in COLUMNS.items():
            values = [row.get(name) for row in part]
            if drifted and name == "exif.make":
                continue
            if drifted and name == "n" and text_n:
                columns[name] = pa.array([None if v is None else str(v) for v in values], pa.string())
            elif drifted and name == "shot on":
                columns[name] = pa.array(values, pa.int64())
            elif drifted and name == "l32":  # list<double> in the dataset: float32 0.1 must stay 0.1
                columns[name] = pa.array(values, pa.list_(pa.float64()))
            else:
                columns[name] = pa.array(values, arrow_type)
        return pa.table(columns)

    if not drift or len(rows) < 2:
        pq.write_table(table(rows, 0, False), folder / "table.parquet")
        return folder / "table.parquet"
    half = len(rows) // 2
    (folder / "data").mkdir()
    pq.write_table(table(rows[:half], 0, False), folder / "data" / "part-0.parquet")
    text_n = any(row.get("n") is not None for row in rows[:half])
    pq.write_table(table(rows[half:], half, True, text_n), folder / "data" / "part-1.parquet")
    for row in rows[half:]:
        row["exif.make"] = None  # the second file has no such column
    return folder / "data"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@given(rows=tables(), trees=st.lists(expressions(), min_size=25, max_size=25), drift=st.booleans())
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_every_expression_returns_exactly_the_rows_python_picks(encoder, rows, trees, drift):
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        path = write_table(rows, folder, drift)
        stores = [QdrantEdgeStore("where", data_dir=folder / "edge"), QdrantServerStore("where", url=":memory:")]
        options = IngestOptions(rejects_path=None)
        try:
            for store in stores:
                summary = ingest([str(path)], store, encoder, options)
                assert summary.upserted == len(rows), summary.rejections
            vector = encoder.encode_texts(["a red square"])[0]
            for tree, text in trees:
                expected = {f"row-{i}" for i, row in enumerate(rows) if oracle(tree, row)}
                for store in stores:
                    hits = search(store, vector, where=text, exact=True, limit=len(rows) + 5)
                    got = {hit.payload["id"] for hit in hits}
                    assert got == expected, (type(store).__name__, text, parse_where(text, store.spec().payload_types))
        finally:
            for store in stores:
                store.close()


def test_listed_cases_against_both_stores(encoder, tmp_path):
    """The issue's cases, each with its expected rows, through real ingests."""
    rows = [
        {"n": 2020, "year": 2020.0, "zip": "10001", "ok": True, "created": MOMENTS[1], "tags": ["cat", "dog"],
         "exif.make": "Canon", "shot on": 1, "名前": "ネコ"},
        {"n": 2021, "year": None, "zip": "02139", "ok": False, "created": None, "tags": ["bird"],
         "exif.make": None, "shot on": 2, "名前": None},
        {"n": None, "year": 2021.0, "zip": None, "ok": None, "created": MOMENTS[0], "tags": None,
         "exif.make": "Nikon", "shot on": None, "名前": "犬"},
    ]
    path = write_table(rows, tmp_path)
    cases = {
        "year in (2020, 2021)": {0, 2}, "year not in (2020, 2021)": {1},
        "zip = 10001": {0}, "zip != 10001": {1, 2}, "n = '2020'": {0},
        "zip not in (10001)": {1, 2}, "tags not in (cat)": {1, 2}, "tags != cat": {1, 2},
        "exif.make = Canon": {0}, "`exif.make` != Canon": {1, 2}, "名前 = 'ネコ'": {0},
        "`shot on` >= 2": {1}, "created >= 2021-01-01": {0}, "created is null": {1},
        "ok = true or n = 2021": {0, 1},
    }
    for store in (QdrantEdgeStore("listed", data_dir=tmp_path / "edge"), QdrantServerStore("listed", url=":memory:")):
        try:
            ingest([str(path)], store, encoder, IngestOptions(rejects_path=None,
                                                             index_fields=["exif.make", "shot on", "名前", "ok"]))
            assert set(store.info().indexed_fields) == {"exif.make", "shot on", "名前", "ok"}
            vector = encoder.encode_texts(["x"])[0]
            for expression, expected in cases.items():
                got = {hit.payload["id"] for hit in search(store, vector, where=expression, exact=True, limit=10)}
                assert got == {f"row-{i}" for i in expected}, (type(store).__name__, expression)
        finally:
            store.close()


@pytest.mark.parametrize("raw", [
    '{"must": [{"key": "year", "match": {"value": 2020.5}}]}',
    '{"must": [{"key": "year", "range": {"gte": NaN}}]}',
    '{"musts": []}',
    '{"must": [{"has_id": ["x"]}]}',
    'null',
])
def test_bad_raw_filters_in_search_are_the_projects_error(encoder, tmp_path, raw):
    from mmindex.pipeline.query.filters import load_raw_filter

    store = QdrantEdgeStore("raw", data_dir=tmp_path)
    try:
        ingest([str(write_table([{name: None for name in COLUMNS}], tmp_path))], store, encoder,
               IngestOptions(rejects_path=None))
        with pytest.raises(MmindexError):
            search(store, encoder.encode_texts(["x"])[0], filter_json=load_raw_filter(raw))
    finally:
        store.close()


def test_integers_past_64_bits_match_as_the_strings_they_are_stored_as(encoder, tmp_path):
    """records.to_json_value keeps uint64 values past the signed range as decimal strings."""
    big = 2**64 - 1
    table = pa.table({"id": ["a", "b"], "image": pa.array([IMAGE] * 2, pa.binary()), "caption": ["x", "y"],
                      "u": pa.array([big, 5], pa.uint64())})
    pq.write_table(table, tmp_path / "big.parquet")
    for store in (QdrantEdgeStore("big", data_dir=tmp_path / "edge"), QdrantServerStore("big", url=":memory:")):
        try:
            ingest([str(tmp_path / "big.parquet")], store, encoder, IngestOptions(rejects_path=None))
            vector = encoder.encode_texts(["x"])[0]
            for where, expected in ((f"u = {big}", {"a"}), (f"u in (5, {big})", {"a", "b"}), ("u = 5", {"b"}),
                                    (f"u != {big}", {"b"})):
                got = {hit.payload["id"] for hit in search(store, vector, where=where, exact=True, limit=5)}
                assert got == expected, (type(store).__name__, where)
            with pytest.raises(FilterError, match="past 2\\*\\*53 is not compared exactly"):
                search(store, vector, where=f"u > {big}")
            with pytest.raises(FilterError, match="beyond 64-bit integers"):
                search(store, vector, filter_json={"must": [{"key": "u", "match": {"value": big}}]})
        finally:
            store.close()


# -- issue #23: rules that stopped at the top level, each listed case through real ingests --------------
def write_nested(folder: Path, **columns) -> Path:
    rows = len(next(iter(columns.values())))
    table = pa.table({"id": [f"row-{i}" for i in range(rows)], "image": pa.array([IMAGE] * rows, pa.binary()),
                      "caption": ["a red square"] * rows, **columns})
    pq.write_table(table, folder / "nested.parquet")
    return folder / "nested.parquet"


def both_stores(folder: Path, name: str):
    return [QdrantEdgeStore(name, data_dir=folder / "edge"), QdrantServerStore(name, url=":memory:")]


def found(store, encoder, where: str) -> set[str]:
    vector = encoder.encode_texts(["x"])[0]
    return {hit.payload["id"] for hit in search(store, vector, where=where, exact=True, limit=10)}


def test_float32_in_a_list_or_a_struct_is_found_by_the_decimal_written(encoder, tmp_path):
    path = write_nested(tmp_path, l=pa.array([[0.1, 0.7], [0.2]], pa.list_(pa.float32())),
                        s=pa.array([{"score": 0.1}, {"score": 0.3}], pa.struct([("score", pa.float32())])),
                        ll=pa.array([[[0.1]], [[None]]], pa.list_(pa.list_(pa.float16()))),
                        m=pa.array([{"k": 0.1}, {"k": None}], pa.map_(pa.string(), pa.float32())))
    for store in both_stores(tmp_path, "floats"):
        try:
            ingest([str(path)], store, encoder, IngestOptions(rejects_path=None))
            cases = {"l = 0.1": {"row-0"}, "s.score = 0.1": {"row-0"}, "s.score in (0.3)": {"row-1"},
                     "l >= 0.7": {"row-0"}, "ll = 0.1": {"row-0"}, "m.k = 0.1": {"row-0"},
                     "ll is null": {"row-1"}, "m.k is null": {"row-1"}}
            for where, expected in cases.items():
                assert found(store, encoder, where) == expected, (type(store).__name__, where)
            assert store.retrieve([hit.id for hit in search(store, encoder.encode_texts(["x"])[0], where="l = 0.1",
                                                            limit=1)])[0].payload["l"] == [0.1, 0.7]
        finally:
            store.close()


def test_image_bytes_nested_in_a_list_of_structs_are_left_out_and_the_row_is_stored(encoder, tmp_path):
    """A `datasets` Sequence(Image()) column: three 361 KB crops used to be base64 in the payload (over 1 MB)."""
    crop = pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    crops = [[{"bytes": bytes(361_000), "path": f"crops/{i}-{j}.jpg"} for j in range(3)] for i in range(2)]
    path = write_nested(tmp_path, crops=pa.array(crops, crop))
    for store in both_stores(tmp_path, "crops"):
        try:
            summary = ingest([str(path)], store, encoder, IngestOptions(rejects_path=None))
            assert (summary.upserted, summary.rejected) == (2, 0), summary.rejections
            assert any("crops[].bytes left out" in note for note in summary.notes)
            assert store.spec().payload_types["crops"] == "list<item: struct<path: string>>"
            assert found(store, encoder, "crops.path = 'crops/1-2.jpg'") == {"row-1"}
            point = store.scroll(limit=1)[0][0]
            assert point.payload["crops"][0].keys() == {"path"}
        finally:
            store.close()


def test_index_fields_takes_the_nested_fields_where_filters(encoder, tmp_path):
    path = write_nested(tmp_path, s=pa.array([{"score": 0.1}, None], pa.struct([("score", pa.float32())])),
                        items=pa.array([[{"price": 2.5}], []], pa.list_(pa.struct([("price", pa.float64())]))),
                        ll=pa.array([[[1.5]], None], pa.list_(pa.list_(pa.float16()))))
    wanted = {'"s".score': "float", '"items"[].price': "float", '"ll"[]': "float"}
    for store in both_stores(tmp_path, "indexed"):
        try:
            ingest([str(path)], store, encoder,
                   IngestOptions(rejects_path=None, index_fields=["s.score", "items.price", "ll"]))
            assert store.info().indexed_fields == wanted, type(store).__name__
            assert found(store, encoder, "s.score = 0.1 and items[].price < 3 and ll = 1.5") == {"row-0"}
            with pytest.raises(MmindexError, match="unknown field s.nope"):
                ingest([str(path)], store, encoder, IngestOptions(rejects_path=None, index_fields=["s.nope"]))
        finally:
            store.close()


def test_a_field_stored_as_lists_by_one_run_and_single_values_by_another_answers_is_null_right(encoder, tmp_path):
    """`is null` looks through a list field's elements ("tags"[]: [null] holds nothing), which a single value
    would answer wrongly: the collection keeps the element path only while every run stored lists."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    lists = write_nested(tmp_path / "a", tags=pa.array([["cat"], [None]], pa.list_(pa.string())))
    single = pa.table({"id": ["row-2", "row-3"], "image": pa.array([IMAGE] * 2, pa.binary()), "caption": ["x"] * 2,
                       "tags": pa.array(["dog", None])})
    pq.write_table(single, tmp_path / "b" / "single.parquet")
    for store in both_stores(tmp_path, "mixed"):
        try:
            ingest([str(lists)], store, encoder, IngestOptions(rejects_path=None, source_name="lists"))
            assert found(store, encoder, "tags is null") == {"row-1"}
            ingest([str(tmp_path / "b")], store, encoder, IngestOptions(rejects_path=None, source_name="single"))
            assert found(store, encoder, "tags is not null") >= {"row-0", "row-2"}
            assert found(store, encoder, "tags = dog or tags = cat") == {"row-0", "row-2"}
            assert "row-3" in found(store, encoder, "tags is null")
        finally:
            store.close()
