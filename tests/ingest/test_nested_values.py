"""Values below the top level follow the rules of their own type: each listed case, then the whole kind.

Issue #23 ("rules that stop at the top level"): a float32 in a list or struct was stored widened by its
bits (0.10000000149011612), so ``l = 0.1`` found nothing; image bytes nested in a ``Sequence(Image())``
column went into the payload as base64; ``--index-fields`` refused a struct field ``--where`` filters.
The property test builds random nested Arrow types (lists of every kind, structs, maps, dictionary
leaves, decimals, dates and timestamps, binaries) and checks each leaf against the same value in a
top-level column: the same JSON, the same recorded type, the same ``--where`` typing, ``is null``
looking through every level of lists, and binary left out below the top level.
"""
from __future__ import annotations

import datetime as dt
import decimal
import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmindex.errors import FilterError
from mmindex.pipeline.ingest.records import left_out_binary, payload_columns, payload_types
from mmindex.pipeline.ingest.schema import convert_array
from mmindex.pipeline.ingest.source import map_columns
from mmindex.pipeline.query.fields import resolve_field


def payload_of(arrow_type: pa.DataType, value, columns=("c",)) -> dict:
    batch = pa.RecordBatch.from_arrays([pa.array([value], arrow_type)], names=["c"])
    rows, _, errors = payload_columns(batch, list(columns))
    assert errors == {}
    return rows[0]


# -- the listed cases ------------------------------------------------------------------------
@pytest.mark.parametrize("arrow_type, value, expected", [
    (pa.list_(pa.float32()), [0.1, None, 0.3], [0.1, None, 0.3]),
    (pa.struct([("score", pa.float32())]), {"score": 0.1}, {"score": 0.1}),
    (pa.large_list(pa.float16()), [0.1], [0.1]),
    (pa.list_(pa.float32(), 2), [0.1, 2.5], [0.1, 2.5]),
    (pa.list_(pa.list_(pa.float16())), [[0.1], [], None], [[0.1], [], None]),
    (pa.struct([("v", pa.list_(pa.float32()))]), {"v": [0.1]}, {"v": [0.1]}),
    (pa.map_(pa.string(), pa.float32()), [("k", 0.1)], {"k": 0.1}),
    (pa.list_(pa.dictionary(pa.int8(), pa.float32())), [0.1], [0.1]),
])
def test_float32_and_float16_below_the_top_level_are_their_shortest_decimal(arrow_type, value, expected):
    assert payload_of(arrow_type, value)["c"] == expected


def test_float32_widened_across_files_keeps_its_decimal_at_every_depth():
    """A dataset whose files hold list<float32> and list<float64> is list<double>: 0.1 stays 0.1."""
    column = pa.array([[0.1], None], pa.list_(pa.float32()))
    assert convert_array(column, pa.list_(pa.float64()), "l")[0].to_pylist() == [[0.1], None]
    struct = pa.array([{"score": 0.1, "n": 3}], pa.struct([("score", pa.float16()), ("n", pa.int32())]))
    widened, errors = convert_array(struct, pa.struct([("score", pa.float64()), ("n", pa.int64())]), "s")
    assert widened.to_pylist() == [{"score": 0.1, "n": 3}] and errors == {}


def test_image_bytes_in_a_list_of_structs_are_left_out_and_their_paths_kept():
    """A `datasets` Sequence(Image()) column: three 361 KB crops fit no payload as base64."""
    crop_type = pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    crops = [{"bytes": bytes(361_000), "path": f"crop-{i}.jpg"} for i in range(3)]
    payload = payload_of(crop_type, crops)
    assert payload["c"] == [{"path": "crop-0.jpg"}, {"path": "crop-1.jpg"}, {"path": "crop-2.jpg"}]
    assert len(json.dumps(payload)) < 200
    schema = pa.schema([("image", pa.binary()), ("crops", crop_type), ("masks", pa.list_(pa.large_binary())),
                        ("raw", pa.binary())])
    kept, notes = left_out_binary(schema, ["crops", "masks", "raw"])
    assert kept == ("crops", "raw")  # a binary column itself is map_columns' to decide: kept when named
    assert any("crops[].bytes left out" in note for note in notes)
    assert any("'masks' left out" in note for note in notes)
    assert payload_types(schema, ["crops"]) == {"crops": "list<item: struct<path: string>>",
                                                '"crops"[]': "struct<path: string>", '"crops"[].path': "keyword"}


@pytest.mark.parametrize("payload_cols", [None, ["crops", "masks"]])
def test_the_run_notes_name_the_nested_binary_left_out(payload_cols):
    crop_type = pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    schema = pa.schema([("image", pa.binary()), ("caption", pa.string()), ("crops", crop_type),
                        ("masks", pa.list_(pa.binary()))])
    mapping = map_columns(schema, payload_cols=payload_cols)
    assert mapping.payload == ("crops",)
    assert any("crops[].bytes left out" in note for note in mapping.notes)
    assert any("'masks' left out" in note for note in mapping.notes)


# -- the kind: every leaf type under every nesting, against the same value at the top level ----------
def _ms(moment: dt.datetime) -> dt.datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


MOMENTS = st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1))
LEAVES = {
    "int8": (pa.int8(), st.integers(-128, 127)),
    "uint64": (pa.uint64(), st.integers(0, 2**64 - 1)),
    "float16": (pa.float16(), st.floats(width=16)),
    "float32": (pa.float32(), st.floats(width=32)),
    "float64": (pa.float64(), st.floats()),
    "decimal": (pa.decimal128(9, 3), st.decimals(min_value=-10**5, max_value=10**5, places=3, allow_nan=False)),
    "string": (pa.string(), st.text(max_size=4)),
    "large_string": (pa.large_string(), st.text(max_size=4)),
    "dictionary": (pa.dictionary(pa.int8(), pa.string()), st.sampled_from(["a", "b"])),
    "bool": (pa.bool_(), st.booleans()),
    "date": (pa.date32(), st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2200, 1, 1))),
    "timestamp": (pa.timestamp("us"), MOMENTS),
    "timestamp_tz": (pa.timestamp("ms", tz="UTC"), MOMENTS.map(lambda m: _ms(m).replace(tzinfo=dt.timezone.utc))),
    "time": (pa.time64("us"), st.times()),
    "binary": (pa.binary(), st.binary(max_size=6)),
    "large_binary": (pa.large_binary(), st.binary(max_size=6)),
    "fixed_size_binary": (pa.binary(3), st.binary(min_size=3, max_size=3)),
}
BINARY = {"binary", "large_binary", "fixed_size_binary"}
LISTS = {"list": pa.list_, "large_list": pa.large_list, "fixed_size_list": lambda t: pa.list_(t, 2)}


def wrap(step: str, arrow_type: pa.DataType, values):
    """The type and the value strategy one nesting step makes of ``arrow_type`` and ``values``."""
    cell = st.one_of(st.none(), values)
    if step in LISTS:
        size = {"min_size": 2, "max_size": 2} if step == "fixed_size_list" else {"max_size": 3}
        return LISTS[step](arrow_type), st.lists(cell, **size)
    if step == "struct":
        return (pa.struct([("x", arrow_type), ("other", pa.int32())]),
                st.fixed_dictionaries({"x": cell, "other": st.integers(0, 9)}))
    return pa.map_(pa.string(), arrow_type), st.dictionaries(st.sampled_from(["k", "j"]), cell, max_size=2).map(
        lambda d: list(d.items()))


@st.composite
def nested_cases(draw):
    leaf = draw(st.sampled_from(sorted(LEAVES)))
    steps = draw(st.lists(st.sampled_from([*LISTS, "struct", "map"]), min_size=1, max_size=3))
    arrow_type, values = LEAVES[leaf]
    for step in reversed(steps):  # steps[0] is the outermost
        arrow_type, values = wrap(step, arrow_type, values)
    return leaf, steps, arrow_type, draw(values)


def kept(leaf: str, steps: list[str]) -> bool:
    """Whether anything of the column is stored: binary leaves go, a struct keeps its other field."""
    if not steps:
        return leaf not in BINARY
    return steps[0] == "struct" or kept(leaf, steps[1:])


def expected(value, leaf: str, steps: list[str]):
    """The plain-Python oracle: the JSON of each leaf is that of the same value in a top-level column."""
    if value is None:
        return None
    if not steps:
        return payload_of(LEAVES[leaf][0], value)["c"]
    inner = steps[1:]
    if steps[0] in LISTS:
        return [expected(v, leaf, inner) for v in value]
    if steps[0] == "map":
        return {k: expected(v, leaf, inner) for k, v in value}
    return {"other": value["other"], **({"x": expected(value["x"], leaf, inner)} if kept(leaf, inner) else {})}


def leaf_path(steps: list[str]) -> tuple[str, str]:
    """The leaf's recorded path and how --where writes it (lists are looked through, a map takes a key)."""
    recorded, written = '"c"', "c"
    for step in steps:
        recorded += "[]" if step in LISTS else ".x" if step == "struct" else ".*"
        written += "" if step in LISTS else ".x" if step == "struct" else ".k"
    return recorded, written


def where_typing(name: str, types: dict[str, str]):
    try:
        field = resolve_field(name, False, types)
    except FilterError:
        return "refused"
    return field.type


@given(nested_cases())
@settings(max_examples=300, deadline=None)
def test_every_value_rule_applies_at_every_depth(case):
    leaf, steps, arrow_type, value = case
    leaf_type = LEAVES[leaf][0]
    payload = payload_of(arrow_type, value)
    types = payload_types(pa.schema([("c", arrow_type)]), ["c"])
    if not kept(leaf, steps):
        assert payload == {} and types == {}
        return
    assert payload["c"] == expected(value, leaf, steps)
    json.dumps(payload, allow_nan=False)  # what Qdrant stores
    if leaf in BINARY:
        return  # the leaf is gone; its siblings were checked above
    top = payload_types(pa.schema([("c", leaf_type)]), ["c"])["c"]
    recorded, written = leaf_path(steps)
    assert types[recorded] == top  # typing: recorded like a column of the leaf's type
    assert where_typing(written, types) == where_typing("c", {"c": top})
    if where_typing("c", {"c": top}) != "refused":
        field = resolve_field(written, False, types)
        lists = sum(step in LISTS for step in steps)
        assert field.empty_key.count("[]") == lists  # `is null` looks through every level of lists
        # comparisons go one level less deep when the leaf is a list's element: Qdrant matches any element
        assert field.key.count("[]") == lists - (steps[-1] in LISTS)


@given(st.floats(width=32), st.floats(width=16))
@settings(max_examples=200, deadline=None)
def test_nested_narrow_floats_are_the_shortest_decimal_that_reads_back(single, half):
    """An oracle apart from the top-level path: the fewest significant digits that round-trip."""
    payload = payload_of(pa.struct([("s", pa.list_(pa.float32())), ("h", pa.float16())]), {"s": [single], "h": half})
    for stored, original, narrow in ((payload["c"]["s"][0], single, np.float32), (payload["c"]["h"], half, np.float16)):
        if not np.isfinite(original):
            assert stored is None
            continue
        with np.errstate(over="ignore"):  # a rounding up past the largest float32 is no shortest decimal
            digits = next(p for p in range(1, 18) if narrow(float(f"{original:.{p}g}")) == narrow(original))
        assert stored == float(f"{original:.{digits}g}")


def test_decimals_dates_and_timestamps_in_a_list_of_structs_are_typed_like_columns():
    arrow_type = pa.list_(pa.struct([("price", pa.decimal128(6, 2)), ("day", pa.date32()), ("at", pa.timestamp("s")),
                                     ("kind", pa.dictionary(pa.int8(), pa.string()))]))
    value = [{"price": decimal.Decimal("1.25"), "day": dt.date(2021, 6, 1), "at": dt.datetime(2021, 6, 1, 12),
              "kind": "cat"}]
    assert payload_of(arrow_type, value)["c"] == [{"price": 1.25, "day": "2021-06-01T00:00:00Z",
                                                   "at": "2021-06-01T12:00:00Z", "kind": "cat"}]
    types = payload_types(pa.schema([("c", arrow_type)]), ["c"])
    assert [resolve_field(f"c.{k}", False, types).type for k in ("price", "day", "at", "kind")] == [
        "float", "datetime", "datetime", "keyword"]
    assert resolve_field("c.at", False, types).key == "c[].at"
