"""Issue 26 review: a Hugging Face data set whose shard numbering has gaps (a download cut short) is refused, not
read in part (``--sync`` would delete the missing rows); every Arrow list kind of ``Sequence(ClassLabel)`` is
named, and a ``ClassLabel`` that stays integers is said in the run's notes (pipeline/ingest/hf_layout.py,
class_labels.py)."""
from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from mmindex.errors import InputError
from mmindex.pipeline.ingest.hf_layout import check_numbering, resolve_inputs
from mmindex.pipeline.ingest.source import open_source

datasets = pytest.importorskip("datasets")


def png(color: str) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (16, 16), color).save(buffer, "PNG")
    return buffer.getvalue()


def write_shards(folder, names, rows: int = 1) -> None:
    """One small Parquet file (image bytes + caption) at each relative path of ``names``."""
    for number, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"image": [{"bytes": png((number * 20 % 256, 90, i * 40 % 256)), "path": None}
                                           for i in range(rows)],
                                 "caption": [f"shape {number}-{i}" for i in range(rows)]}), path)


def oracle_missing(names: list[str]) -> set[str] | None:
    """Plain Python: the missing ``-NNNNN-of-MMMMM`` names of one split's files, None when several totals mix."""
    totals = {int(name.split("-of-")[1][:5]) for name in names}
    if len(totals) > 1:
        return None
    (total,) = totals
    return {f"train-{index:05d}-of-{total:05d}.parquet" for index in range(total)} - set(names)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_numbering_check_matches_a_plain_python_oracle(data):
    total = data.draw(st.integers(1, 30))
    kept = data.draw(st.sets(st.integers(0, total - 1), min_size=1))
    names = [f"train-{index:05d}-of-{total:05d}.parquet" for index in sorted(kept)]
    if data.draw(st.booleans()):  # a file of another total beside them
        other = data.draw(st.integers(1, 30).filter(lambda t: t != total))
        names.append(f"train-{data.draw(st.integers(0, other - 1)):05d}-of-{other:05d}.parquet")
    want = oracle_missing(names)
    if want == set():
        check_numbering("train", [f"/d/data/{name}" for name in names], "d")
        return
    with pytest.raises(InputError) as caught:
        check_numbering("train", [f"/d/data/{name}" for name in names], "d")
    message = str(caught.value)
    assert "split 'train'" in message and "\n" not in message
    if want is None:
        assert "several numberings" in message
    else:
        assert f"missing {len(want)} of its shard files" in message and "finish the download" in message
        assert all(name in message for name in sorted(want)[:3])


def test_converted_numbering_with_a_gap_is_refused_and_a_full_run_is_not():
    check_numbering("train", ["/c/default/train/0000.parquet", "/c/default/train/0001.parquet"], "c")
    with pytest.raises(InputError, match=r"missing 2 of its shard files \(0001.parquet, 0002.parquet\)"):
        check_numbering("train", ["/c/default/train/0000.parquet", "/c/default/train/0003.parquet"], "c")


@pytest.mark.slow  # ~8 s: ingests 24 rows with the tiny model, then the sync that must not delete
def test_a_hub_folder_missing_shard_7_of_12_is_refused_and_sync_deletes_nothing(tmp_path, cli, tiny_model):
    folder = tmp_path / "hub"
    write_shards(folder, [f"data/train-{k:05d}-of-00012.parquet" for k in range(12)], rows=2)
    first = cli("ingest", folder, "-c", "shapes", "--model", tiny_model, "--sync")
    assert first.exit_code == 0, first.output
    (folder / "data" / "train-00007-of-00012.parquet").unlink()
    again = cli("ingest", folder, "-c", "shapes", "--model", tiny_model, "--sync")
    assert again.exit_code == 1 and "Traceback" not in again.output
    assert "split 'train' is missing 1 of its shard files (train-00007-of-00012.parquet)" in again.output
    assert "finish the download" in again.output and "deleted" not in again.output
    info = json.loads(cli("info", "-c", "shapes", "--json").output)
    assert info["points"] == 24, info


@pytest.mark.parametrize("names,missing", [
    ([f"train-{k:05d}-of-00012.parquet" for k in range(12) if k != 7], "train-00007-of-00012.parquet"),
    (["train-00000-of-00003.parquet", "train-00002-of-00003.parquet"], "train-00001-of-00003.parquet"),
    (["train-00000-of-00003-0a1b2c.parquet", "train-00001-of-00003-0a1b2c.parquet"], "train-00002-of-00003-*.parquet"),
])
def test_a_hub_split_with_a_gap_is_refused_naming_the_missing_file(tmp_path, names, missing):
    write_shards(tmp_path / "hub", ["data/" + name for name in names])
    with pytest.raises(InputError, match="split 'train' is missing 1 of its shard files") as caught:
        open_source([str(tmp_path / "hub")])
    assert f"({missing})" in str(caught.value)


def test_files_of_two_totals_are_refused(tmp_path):
    write_shards(tmp_path / "hub", ["data/train-00000-of-00003.parquet", "data/train-00001-of-00004.parquet"])
    with pytest.raises(InputError, match=r"mixes shard files of several numberings \(-of-00003, -of-00004\)"):
        resolve_inputs([str(tmp_path / "hub")])


def test_a_gap_in_a_split_not_read_is_no_matter_and_one_read_is_refused(tmp_path):
    write_shards(tmp_path / "hub", ["data/train-00000-of-00001.parquet", "data/test-00001-of-00002.parquet"])
    assert len(resolve_inputs([str(tmp_path / "hub")], split="train").inputs) == 1
    with pytest.raises(InputError, match=r"split 'test' is missing 1 of its shard files \(test-00000-of-00002"):
        resolve_inputs([str(tmp_path / "hub")], split="all")


def test_a_refs_convert_split_with_a_gap_is_refused(tmp_path):
    write_shards(tmp_path / "conv", ["default/train/0000.parquet", "default/train/0002.parquet"])
    with pytest.raises(InputError, match=r"split 'train' is missing 1 of its shard files \(0001.parquet\)"):
        resolve_inputs([str(tmp_path / "conv" / "default")])


def test_a_datasets_cache_folder_with_a_gap_is_refused(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "dataset_info.json").write_text('{"splits": {"train": {"name": "train"}}}')
    table = pa.table({"caption": ["a"]})
    for index in (0, 2):
        with pa.ipc.new_stream(str(folder / f"shapes-train-{index:05d}-of-00003.arrow"), table.schema) as writer:
            writer.write_table(table)
    with pytest.raises(InputError, match=r"missing 1 of its shard files \(shapes-train-00001-of-00003.arrow\)"):
        resolve_inputs([str(folder)])


# --- ClassLabel columns of every Arrow list kind, and the ones that stay integers ---------------------------------

def test_a_fixed_length_sequence_of_class_labels_becomes_names(tmp_path):
    from datasets import ClassLabel, Dataset, Features, Image, List, Value

    features = Features({"image": Image(), "caption": Value("string"), "pair": List(ClassLabel(names=["cat", "dog"]), length=2)})
    ds = Dataset.from_dict({"image": [{"bytes": png("red"), "path": None}] * 2, "caption": ["a", "b"], "pair": [[0, 1], [1, -1]]}, features=features)
    ds.to_parquet(str(tmp_path / "rows.parquet"))
    assert pa.types.is_fixed_size_list(pq.read_schema(tmp_path / "rows.parquet").field("pair").type)
    source = open_source([str(tmp_path / "rows.parquet")], caption_col="caption")
    rows = [row for batch in source.batches(8) for row in batch.batch.to_pylist()]
    assert [(r["pair"], r["pair_id"]) for r in rows] == [(["cat", "dog"], [0, 1]), (["dog", None], [1, None])]
    assert any("ClassLabel column 'pair'" in note for note in source.mapping.notes)


def test_a_class_label_inside_a_struct_stays_integers_and_a_note_says_so(tmp_path):
    from datasets import ClassLabel, Dataset, Features, Image, List, Value

    kind = ClassLabel(names=["cat", "dog"])
    features = Features({"image": Image(), "caption": Value("string"), "meta": {"kind": kind, "n": Value("int32")},
                         "boxes": List(List(kind))})
    ds = Dataset.from_dict({"image": [{"bytes": png("red"), "path": None}], "caption": ["a"], "meta": [{"kind": 1, "n": 3}], "boxes": [[[0, 1]]]}, features=features)
    ds.to_parquet(str(tmp_path / "rows.parquet"))
    source = open_source([str(tmp_path / "rows.parquet")], caption_col="caption")
    (row,) = [row for batch in source.batches(8) for row in batch.batch.to_pylist()]
    assert row["meta"] == {"kind": 1, "n": 3} and row["boxes"] == [[0, 1]]
    notes = [note for note in source.mapping.notes if "stays integers" in note]
    assert notes == ["ClassLabel meta.kind stays integers: only a top-level ClassLabel column or a list of them is "
                     "read as names",
                     "ClassLabel boxes[][] stays integers: only a top-level ClassLabel column or a list of them is "
                     "read as names"]


def test_a_data_set_of_plain_columns_has_no_such_note(tmp_path):
    write_shards(tmp_path, ["rows.parquet"])
    assert not [n for n in open_source([str(tmp_path / "rows.parquet")], caption_col="caption").mapping.notes
                if "stays integers" in n]
