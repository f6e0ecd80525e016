"""Ugly input: every row of the hazard file is ingested or rejected with the right stage and reason."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.hazards import EXPECTED, MAX_PAYLOAD, MAX_PIXELS

from mmindex import IngestOptions, ingest
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.errors import InputError
from mmindex.pipeline.ingest.records import point_id_from_key


def hazard_options(root, **more):
    return IngestOptions(image_root=str(root), max_pixels=MAX_PIXELS, max_payload_bytes=MAX_PAYLOAD,
                         batch_size=8, **more)


@pytest.mark.parametrize("pipelined", [True, False])
def test_every_hazard_row_ends_where_it_should(tmp_path, encoder, hazards, pipelined):
    path, root = hazards
    cases = pq.read_table(path, columns=["case"]).column("case").to_pylist()
    assert set(cases) == set(EXPECTED)
    store = QdrantEdgeStore("hazards", data_dir=tmp_path / "store")
    summary = ingest([str(path)], store, encoder, hazard_options(root, pipelined=pipelined))

    by_row = {r.row: r for r in summary.rejections}
    assert len(by_row) == summary.rejected  # one rejection per rejected row
    for row, case in enumerate(cases):
        expected = EXPECTED[case]
        if expected[0] == "ok":
            assert row not in by_row, f"{case} was rejected: {by_row.get(row)}"
            continue
        assert row in by_row, f"{case} should have been rejected"
        rejection = by_row[row]
        assert (rejection.stage, case) == (expected[1], case)
        assert expected[2] in rejection.reason, f"{case}: {rejection.reason}"
        assert rejection.file.endswith("hazards.parquet")

    ok = [c for c in cases if EXPECTED[c][0] == "ok"]
    assert summary.read == len(cases)
    assert summary.rejected == len(cases) - len(ok)
    assert summary.upserted == len(ok) and summary.unchanged == 0
    assert summary.adds_up()
    assert summary.duplicate_ids == 1
    assert summary.image_only == 2 and summary.truncated_captions == 1 and summary.cleaned_captions == 2
    assert any("does not fit a 64-bit" in w for w in summary.warnings)
    assert any("invalid UTF-8" in w for w in summary.warnings)
    # dup_first and dup_last share one point id: one point fewer than rows ingested.
    assert store.count() == len(ok) - 1

    def point(key):
        return store.retrieve([point_id_from_key(key)], with_vectors=True)[0]

    assert point("dup").payload["caption"] == "the last caption"  # the last row wins
    assert point("long_caption").payload["_caption_truncated"] is True
    assert "_caption_truncated" not in point("cmyk").payload
    assert point("control_chars").payload["caption"] == "a red  circle  on  blue"
    assert point("bad_utf8_caption").payload["caption"] == "caf\ufffd au lait \ufffd"
    assert set(point("null_caption").vectors) == {"image"}  # image vector only
    assert point("null_caption").payload.get("caption") is None
    assert set(point("cmyk").vectors) == {"image", "text", "keywords"}  # keywords: BM25 of the caption
    assert point("huge_int_payload").payload["big"] == str(2**64 - 1)
    assert point("nan_payload").payload["score"] is None
    assert point("path_inside_root").payload["_source"]["path"] == "ok.png"
    store.close()


def test_rerun_of_the_hazard_file_changes_nothing(tmp_path, encoder, hazards):
    path, root = hazards
    store = QdrantEdgeStore("again", data_dir=tmp_path / "store")
    first = ingest([str(path)], store, encoder, hazard_options(root))
    second = ingest([str(path)], store, encoder, hazard_options(root))
    # Only the repeated id is written again (the last row must win); everything else is unchanged.
    assert (second.embedded, second.rejected) == (2, first.rejected)
    assert second.unchanged == first.upserted - 2
    assert second.adds_up()
    store.close()


def test_missing_caption_reject_policy(tmp_path, encoder, hazards):
    path, root = hazards
    store = QdrantEdgeStore("strict", data_dir=tmp_path / "store")
    summary = ingest([str(path)], store, encoder, hazard_options(root, missing_caption="reject"))
    reasons = {r.reason for r in summary.rejections if r.id in ("null_caption", "blank_caption")}
    assert reasons == {"caption is null (--missing-caption reject)", "caption is empty (--missing-caption reject)"}
    assert summary.image_only == 0 and summary.adds_up()
    store.close()


def test_without_image_root_paths_resolve_next_to_the_file(tmp_path, encoder, hazards):
    path, root = hazards
    store = QdrantEdgeStore("loose", data_dir=tmp_path / "store")
    summary = ingest([str(path)], store, encoder, IngestOptions(max_pixels=MAX_PIXELS, max_payload_bytes=MAX_PAYLOAD))
    reasons = {r.id: r.reason for r in summary.rejections}
    # Unconfined: the absolute path is read, ../ is followed, and "ok.png" is looked for next to the file.
    assert "absolute_outside" not in reasons
    assert reasons["dotdot_path"] == f"image file not found: {path.parent.parent / 'outside.png'}"
    assert reasons["path_inside_root"] == f"image file not found: {path.parent / 'ok.png'}"
    store.close()


def test_non_string_ids(tmp_path, encoder):
    from helpers.hazards import encoded, photo

    image = encoded(photo(seed=1), "PNG")
    folder = tmp_path / "ids"
    folder.mkdir()
    pq.write_table(pa.table({"id": pa.array([1, 2, 2**40], pa.int64()), "image": [image] * 3,
                             "caption": ["a", "b", "c"]}), folder / "ints.parquet")
    pq.write_table(pa.table({"id": pa.array([1.5, float("nan"), None], pa.float64()), "image": [image] * 3,
                             "caption": ["d", "e", "f"]}), folder / "floats.parquet")
    store = QdrantEdgeStore("ids", data_dir=tmp_path / "store")
    summary = ingest([str(folder / "ints.parquet")], store, encoder)
    assert summary.upserted == 3 and store.retrieve([point_id_from_key(2**40)])
    store.close()
    # Its own collection: float ids in the integer `id` field of the first would be refused.
    store = QdrantEdgeStore("float-ids", data_dir=tmp_path / "store")
    floats = ingest([str(folder / "floats.parquet")], store, encoder)
    assert floats.upserted == 1
    assert sorted(r.reason for r in floats.rejections) == ["id column 'id' is nan", "id column 'id' is null"]
    store.close()


def test_bad_files_stop_the_run_or_are_skipped_and_reported(tmp_path, encoder, sample_dir):
    import shutil

    folder = tmp_path / "mixed"
    shutil.copytree(sample_dir, folder)
    (folder / "part-00002.parquet").write_bytes(b"PAR1 this is not parquet")  # unreadable footer
    good = pq.read_table(folder / "part-00000.parquet")
    pq.write_table(good.drop_columns(["image"]), folder / "part-00003.parquet")  # no image column
    truncated = (folder / "part-00001.parquet").read_bytes()
    pq.write_table(good, folder / "part-00004.parquet", row_group_size=10)
    data = (folder / "part-00004.parquet").read_bytes()
    (folder / "part-00004.parquet").write_bytes(data[:40] + b"\0" * 3000 + data[3040:])  # corrupt row groups
    assert truncated

    store = QdrantEdgeStore("mixed", data_dir=tmp_path / "store")
    with pytest.raises(InputError, match="part-00002.parquet: not a readable Parquet file"):
        ingest([str(folder)], store, encoder)
    summary = ingest([str(folder)], store, encoder, IngestOptions(skip_bad_files=True))
    skipped = {s["file"].rsplit("/", 1)[-1]: s["reason"] for s in summary.skipped_files}
    assert list(skipped) == ["part-00002.parquet"]
    schema_rejects = [r for r in summary.rejections if r.file.endswith("part-00003.parquet")]
    assert len(schema_rejects) == good.num_rows and "no image column 'image'" in schema_rejects[0].reason
    corrupt = [r for r in summary.rejections if r.file.endswith("part-00004.parquet")]
    assert corrupt and all("unreadable from row" in r.reason for r in corrupt)
    assert summary.adds_up() and summary.upserted + summary.unchanged >= 60
    store.close()
