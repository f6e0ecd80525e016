"""The edges of a data set: empty files and columns without values decide nothing and block nothing, and a
column whose type changed since the collection's last run is read in the recorded type, converted as between
the files of one run, or refused in one line when no conversion keeps its values."""
from __future__ import annotations

from decimal import Decimal

import decimal
import io

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mmindex import CollectionMismatchError, IngestOptions, ingest, search
from mmindex.connectors.base import CollectionSpec
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.pipeline.ingest.records import payload_types
from mmindex.pipeline.ingest.rows import read_batch
from mmindex.pipeline.ingest.source import keep_stored_types, open_source

EDGE = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def png(shade: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (shade % 256, 90, 160)).save(buffer, "PNG")
    return buffer.getvalue()


def read(inputs, recorded: dict[str, str] | None = None, **columns):
    """What a run would store: {(file name, row): payload} for the rows read, {(file name, row): reason} for the
    rows rejected, and the payload types the run records (after ``keep_stored_types`` when ``recorded``)."""
    source = open_source([str(i) for i in inputs] if isinstance(inputs, list) else [str(inputs)], **columns)
    if recorded is not None:
        keep_stored_types(source, recorded, "c")
    stored, rejected = {}, {}
    for source_batch in source.batches(2):
        tally, rows = read_batch(source, source_batch, "model", IngestOptions(rejects_path=None))
        for row in rows:
            stored[(row.file.rsplit("/", 1)[-1], row.row)] = {k: v for k, v in row.payload.items() if k != "_source"}
        for rejection in tally.rejections:
            rejected[(rejection.file.rsplit("/", 1)[-1], rejection.row)] = rejection.reason
    return stored, rejected, payload_types(source.schema, source.mapping.payload, source.mapping.payload_key)


# -- the examples of the issue ------------------------------------------------------------------------------------

def test_an_empty_pandas_file_beside_real_shards_decides_nothing_and_blocks_nothing(tmp_path, encoder):
    """pandas writes an empty frame's columns as double (`{"id": []}`) or as Arrow null (`columns=[...]`)."""
    folder = tmp_path / "night"
    folder.mkdir()
    pd.DataFrame({"id": [1, 2], "image": [png(1), png(2)], "caption": ["a", "b"]}).to_parquet(folder / "a.parquet")
    pd.DataFrame({"id": [], "image": [], "caption": []}).to_parquet(folder / "b.parquet")
    pd.DataFrame(columns=["id", "image", "caption"]).to_parquet(folder / "c.parquet")
    pd.DataFrame({"id": [3], "image": [png(3)], "caption": ["c"]}).to_parquet(folder / "d.parquet")
    source = open_source([str(folder)])
    assert [str(source.schema.field(n).type) for n in ("id", "image", "caption")] == ["int64", "binary", "string"]
    assert any("2 file(s) without rows" in note for note in source.mapping.notes)
    store = QdrantEdgeStore("edges", data_dir=tmp_path / "store")
    try:
        summary = ingest([str(folder)], store, encoder, IngestOptions(rejects_path=None))
        assert (summary.read, summary.upserted, summary.rejected) == (3, 3, 0)
        assert store.spec().payload_types == {"id": "integer"}
        hits = search(store, encoder.encode_texts(["x"])[0], where="id >= 2", exact=True)
        assert sorted(h.payload["id"] for h in hits) == [2, 3]
    finally:
        store.close()


def test_empty_files_of_every_writer_decide_nothing(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    pa_table = pa.table({"id": [7], "image": [png(7)], "caption": ["seven"], "n": [70]})
    pq.write_table(pa_table, folder / "0-real.parquet")
    pl.DataFrame({"id": [], "image": [], "caption": []}).write_parquet(folder / "1-polars-null.parquet")
    pl.DataFrame(schema={"id": pl.String, "image": pl.String, "n": pl.Float64}).write_parquet(
        folder / "2-polars-typed.parquet")
    pq.write_table(pa.table({"id": pa.array([], pa.string()), "image": pa.array([], pa.string()),
                             "caption": pa.array([], pa.int64()), "n": pa.array([], pa.float64())}),
                   folder / "3-pyarrow.parquet")
    pd.DataFrame().to_parquet(folder / "4-pandas-no-columns.parquet")
    pd.DataFrame({"id": pd.Series([], dtype="float64")}).to_parquet(folder / "5-pandas.parquet")
    stored, rejected, types = read(folder)
    assert stored == {("0-real.parquet", 0): {"id": 7, "n": 70, "caption": "seven"}} and rejected == {}
    assert types == {"id": "integer", "n": "integer"}


def test_a_column_without_values_in_a_file_with_rows(tmp_path):
    """An all-null column (Arrow null from pandas' None, or double with only NaN) neither types its column nor
    blocks the file; a row without an image is rejected on its own."""
    folder = tmp_path / "d"
    folder.mkdir()
    pd.DataFrame({"id": [1], "image": [png(1)], "caption": ["one"], "lens": ["50mm"]}).to_parquet(folder / "a.parquet")
    pd.DataFrame({"id": [2, 3], "image": [None, None], "caption": [float("nan")] * 2,
                  "lens": [None, None]}).to_parquet(folder / "b.parquet")
    assert str(pq.read_schema(folder / "b.parquet").field("caption").type) == "double"
    stored, rejected, types = read(folder)
    assert stored == {("a.parquet", 0): {"id": 1, "lens": "50mm", "caption": "one"}}
    assert rejected == {("b.parquet", 0): "image cell is null", ("b.parquet", 1): "image cell is null"}
    assert types == {"id": "integer", "lens": "keyword"}
    source = open_source([str(folder)])
    assert source.schema.field("caption").type == pa.string()


def test_float_ids_of_the_next_night_are_the_same_points(tmp_path, encoder):
    """Night 1 writes int64 ids; night 2 the same rows through pandas with a null: float64. Converted, not
    refused: the same points, their field still integer; the row without an id is rejected on its own."""
    pd.DataFrame({"id": [1, 2, 3], "image": [png(i) for i in range(3)], "caption": ["a", "b", "c"]}).to_parquet(
        tmp_path / "night1.parquet")
    pd.DataFrame({"id": [1, 2, 3, None], "image": [png(i) for i in range(4)], "caption": ["a", "b", "c", "d"]}
                 ).to_parquet(tmp_path / "night2.parquet")
    (tmp_path / "night3").mkdir()
    pq.write_table(pa.table({"id": ["1", "2", "4"], "image": [png(0), png(1), png(9)], "caption": ["a", "b", "e"]}),
                   tmp_path / "night3" / "part.parquet")
    assert pq.read_schema(tmp_path / "night2.parquet").field("id").type == pa.float64()
    store = QdrantEdgeStore("nights", data_dir=tmp_path / "store")
    try:
        ingest([str(tmp_path / "night1.parquet")], store, encoder, IngestOptions(rejects_path=None))
        second = ingest([str(tmp_path / "night2.parquet")], store, encoder, IngestOptions(rejects_path=None))
        assert (second.unchanged + second.payload_updated, second.upserted, second.rejected) == (3, 0, 1)
        assert second.rejections[0].reason == "id column 'id' is null"
        third = ingest([str(tmp_path / "night3")], store, encoder, IngestOptions(rejects_path=None))
        assert (third.unchanged + third.payload_updated, third.upserted, third.rejected) == (2, 1, 0)
        assert store.count() == 4 and store.spec().payload_types == {"id": "integer"}
        hits = search(store, encoder.encode_texts(["x"])[0], where="id in (1, 4)", exact=True)
        assert sorted(h.payload["id"] for h in hits) == [1, 4]
    finally:
        store.close()


def test_lossy_values_are_rejected_in_one_line_naming_file_column_and_both_types(tmp_path, encoder):
    pq.write_table(pa.table({"image": [png(1)], "caption": ["a"], "year": [2020]}), tmp_path / "one.parquet")
    pq.write_table(pa.table({"image": [png(2), png(3), png(4)], "caption": ["b", "c", "d"],
                             "year": [2021.0, 1.5, None]}), tmp_path / "two.parquet")
    pq.write_table(pa.table({"image": [png(5), png(6)], "caption": ["e", "f"], "year": ["2022", "abc"]}),
                   tmp_path / "three.parquet")
    store = QdrantEdgeStore("lossy", data_dir=tmp_path / "store")
    try:
        ingest([str(tmp_path / "one.parquet")], store, encoder, IngestOptions(rejects_path=None))
        two = ingest([str(tmp_path / "two.parquet")], store, encoder, IngestOptions(rejects_path=None))
        assert (two.upserted, two.rejected) == (2, 1)
        (rejection,) = two.rejections
        assert rejection.file.endswith("two.parquet") and rejection.row == 1
        assert rejection.reason == ("column 'year': 1.5 does not convert to int64 (not a whole number); field 'year' "
                                    "is integer in collection 'lossy', double in this file")
        three = ingest([str(tmp_path / "three.parquet")], store, encoder, IngestOptions(rejects_path=None))
        (rejection,) = three.rejections
        assert rejection.file.endswith("three.parquet") and rejection.row == 1 and "\n" not in rejection.reason
        assert rejection.reason.startswith("column 'year': 'abc' does not convert to int64 (not a number); field "
                                           "'year' is integer in collection 'lossy', string in this file")
        assert store.spec().payload_types["year"] == "integer"
        years = sorted(h.payload["year"] for h in search(store, encoder.encode_texts(["x"])[0], where="year >= 2020",
                                                         exact=True, limit=10))
        assert years == [2020, 2021, 2022] and all(type(y) is int for y in years)
    finally:
        store.close()


def test_numbers_into_a_text_field_are_refused_in_one_line(tmp_path, encoder):
    pq.write_table(pa.table({"image": [png(1)], "caption": ["a"], "zip": ["02139"]}), tmp_path / "one.parquet")
    (tmp_path / "two").mkdir()
    pd.DataFrame({"image": [png(2)], "caption": ["b"], "zip": [2139]}).to_parquet(tmp_path / "two" / "p.parquet")
    store = QdrantEdgeStore("codes", data_dir=tmp_path / "store")
    try:
        ingest([str(tmp_path / "one.parquet")], store, encoder, IngestOptions(rejects_path=None))
        with pytest.raises(CollectionMismatchError) as refused:
            ingest([str(tmp_path / "two")], store, encoder, IngestOptions(rejects_path=None))
        message = str(refused.value)
        assert "\n" not in message and "payload field 'zip' is keyword in collection 'codes' but integer (int64)" \
            in message and "two/p.parquet" in message and "no conversion keeps its values" in message
        assert store.count() == 1
    finally:
        store.close()


@pytest.mark.parametrize("first, second", [
    (pa.array([1, 2], pa.int32()), pa.array([3, None], pa.int64())),
    (pa.array([0.1, 0.2], pa.float32()), pa.array([0.5, None], pa.float64())),
    (pa.array(["a", "b"], pa.string()), pa.array(["c", None], pa.large_string())),
    (pa.array([1, 2], pa.timestamp("ms")), pa.array([3_000_000, None], pa.timestamp("us", tz="UTC"))),
    (pa.array(["x", "y"]).dictionary_encode(), pa.array(["z", None], pa.string())),
    (pa.array(["x", "y"], pa.string()), pa.array(["z", None]).dictionary_encode()),
    # a review's finding: whole-valued decimals into an integer field (the same conversion as within one run)
    (pa.array([2020, 2021], pa.int32()), pa.array([Decimal(2024), None], pa.decimal128(6, 0))),
    (pa.array([2020, 2021], pa.int64()), pa.array([Decimal("2024.00"), None], pa.decimal128(10, 2))),
    (pa.array([0.5, 1.5], pa.float64()), pa.array([Decimal("2.25"), None], pa.decimal128(10, 2))),
])
def test_lossless_drifts_between_runs_and_within_one(tmp_path, first, second):
    one = tmp_path / "one" / "a.parquet"
    two = tmp_path / "two" / "b.parquet"
    for path, column, shade in ((one, first, 1), (two, second, 2)):
        path.parent.mkdir()
        pq.write_table(pa.table({"image": [png(shade)] * 2, "v": column}), path)
    recorded = read(one.parent)[2]
    across, rejected, types = read(two.parent, recorded)
    within, rejected_within, _ = read([one, two])
    assert rejected == rejected_within == {} and types == recorded
    assert [p["v"] for p in across.values()] == [p["v"] for k, p in within.items() if k[0] == "b.parquet"]
    CollectionSpec("m", 2, types).check_matches(CollectionSpec("m", 2, recorded), "c")


# -- the kind: data-set edges against a plain oracle -------------------------------------------------------------

WRITERS = ("pyarrow", "pandas", "polars")
EMPTY_KINDS = ("pandas-double", "pandas-null", "pandas-no-columns", "polars-null", "polars-typed", "pyarrow-typed")


@st.composite
def shard_sets(draw):
    shards = []
    for index in range(draw(st.integers(1, 4))):
        if draw(st.booleans()) and index:
            shards.append({"empty": draw(st.sampled_from(EMPTY_KINDS))})
            continue
        rows = draw(st.integers(1, 3))
        shards.append({
            "writer": draw(st.sampled_from(WRITERS)),
            "id": [index * 10 + row for row in range(rows)],
            "image": draw(st.sampled_from(["all", "none", "some"])),
            "caption": draw(st.lists(st.sampled_from(["cat", "dog", None]), min_size=rows, max_size=rows)),
            "n": draw(st.lists(st.one_of(st.none(), st.integers(-5, 5)), min_size=rows, max_size=rows)),
            "note_type": draw(st.sampled_from(["null", "double", "string"])),  # an all-null column, typed so
        })
    return shards


def write_shard(path, shard):
    if "empty" in shard:
        kind = shard["empty"]
        if kind == "pandas-double":
            pd.DataFrame({"id": [], "image": [], "caption": [], "n": [], "note": []}).to_parquet(path)
        elif kind == "pandas-null":
            pd.DataFrame(columns=["id", "image", "caption", "n", "note"]).to_parquet(path)
        elif kind == "pandas-no-columns":
            pd.DataFrame().to_parquet(path)
        elif kind == "polars-null":
            pl.DataFrame({"id": [], "image": [], "n": []}).write_parquet(path)
        elif kind == "polars-typed":
            pl.DataFrame(schema={"id": pl.String, "image": pl.Int64, "n": pl.String}).write_parquet(path)
        else:
            pq.write_table(pa.table({"id": pa.array([], pa.string()), "image": pa.array([], pa.string()),
                                     "caption": pa.array([], pa.float64()), "note": pa.array([], pa.int64())}), path)
        return
    rows = len(shard["id"])
    images = [None if shard["image"] == "none" or (shard["image"] == "some" and i % 2) else png(shard["id"][i])
              for i in range(rows)]
    columns = {"id": shard["id"], "image": images, "caption": shard["caption"], "n": shard["n"]}
    note = {"null": pa.nulls(rows), "double": pa.nulls(rows, pa.float64()), "string": pa.nulls(rows, pa.string())}
    if shard["writer"] == "pandas":
        frame = pd.DataFrame(columns)
        frame["note"] = None if shard["note_type"] == "null" else pd.Series([None] * rows, dtype=(
            "float64" if shard["note_type"] == "double" else "object"))
        frame.to_parquet(path)
    elif shard["writer"] == "polars":
        frame = pl.DataFrame({**columns, "image": pl.Series(images, dtype=pl.Binary) if shard["image"] != "none"
                              else pl.Series(images, dtype=pl.Null), "n": pl.Series(shard["n"], dtype=pl.Int64)})
        frame.with_columns(note=pl.from_arrow(note[shard["note_type"]])).write_parquet(path)
    else:
        table = pa.table({**columns, "image": pa.array(images, pa.binary()), "n": pa.array(shard["n"], pa.int64()),
                          "note": note[shard["note_type"]]})
        pq.write_table(table, path)


def declared(shard, column: str) -> str:
    """The type a writer gives a column of a shard with rows: pandas writes integers with a null as double and a
    column of None as Arrow null."""
    if column == "n":
        if shard["writer"] == "pandas" and all(v is None for v in shard["n"]):
            return "null"
        return "float" if shard["writer"] == "pandas" and None in shard["n"] else "integer"
    if shard["note_type"] == "string" and shard["writer"] == "pandas":
        return "null"
    return {"null": "null", "double": "float", "string": "keyword"}[shard["note_type"]]


def column_kind(shards, column: str) -> str:
    """A column's type: its files' declared type when they agree; when they do not, the type of the files that
    hold a value (float over integer), or null when none does. Files without rows and null columns have no say."""
    full = [s for s in shards if "empty" not in s]
    kinds = {declared(s, column) for s in full} - {"null"}
    if len(kinds) == 1:
        return kinds.pop()
    valued = {declared(s, column) for s in full if column == "n" and any(v is not None for v in s["n"])}
    return "float" if "float" in valued else "integer" if valued else "null"


def oracle(shards):
    """What must be stored from these shards, in plain Python: each row with an image and its payload, each row
    without one rejected, and the field types."""
    stored, rejected = {}, {}
    for index, shard in enumerate(shards):
        if "empty" in shard:
            continue
        for row, key in enumerate(shard["id"]):
            name = f"{index}.parquet"
            if shard["image"] == "none" or (shard["image"] == "some" and row % 2):
                rejected[(name, row)] = "image cell is null"
                continue
            payload = {"id": key, "n": shard["n"][row], "note": None}
            if shard["caption"][row] is not None:
                payload["caption"] = shard["caption"][row]
            stored[(name, row)] = payload
    return stored, rejected, {"id": "integer", "n": column_kind(shards, "n"), "note": column_kind(shards, "note")}


@EDGE
@given(shards=shard_sets())
def test_shard_sets_with_empty_files_and_null_columns_store_what_the_oracle_says(tmp_path_factory, shards):
    folder = tmp_path_factory.mktemp("shards")
    for index, shard in enumerate(shards):
        write_shard(folder / f"{index}.parquet", shard)
    stored, rejected, types = read(folder, id_col="id", caption_col="caption", image_col="image")
    want_stored, want_rejected, want_types = oracle(shards)
    assert rejected == want_rejected
    assert stored == want_stored
    assert all(type(p["n"]) is (float if want_types["n"] == "float" else int) for p in stored.values()
               if p["n"] is not None)
    assert types == want_types


# -- the kind: numeric columns drifting between two runs, against a plain oracle ---------------------------------

FORMS = ("int64", "float64", "text")
INT64 = 2**63 - 1


def column_of(values, form):
    if form == "int64":
        return pa.array(values, pa.int64())
    if form == "float64":
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return pa.array([None if v is None else (str(v) if isinstance(v, int) else repr(v)) for v in values])


def expected_value(value, recorded: str, form: str):
    """Run 2's value as a field recorded ``recorded`` must hold it, or "reject"; plain Python, no pyarrow."""
    if value is None:
        return None
    written = float(value) if form == "float64" else value if form == "int64" else (
        str(value) if isinstance(value, int) else repr(value))
    if recorded in ("null", {"int64": "integer", "float64": "float", "text": "keyword"}[form]):
        return written
    number = written
    if isinstance(written, str):
        number = int(written) if written.lstrip("-").isdigit() else float(written)
    if recorded == "integer":
        if isinstance(number, float) and not number.is_integer():
            return "reject"
        return int(number) if -INT64 - 1 <= int(number) <= INT64 else "reject"
    if isinstance(number, int) and decimal.Decimal(repr(float(number))) != number:
        return "reject"  # no float64 holds it: its shortest decimal is another number
    return float(number)


numbers = st.one_of(st.none(), st.integers(-2**62, 2**62), st.integers(-1000, 1000),
                    st.integers(-1000, 1000).map(lambda v: v + 0.5))


@EDGE
@given(first=st.lists(numbers, min_size=1, max_size=5), second=st.lists(numbers, min_size=1, max_size=5),
       forms=st.tuples(st.sampled_from(FORMS), st.sampled_from(FORMS)))
def test_numeric_columns_drifting_between_runs_are_stored_as_the_oracle_says(tmp_path_factory, first, second,
                                                                             forms):
    first_form, second_form = forms
    if first_form == "int64":
        first = [v if not isinstance(v, float) else int(v) for v in first]
    if second_form == "int64":
        second = [v if not isinstance(v, float) else int(v) for v in second]
    folder = tmp_path_factory.mktemp("drift")
    for name, values, form in (("one", first, first_form), ("two", second, second_form)):
        (folder / name).mkdir()
        pq.write_table(pa.table({"image": [png(i) for i in range(len(values))], "v": column_of(values, form)}),
                       folder / name / "p.parquet")
    recorded = read(folder / "one")[2]
    kind = {"int64": "integer", "float64": "float", "text": "keyword"}[second_form]
    if recorded.get("v") == "keyword" and kind != "keyword" and any(v is not None for v in second):
        with pytest.raises(CollectionMismatchError, match="payload field 'v' is keyword in collection 'c'"):
            read(folder / "two", recorded)
        return
    stored, rejected, types = read(folder / "two", recorded)
    got = [stored[("p.parquet", row)]["v"] if ("p.parquet", row) in stored else "reject" for row in range(len(second))]
    want = [expected_value(v, recorded.get("v", "null"), second_form) for v in second]
    assert got == want and [type(v) for v in got] == [type(v) for v in want]
    assert all("field 'v' is " in reason and " in this file" in reason for reason in rejected.values())
    if recorded.get("v", "null") != "null" and types.get("v", "null") != "null":
        assert types["v"] == recorded["v"]
        CollectionSpec("m", 2, types).check_matches(CollectionSpec("m", 2, recorded), "c")
