"""Finding Parquet files, mapping columns, streaming batches with file and row."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmindex.errors import InputError
from mmindex.pipeline.ingest.source import find_files, map_columns, open_source


def write(path, **columns):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def test_files_directories_and_globs(tmp_path):
    a = write(tmp_path / "d" / "a.parquet", image=[b"x"])
    b = write(tmp_path / "d" / "sub" / "b.parquet", image=[b"y"])
    (tmp_path / "d" / "_SUCCESS").write_text("")
    (tmp_path / "d" / "notes.txt").write_text("not parquet")
    _, files, _ = find_files([str(tmp_path / "d")])
    assert files == sorted([str(a), str(b)])
    _, files, _ = find_files([str(tmp_path / "d" / "*.parquet")])
    assert files == [str(a)]
    _, files, _ = find_files([str(tmp_path / "d" / "**" / "*.parquet")])
    assert set(files) == {str(a), str(b)}
    _, files, _ = find_files([str(a), str(a)])
    assert files == [str(a)]


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        find_files([str(tmp_path / "nope.parquet")])
    with pytest.raises(InputError, match="no Parquet files"):
        find_files([str(tmp_path / "*.parquet")])


def test_columns_are_detected_and_reported():
    schema = pa.schema([("key", pa.string()), ("jpg", pa.binary()), ("txt", pa.string()), ("year", pa.int32()),
                        ("thumb", pa.binary())])
    mapping = map_columns(schema)
    assert (mapping.image, mapping.caption, mapping.id, mapping.image_kind) == ("jpg", "txt", "key", "bytes")
    assert mapping.payload == ("key", "year")  # binary 'thumb' left out, and said so
    assert any("'jpg'" in n for n in mapping.notes) and any("thumb" in n for n in mapping.notes)


def test_explicit_mapping_and_hf_struct_and_paths():
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("pic", struct), ("alt_text", pa.string()), ("file", pa.string()), ("n", pa.int8())])
    mapping = map_columns(schema, image_col="pic", caption_col="alt_text", payload_cols=["n"])
    assert (mapping.image_kind, mapping.caption, mapping.id, mapping.payload) == ("struct", "alt_text", None, ("n",))
    paths = map_columns(pa.schema([("image_path", pa.string())]))
    assert paths.image_kind == "path" and paths.caption is None


def test_bad_mappings_name_the_columns():
    schema = pa.schema([("photo", pa.binary()), ("caption", pa.string())])
    with pytest.raises(InputError, match="no image column found among photo, caption"):
        map_columns(schema)
    with pytest.raises(InputError, match="--caption-col 'nope'"):
        map_columns(schema, image_col="photo", caption_col="nope")
    with pytest.raises(InputError, match="has type int64"):
        map_columns(pa.schema([("image", pa.int64())]))


def test_batches_stream_with_file_and_row(tmp_path):
    write(tmp_path / "a.parquet", image=[b"1", b"2", b"3"], caption=["a", "b", "c"])
    write(tmp_path / "b.parquet", image=[b"4", b"5"], caption=["d", "e"])
    source = open_source([str(tmp_path)])
    assert source.count_rows() == 5
    seen = [(b.file.rsplit("/", 1)[-1], b.first_row, b.batch.num_rows) for b in source.batches(2)]
    assert seen == [("a.parquet", 0, 2), ("a.parquet", 2, 1), ("b.parquet", 0, 2)]


def test_a_column_missing_from_some_files_is_kept_and_null_there(tmp_path):
    write(tmp_path / "a.parquet", image=[b"1"], caption=["a"], year=[1])
    write(tmp_path / "b.parquet", image=[b"2"], caption=["b"])
    source = open_source([str(tmp_path)])
    assert "column 'year' is in 1 of 2 files; rows of the others hold null" in source.mapping.notes
    rows = [r for batch in source.batches() for r in batch.batch.to_pylist()]
    assert [r["year"] for r in rows] == [1, None]


def test_a_file_without_the_image_column_is_named(tmp_path):
    write(tmp_path / "a.parquet", image=[b"1"], caption=["a"])
    write(tmp_path / "b.parquet", caption=["b"])
    with pytest.raises(InputError, match=r"b\.parquet: no image column 'image' in this file"):
        open_source([str(tmp_path)])  # refused before anything reads (or loads a model)
    source = open_source([str(tmp_path)], skip_bad_files=True)
    with pytest.raises(InputError, match=r"b\.parquet: no image column 'image' in this file"):
        list(source.batches())  # --skip-bad-files: the run skips it when it comes to it


def test_corrupt_parquet_is_named(tmp_path):
    write(tmp_path / "a.parquet", image=[b"1"])
    (tmp_path / "b.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputError, match=r"b\.parquet: not a readable Parquet file"):
        list(open_source([str(tmp_path)]).batches())


def test_uris_go_through_pyarrow_filesystems(tmp_path):
    write(tmp_path / "u" / "a.parquet", image=[b"1"], caption=["a"])
    source = open_source([f"file://{tmp_path}/u/"])
    assert source.files == [f"{tmp_path}/u/a.parquet"]
    batch = next(source.batches())
    assert batch.file == f"file://{tmp_path}/u/a.parquet" and batch.path == f"{tmp_path}/u/a.parquet"
    assert open_source([f"file://{tmp_path}/u/*.parquet"]).count_rows() == 1
