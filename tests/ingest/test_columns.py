"""Columns as real tools write them: encodings, names that collide with mmindex's keys, captions
that are not text, PNG metadata, and evaluation groups."""
from __future__ import annotations

import io
import zlib

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, PngImagePlugin

from mmindex import IngestOptions, ingest, search
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.pipeline.ingest.images import decode_image
from mmindex.pipeline.training.evaluate import evaluate


def png(color=(10, 120, 200), info: PngImagePlugin.PngInfo | None = None, icc: bytes | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buffer, "PNG", pnginfo=info, **({"icc_profile": icc} if icc else {}))
    return buffer.getvalue()


def run(tmp_path, table_or_frame, encoder, name="c", **options):
    path = tmp_path / f"{name}.parquet"
    if isinstance(table_or_frame, pd.DataFrame):
        table_or_frame.to_parquet(path)
    else:
        pq.write_table(table_or_frame, path)
    store = QdrantEdgeStore(name, data_dir=tmp_path / "store")
    summary = ingest([str(path)], store, encoder, IngestOptions(rejects_path=None, **options))
    return store, summary


def test_pandas_categorical_image_paths_are_paths(tmp_path, encoder):
    for index in range(3):
        (tmp_path / f"{index}.png").write_bytes(png((index * 80, 10, 10)))
    frame = pd.DataFrame({"id": pd.Categorical(["a", "b", "c"]), "image": pd.Categorical(["0.png", "1.png", "2.png"]),
                          "caption": pd.Categorical(["red", "red", "dark"]), "year": [2020, None, 2021],
                          "kind": pd.Categorical(["x", "y", "x"])})
    store, summary = run(tmp_path, frame, encoder, index_fields=["kind"])
    try:
        assert (summary.upserted, summary.rejected) == (3, 0), summary.rejections
        assert store.spec().payload_types["year"] == "float"  # pandas' integer column with a null
        assert store.spec().payload_types["kind"] == "keyword" and store.info().indexed_fields == {"kind": "keyword"}
        assert len(search(store, encoder.encode_texts(["red"])[0], where="kind = x", exact=True)) == 2
        hits = search(store, encoder.encode_texts(["red"])[0], where="year in (2020, 2021)", exact=True)
        assert sorted(hit.payload["id"] for hit in hits) == ["a", "c"]
    finally:
        store.close()


@pytest.mark.parametrize("image_type", [pa.large_binary(), pa.binary()])
def test_large_and_plain_binaries_are_the_same_image_column(tmp_path, encoder, image_type):
    table = pa.table({"image": pa.array([png()], image_type), "caption": pa.array(["x"], pa.large_string()),
                      "id": pa.array(["k"], pa.large_string())})
    store, summary = run(tmp_path, table, encoder)
    store.close()
    assert summary.upserted == 1


def test_columns_named_like_mmindex_keys_are_kept_under_a_documented_name(tmp_path, encoder):
    """`--caption-col short_caption` keeps the dataset's own `caption`; `_source` stays too."""
    table = pa.table({"image": [png()], "short_caption": ["a blue square"], "caption": ["a long caption"],
                      "_source": ["crawl-7"], "caption_": ["taken"]})
    store, summary = run(tmp_path, table, encoder, caption_col="short_caption", index_fields=["caption__"])
    try:
        notes = " ".join(summary.notes)
        assert "column 'caption' is stored as 'caption__'" in notes and "'_source' is stored as '_source_'" in notes
        hit = search(store, encoder.encode_texts(["x"])[0], where="caption__ = 'a long caption'", exact=True)[0]
        assert hit.caption == "a blue square"
        assert hit.payload["caption__"] == "a long caption" and hit.payload["caption_"] == "taken"
        assert hit.payload["_source_"] == "crawl-7" and hit.source["row"] == 0
        assert store.info().indexed_fields == {"caption__": "keyword"}
    finally:
        store.close()


@pytest.mark.parametrize("cells, arrow_type, reason", [
    ([["a cat", "a kitten"]], pa.list_(pa.string()), "holds a list of 2 values, not text"),
    ([12], pa.int64(), "holds a number (12), not text"),
    ([{"en": "a cat"}], pa.struct([("en", pa.string())]), "holds a struct, not text"),
])
def test_captions_that_are_not_text_are_rejected_never_stringified(tmp_path, encoder, cells, arrow_type, reason):
    table = pa.table({"image": [png(), png()], "caption": pa.array(cells + [None], arrow_type), "id": ["a", "b"]})
    store, summary = run(tmp_path, table, encoder)
    store.close()
    assert summary.upserted == 1 and summary.rejected == 1  # the null caption is image-only
    rejection = summary.rejections[0]
    assert (rejection.row, rejection.stage) == (0, "read") and reason in rejection.reason


def test_pngs_with_large_metadata_decode(tmp_path):
    """Large text chunks and ICC profiles are valid; Pillow's default 1 MiB limit rejected them."""
    info = PngImagePlugin.PngInfo()
    info.add_text("XML:com.adobe.xmp", "x" * (3 * 1024 * 1024), zip=True)
    assert decode_image(png(info=info)).size == (16, 16)
    profile = b"\0" * (2 * 1024 * 1024)  # the bytes are kept, not interpreted, by a decode to RGB
    data = png(icc=profile)
    assert len(zlib.compress(profile)) < len(profile)  # stored compressed, decompressed past 1 MiB
    assert decode_image(data).size == (16, 16)


def test_eval_groups_by_the_caption_column(tmp_path, encoder):
    rows = 6
    table = pa.table({"image": [png((i * 40, 0, 0)) for i in range(rows)],
                      "caption": ["a red square"] * 3 + ["a blue square"] * 3,
                      "short_caption": ["red"] * 3 + ["blue"] * 3, "id": [str(i) for i in range(rows)]})
    path = tmp_path / "pairs.parquet"
    pq.write_table(table, path)
    for group in ("caption", "short_caption"):
        report = evaluate([str(path)], encoder, [group], caption_col="short_caption")
        assert report["groups"] == 2, group
    with pytest.raises(Exception, match="--group-col nope is not a column"):
        evaluate([str(path)], encoder, ["nope"])


def test_parquet_as_polars_writes_it(tmp_path, encoder):
    """polars writes large binaries, large strings, large lists and uint32 dictionaries."""
    pl = pytest.importorskip("polars")
    frame = pl.DataFrame({"id": [1, 2, 3], "image": [png((1, 2, 3)), png((200, 0, 0)), png((0, 0, 200))],
                          "caption": ["a cat", None, "a dog"],
                          "kind": pl.Series(["x", "y", "x"], dtype=pl.Categorical),
                          "tags": [["cat", "pet"], [], None], "year": [2020, None, 2021]})
    frame.write_parquet(tmp_path / "polars.parquet")
    assert pq.read_schema(tmp_path / "polars.parquet").field("tags").type == pa.large_list(pa.large_string())
    store = QdrantEdgeStore("polars", data_dir=tmp_path / "store")
    try:
        summary = ingest([str(tmp_path / "polars.parquet")], store, encoder,
                         IngestOptions(rejects_path=None, index_fields=["kind", "tags", "year"]))
        assert (summary.upserted, summary.image_only) == (3, 1)
        types = store.spec().payload_types
        assert (types["kind"], types["tags"], types["year"]) == ("keyword", "keyword", "integer")
        vector = encoder.encode_texts(["x"])[0]

        def ids(where):
            return sorted(hit.payload["id"] for hit in search(store, vector, where=where, exact=True))

        assert ids("kind = x") == [1, 3] and ids("tags = pet") == [1] and ids("tags is null") == [2, 3]
        assert ids("year not in (2020)") == [2, 3] and ids("caption is null") == [2]
    finally:
        store.close()
