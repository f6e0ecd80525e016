"""Which folders hold splits, checked against ``datasets``' own resolution (review of issue 26): the Hub reads
``data/train.parquet`` and ``data/test/a.parquet`` as splits, so mmindex must not read them together as one
plain folder; an empty split is refused by name; a ClassLabel's ``<col>_id`` clash names the file holding the
column; files holding images two ways are refused before any model loads."""
from __future__ import annotations

import os
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmindex.errors import InputError, UsageError
from mmindex.pipeline.ingest.hf_layout import hub_parquet, resolve_inputs
from mmindex.pipeline.ingest.source import open_source

datasets = pytest.importorskip("datasets")

# datasets.data_files.SPLIT_KEYWORDS: each word → the split name datasets gives it
CANONICAL = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
             "dev": "validation", "val": "validation", "test": "test", "testing": "test", "eval": "test",
             "evaluation": "test"}
FORMS = ["{w}.parquet", "{w}/part-0.parquet", "{w}/part-1.parquet", "{w}-00000-of-00001.parquet", "{w}/0000.parquet"]
FAMILY = {"{w}.parquet": "file", "{w}/part-0.parquet": "folder", "{w}/part-1.parquet": "folder",
          "{w}-00000-of-00001.parquet": "sharded", "{w}/0000.parquet": "folder"}


def touch(root: str, relative: str) -> None:
    path = os.path.join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.table({"x": [1]}), path)


def datasets_splits(root: str) -> dict[str, list[str]]:
    """The oracle: the splits ``datasets`` itself resolves for a local folder (its default patterns)."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    found = DataFilesDict.from_patterns(get_data_patterns(root), base_path=root)
    return {str(name): sorted(files) for name, files in found.items()}


@settings(max_examples=60, deadline=None)
@given(prefix=st.sampled_from(["", "data/", "default/"]),
       files=st.lists(st.tuples(st.sampled_from(sorted(CANONICAL)), st.sampled_from(FORMS)), min_size=1, max_size=4,
                      unique=True))
def test_hub_splits_agree_with_datasets_own_resolution(prefix, files):
    """Property: for folders of split-named files, mmindex's splits group the files as ``datasets`` does (its
    names kept as written: ``dev`` is datasets' ``validation``)."""
    words = {CANONICAL[word] for word, _ in files}
    if len({word for word, _ in files}) != len(words):
        return  # two words of one split (dev.parquet and val.parquet): datasets merges them, mmindex lists both
    with tempfile.TemporaryDirectory() as root:
        for word, form in files:
            touch(root, prefix + form.format(w=word))
        families = {FAMILY[form] for _, form in files}
        if len(families) > 1:  # datasets would leave some files out
            with pytest.raises(UsageError, match="names its splits two ways"):
                hub_parquet(root)
            return
        layout = hub_parquet(root)
        assert layout is not None, files  # never read as one plain folder
        ours = {CANONICAL[str(name)]: sorted(paths) for name, paths in layout.splits.items()}
        assert ours == datasets_splits(root)


@pytest.mark.parametrize("names", [("data/train.parquet", "data/test.parquet"),
                                   ("data/train/a.parquet", "data/test/a.parquet"),
                                   ("train.parquet", "validation.parquet")])
def test_split_named_files_are_splits_not_one_folder(tmp_path, names):
    for name in names:
        touch(str(tmp_path), name)
    with pytest.raises(UsageError, match="holds 2 splits"):
        resolve_inputs([str(tmp_path)])
    first = names[0].split("/")[-1].split(".")[0] if "/" not in names[0][5:] else names[0].split("/")[-2]
    picked = resolve_inputs([str(tmp_path)], first)
    assert picked.inputs == [str(tmp_path / names[0])]


def test_other_names_beside_split_names_stay_plain_parquet(tmp_path):
    touch(str(tmp_path), "train.parquet")
    touch(str(tmp_path), "photos-2021.parquet")
    assert hub_parquet(str(tmp_path)) is None


def test_an_empty_split_is_refused_by_name_and_skipped_by_all(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = Dataset.from_dict({"caption": ["a", "b"], "image": [b"x", b"y"]})
    DatasetDict({"train": rows, "test": rows.select([])}).save_to_disk(str(tmp_path / "dd"))
    rows.select([]).save_to_disk(str(tmp_path / "empty"))
    with pytest.raises(InputError, match="split 'test' of this DatasetDict folder holds no rows") as caught:
        resolve_inputs([str(tmp_path / "dd")], "test")
    assert caught.value.file == str(tmp_path / "dd")
    with pytest.raises(InputError, match="holds no rows"):
        resolve_inputs([str(tmp_path / "empty")])
    every = resolve_inputs([str(tmp_path / "dd")], "all")
    assert len(every.inputs) == 1 and any("'test' holds no rows: skipped" in note for note in every.notes)


def test_an_id_column_clash_names_the_file_that_holds_it(tmp_path):
    from datasets import ClassLabel, Dataset, Features, Value

    Dataset.from_dict({"image": [b"x"], "shape": [1]},
                      features=Features({"image": Value("binary"), "shape": ClassLabel(names=["a", "b"])})
                      ).save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "plain").mkdir()
    pq.write_table(pa.table({"image": [b"y"], "shape": ["b"], "shape_id": [1]}), tmp_path / "plain" / "t.parquet")
    with pytest.raises(InputError, match="'shape_id' is a column already") as caught:
        open_source([str(tmp_path / "saved"), str(tmp_path / "plain")])
    assert caught.value.file.endswith("t.parquet")


def test_images_held_two_ways_are_refused_before_any_model_loads(tmp_path):
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    (tmp_path / "a").mkdir()
    pq.write_table(pa.table({"image": pa.array([{"bytes": b"x", "path": None}], struct)}), tmp_path / "a" / "s.parquet")
    pq.write_table(pa.table({"image": [b"y"]}), tmp_path / "a" / "t.parquet")
    with pytest.raises(InputError, match="ingest each kind in a run of its own") as caught:
        open_source([str(tmp_path / "a")])
    assert caught.value.file.endswith(".parquet")
    assert open_source([str(tmp_path / "a")], skip_bad_files=True) is not None  # skipped when read, as before
