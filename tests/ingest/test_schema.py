"""One schema per dataset: drifting files, Hive folders, and type changes between runs."""
from __future__ import annotations

import io

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmindex import CollectionMismatchError, IngestOptions, ingest, search
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.qdrant_server import QdrantServerStore
from mmindex.pipeline.ingest.schema import _reconcile, convert_array, hive_partitions
from mmindex.pipeline.ingest.source import open_source


def png(shade: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, 90, 160)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("kinds, expected", [
    ([pa.int32(), pa.int64()], pa.int64()),
    ([pa.int64(), pa.float64()], pa.float64()),
    ([pa.int64(), pa.string()], pa.int64()),          # numeric strings become numbers
    ([pa.string(), pa.float32()], pa.float64()),
    ([pa.timestamp("ms"), pa.timestamp("us")], pa.timestamp("us")),
    ([pa.string(), pa.timestamp("us", tz="UTC")], pa.timestamp("us", tz="UTC")),
    ([pa.null(), pa.string()], pa.string()),          # an all-null column in one file
    ([pa.string(), pa.bool_()], pa.string()),         # no lossless common type: the first file's
])
def test_types_reconcile(kinds, expected):
    assert _reconcile(kinds) == expected


def test_values_that_do_not_convert_are_row_errors():
    converted, errors = convert_array(pa.array(["2021", " 7 ", "abc", None, "1e3", "2.5"]), pa.int64(), "year")
    assert converted.to_pylist() == [2021, 7, None, None, 1000, None]
    assert set(errors) == {2, 5}
    assert errors[2] == ("column 'year': 'abc' does not convert to int64, the column's type in the other files "
                         "(not a number)")
    assert "(not a whole number)" in errors[5]
    zips, problems = convert_array(pa.array(["02134", "10001"]), pa.int64(), "zip")
    assert zips.to_pylist() == [None, 10001] and "a leading zero would be lost" in problems[0]
    exact, lost = convert_array(pa.array([2**53 + 1, 3]), pa.float64(), "n")
    assert exact.to_pylist() == [None, 3.0] and "no float64 holds it exactly" in lost[0]
    big = 2**62 + 1
    assert convert_array(pa.array([big], pa.uint64()), pa.int64(), "n")[0].to_pylist() == [big]


def test_hive_partitions_come_from_folders_below_the_input():
    assert hive_partitions("/d/year=2021/lang=en/part-0.parquet", "/d") == {"year": "2021", "lang": "en"}
    assert hive_partitions("/d/year=__HIVE_DEFAULT_PARTITION__/city=New%20York/p.parquet", "/d") == {
        "year": None, "city": "New York"}
    assert hive_partitions("/x=1/d/part-0.parquet", "/x=1/d") == {}  # above the input: not a key
    assert hive_partitions("/d/_tmp=1/part-0.parquet", "/d") == {}


def test_drifting_files_keep_every_column_and_caption(tmp_path, encoder):
    """The first file decides nothing: a later extra column, a caption column missing from the
    first file, and an id/year that is int64 here and numeric strings there all arrive."""
    folder = tmp_path / "data"
    folder.mkdir()
    pq.write_table(pa.table({"id": [1, 2], "image": [png(1), png(2)], "year": pa.array([2020, 2021], pa.int32())}),
                   folder / "a.parquet")
    pq.write_table(pa.table({"id": ["3", "4"], "image": [png(3), png(4)], "caption": ["a blue square", "a dog"],
                             "year": ["2022", "twenty"], "lens": ["50mm", None]}), folder / "b.parquet")
    pd.DataFrame({"id": [5], "image": [png(5)], "year": [None], "caption": ["late"]}).to_parquet(folder / "c.parquet")
    source = open_source([str(folder)])
    notes = "\n".join(source.mapping.notes)
    assert source.mapping.caption == "caption" and "lens" in source.mapping.payload
    assert "column 'year' is int64 in the dataset; converted where read from" in notes and "b.parquet" in notes
    assert "column 'lens' is in 1 of 3 files" in notes
    for store in (QdrantEdgeStore("drift", data_dir=tmp_path / "edge"), QdrantServerStore("drift", url=":memory:")):
        try:
            summary = ingest([str(folder)], store, encoder, IngestOptions(rejects_path=None))
            assert (summary.read, summary.upserted, summary.rejected) == (5, 4, 1)
            rejection = summary.rejections[0]
            assert rejection.file.endswith("b.parquet") and rejection.row == 1 and rejection.stage == "read"
            assert "column 'year': 'twenty' does not convert to int64" in rejection.reason
            assert store.spec().payload_types == {"id": "integer", "year": "integer", "lens": "keyword"}
            vector = encoder.encode_texts(["x"])[0]
            hits = {h.payload["id"]: h for h in search(store, vector, exact=True, limit=10)}
            assert hits[3].caption == "a blue square" and hits[3].payload["lens"] == "50mm"
            assert hits[1].payload["lens"] is None and hits[1].caption is None
            assert hits[5].caption == "late" and hits[5].payload["year"] is None
            found = {h.payload["id"] for h in search(store, vector, where="year >= 2021", exact=True, limit=10)}
            assert found == {2, 3}
        finally:
            store.close()


def test_hive_partition_keys_are_payload_fields(tmp_path, encoder):
    root = tmp_path / "photos"
    for year, lang, shade in ((2020, "en", 1), (2021, "en", 2), (2021, "fr", 3)):
        folder = root / f"year={year}" / f"lang={lang}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"image": [png(shade)], "caption": [f"{lang} {year}"]}), folder / "part-0.parquet")
    source = open_source([str(root)])
    assert any("partition key(s) year, lang from folder names" in note for note in source.mapping.notes)
    store = QdrantEdgeStore("hive", data_dir=tmp_path / "store")
    try:
        ingest([str(root)], store, encoder, IngestOptions(rejects_path=None, index_fields=["year", "lang"]))
        assert store.spec().payload_types == {"year": "integer", "lang": "keyword"}
        hits = search(store, encoder.encode_texts(["x"])[0], where="year = 2021 and lang = en", exact=True)
        assert [hit.caption for hit in hits] == ["en 2021"]
    finally:
        store.close()


def test_a_type_change_between_runs_converts_as_within_one_run(tmp_path, encoder):
    """Text where integers were is converted value by value, as between the files of one run: a code whose
    leading zero would be lost, or a fraction in an integer field, rejects its row in one line (file, row, column,
    both types); the field keeps its type. Numbers where text was are refused before anything is written."""
    store = QdrantEdgeStore("types", data_dir=tmp_path / "store")
    try:
        pq.write_table(pa.table({"image": [png(1)], "caption": ["a"], "zip": [10001], "score": [1], "tag": ["x"]}),
                       tmp_path / "one.parquet")
        ingest([str(tmp_path / "one.parquet")], store, encoder, IngestOptions(rejects_path=None))
        (tmp_path / "two").mkdir()
        pq.write_table(pa.table({"image": [png(2), png(3)], "caption": ["b", "c"], "zip": ["02139", "10002"],
                                 "score": [1, 2], "tag": ["y", "z"]}), tmp_path / "two" / "two.parquet")
        two = ingest([str(tmp_path / "two")], store, encoder, IngestOptions(rejects_path=None))
        assert (two.upserted, two.rejected) == (1, 1) and two.rejections[0].row == 0
        assert two.rejections[0].reason == ("column 'zip': '02139' does not convert to int64 (a leading zero would "
                                            "be lost); field 'zip' is integer in collection 'types', string in this "
                                            "file")
        pq.write_table(pa.table({"image": [png(4)], "caption": ["d"], "zip": [2], "score": [0.5], "tag": ["w"]}),
                       tmp_path / "three.parquet")
        three = ingest([str(tmp_path / "three.parquet")], store, encoder, IngestOptions(rejects_path=None))
        assert three.rejected == 1 and "column 'score': 0.5 does not convert to int64 (not a whole number); field " \
            "'score' is integer in collection 'types', double in this file" == three.rejections[0].reason
        pq.write_table(pa.table({"image": [png(5)], "caption": ["e"], "zip": [3], "score": [3], "tag": [7]}),
                       tmp_path / "four.parquet")
        with pytest.raises(CollectionMismatchError,
                           match=r"payload field 'tag' is keyword in collection 'types' but integer \(int64\) in "
                                 r"column 'tag' of these inputs \(in .*four\.parquet\), and no conversion keeps"):
            ingest([str(tmp_path / "four.parquet")], store, encoder, IngestOptions(rejects_path=None))
        assert store.count() == 2 and store.spec().payload_types == {"zip": "integer", "score": "integer",
                                                                      "tag": "keyword"}
    finally:
        store.close()


def test_integers_into_a_float_field_are_accepted_and_compare_by_value(tmp_path, encoder):
    store = QdrantEdgeStore("widen", data_dir=tmp_path / "store")
    try:
        pq.write_table(pa.table({"image": [png(1)], "caption": ["a"], "year": [2020.0]}), tmp_path / "a.parquet")
        pq.write_table(pa.table({"image": [png(2)], "caption": ["b"], "year": [2021]}), tmp_path / "b.parquet")
        ingest([str(tmp_path / "a.parquet")], store, encoder, IngestOptions(rejects_path=None))
        ingest([str(tmp_path / "b.parquet")], store, encoder, IngestOptions(rejects_path=None))
        assert store.spec().payload_types["year"] == "float"
        hits = search(store, encoder.encode_texts(["x"])[0], where="year in (2020, 2021)", exact=True)
        assert sorted(hit.caption for hit in hits) == ["a", "b"]
    finally:
        store.close()


def test_a_column_without_values_yet_takes_a_type_later(tmp_path, encoder):
    """pandas writes an all-None column as Arrow's null type; it must not block the next run."""
    store = QdrantEdgeStore("nulls", data_dir=tmp_path / "store")
    try:
        pd.DataFrame({"image": [png(1)], "caption": ["a"], "note": [None]}).to_parquet(tmp_path / "a.parquet")
        pd.DataFrame({"image": [png(2)], "caption": ["b"], "note": ["hello"]}).to_parquet(tmp_path / "b.parquet")
        pd.DataFrame({"image": [png(3)], "caption": ["c"], "note": [None]}).to_parquet(tmp_path / "c.parquet")
        for name in ("a", "b", "c"):
            ingest([str(tmp_path / f"{name}.parquet")], store, encoder, IngestOptions(rejects_path=None))
        assert store.spec().payload_types["note"] == "keyword" and store.count() == 3
        hits = search(store, encoder.encode_texts(["x"])[0], where="note = hello", exact=True)
        assert [hit.caption for hit in hits] == ["b"]
    finally:
        store.close()


def test_hive_folders_as_spark_writes_them(tmp_path, encoder):
    """Null partitions, URL-encoded values, and a key that some files also hold as a column."""
    root = tmp_path / "t"
    layout = {("year=2021", "city=New%20York"): None, ("year=__HIVE_DEFAULT_PARTITION__", "city=Paris"): None,
              ("year=2022", "city=Oslo"): 2022}
    for shade, (folders, column) in enumerate(layout.items()):
        folder = root.joinpath(*folders)
        folder.mkdir(parents=True)
        table = {"image": [png(shade)], "caption": [folders[1]]}
        if column is not None:  # this file has the key as a column too
            table["year"] = [column]
        pq.write_table(pa.table(table), folder / "part-0.parquet")
    store = QdrantEdgeStore("spark", data_dir=tmp_path / "store")
    try:
        ingest([str(root)], store, encoder, IngestOptions(rejects_path=None))
        vector = encoder.encode_texts(["x"])[0]

        def captions(where):
            return sorted(hit.caption for hit in search(store, vector, where=where, exact=True))

        assert captions("city = 'New York'") == ["city=New%20York"]
        assert captions("year is null") == ["city=Paris"]
        assert captions("year >= 2021") == ["city=New%20York", "city=Oslo"]
    finally:
        store.close()


def test_index_fields_types_are_checked_and_keys_may_hold_colons(tmp_path, encoder):
    from mmindex import InputError

    pq.write_table(pa.table({"image": [png(1)], "caption": ["a"], "a:b": ["x"]}), tmp_path / "c.parquet")
    store = QdrantEdgeStore("colon", data_dir=tmp_path / "store")
    try:
        with pytest.raises(InputError, match="'bogus' is not an index type"):
            ingest([str(tmp_path / "c.parquet")], store, encoder, IngestOptions(index_fields=["a:b:bogus"]))
        ingest([str(tmp_path / "c.parquet")], store, encoder, IngestOptions(rejects_path=None, index_fields=["a:b"]))
        assert store.info().indexed_fields == {"a:b": "keyword"}
        assert len(search(store, encoder.encode_texts(["x"])[0], where="`a:b` = x", exact=True)) == 1
    finally:
        store.close()


def test_partition_values_are_integers_dates_or_text_as_written(tmp_path, encoder):
    """`month=01` is a code (keyword, every row kept); `day=2021-06-01` is a date."""
    root = tmp_path / "p"
    for shade, (month, day) in enumerate((("01", "2021-06-01"), ("02", "2021-06-02"), ("11", "2021-07-01"))):
        folder = root / f"month={month}" / f"day={day}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"image": [png(shade)], "caption": [month]}), folder / "part-0.parquet")
    store = QdrantEdgeStore("codes", data_dir=tmp_path / "store")
    try:
        summary = ingest([str(root)], store, encoder, IngestOptions(rejects_path=None))
        assert (summary.upserted, summary.rejected) == (3, 0)
        assert (store.spec().payload_types["month"], store.spec().payload_types["day"]) == ("keyword", "datetime")
        vector = encoder.encode_texts(["x"])[0]
        assert [h.caption for h in search(store, vector, where="month = 01", exact=True)] == ["01"]
        assert sorted(h.caption for h in search(store, vector, where="day >= 2021-06-02", exact=True)) == ["02", "11"]
    finally:
        store.close()


def test_float32_values_equal_the_numbers_written(tmp_path, encoder):
    """float32 0.1 widens to 0.10000000149011612; stored as 0.1, `f = 0.1` finds it on both stores."""
    frame = pd.DataFrame({"id": list("abc"), "image": [png(i) for i in range(3)], "caption": list("xyz"),
                          "f": pd.array([0.1, 0.2, 2.5], dtype="float32")})
    frame.to_parquet(tmp_path / "f32.parquet")
    drift = tmp_path / "drift"
    drift.mkdir()
    frame.iloc[:2].to_parquet(drift / "a.parquet")
    frame.iloc[2:].astype({"f": "float64"}).to_parquet(drift / "b.parquet")  # float32 widened by the dataset
    for inputs in (tmp_path / "f32.parquet", drift):
        for store in (QdrantEdgeStore("f32", data_dir=tmp_path / f"edge-{inputs.name}"),
                      QdrantServerStore("f32", url=":memory:")):
            try:
                ingest([str(inputs)], store, encoder, IngestOptions(rejects_path=None))
                vector = encoder.encode_texts(["x"])[0]
                for where, expected in (("f = 0.1", ["a"]), ("f in (0.1, 0.2)", ["a", "b"]), ("f != 0.1", ["b", "c"]),
                                        ("f <= 0.1", ["a"]), ("f > 0.1", ["b", "c"])):
                    got = sorted(h.payload["id"] for h in search(store, vector, where=where, exact=True))
                    assert got == expected, (inputs.name, type(store).__name__, where)
            finally:
                store.close()


def test_index_type_must_serve_the_field(tmp_path, encoder):
    from mmindex import InputError

    pq.write_table(pa.table({"image": [png(1)], "caption": ["a"], "year": [2020]}), tmp_path / "y.parquet")
    store = QdrantEdgeStore("idx", data_dir=tmp_path / "store")
    try:
        with pytest.raises(InputError, match="'year' holds integer values, which an index of type keyword"):
            ingest([str(tmp_path / "y.parquet")], store, encoder, IngestOptions(index_fields=["year:keyword"]))
    finally:
        store.close()
