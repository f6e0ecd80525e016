"""Which folders hold splits, checked against ``datasets``' own resolution (review of issue 26): the Hub reads
``data/train.parquet`` and ``data/test/a.parquet`` as splits, so mmindex must not read them together as one
plain folder; an empty split is refused by name; a ClassLabel's ``<col>_id`` clash names the file holding the
column; files holding images two ways are refused before any model loads."""
from __future__ import annotations

import io
import json
import os
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from mmindex.errors import InputError, UsageError
from mmindex.pipeline.ingest.hf_layout import find_layout, resolve_inputs
from mmindex.pipeline.ingest.source import open_source

datasets = pytest.importorskip("datasets")

# datasets.data_files.SPLIT_KEYWORDS: each word → the split name datasets gives it
CANONICAL = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
             "dev": "validation", "val": "validation", "test": "test", "testing": "test", "eval": "test",
             "evaluation": "test"}
FORMS = ["{w}.parquet", "{w}/part-0.parquet", "{w}/sub/a.parquet", "my_{w}.parquet", "{w}_1.parquet",
         "{w}-part1.parquet", "{w}-00000-of-00001.parquet", "{w}/0000.parquet", "x-{w}.parquet", "{w}-2024/a.parquet",
         "notes.parquet", "part-0.parquet", "trainee.parquet", "_{w}/a.parquet", "{w}/_b.parquet", "__x/{w}.parquet", "__{w}.parquet",
         "custom-00000-of-00001.parquet", "other/0000.parquet", "partial-{w}/0000.parquet", "2021-{w}.parquet"]


def hub_parquet(folder: str):
    """The folder's splits as mmindex reads them (``find_layout``), None for plain Parquet."""
    return find_layout(folder)


def touch(root: str, relative: str) -> None:
    path = os.path.join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.table({"x": [1]}), path)


def datasets_splits(root: str) -> dict[str, list[str]]:
    """The oracle: the splits ``datasets`` itself resolves for a local folder (its default patterns)."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    found = DataFilesDict.from_patterns(get_data_patterns(root), base_path=root)
    return {str(name): sorted(files) for name, files in found.items()}


@settings(max_examples=150, deadline=None)
@given(prefix=st.sampled_from(["", "data/", "default/"]),
       files=st.lists(st.tuples(st.sampled_from(sorted(CANONICAL)), st.sampled_from(FORMS)), min_size=1, max_size=4,
                      unique_by=lambda item: item[1].format(w=item[0])))
def test_hub_splits_agree_with_datasets_own_resolution(prefix, files):
    """Differential property against ``datasets``' own resolution of a folder: a folder mmindex reads as splits holds
    the same files in the same splits under the same names; one it reads as plain Parquet is one datasets reads as
    a single train split of every file; one it refuses is one datasets would read leaving files out or one file in
    two splits, or one whose Hub file names (or configurations) say otherwise than datasets."""
    with tempfile.TemporaryDirectory() as root:
        paths = sorted(os.path.join(root, prefix + form.format(w=word)) for word, form in files)
        for path in paths:
            touch(root, os.path.relpath(path, root))
        read = sorted(p for p in paths  # datasets does not list what lies in __ folders
                      if not any(part.startswith("__") for part in os.path.relpath(p, root).split(os.sep)[:-1]))
        if not read:
            return  # nothing datasets lists: it refuses the folder, as mmindex finds no file in it
        expected = datasets_splits(root)
        try:
            layout = hub_parquet(root)
        except UsageError as refused:
            everywhere = sorted(p for group in expected.values() for p in group)
            assert everywhere != read or "datasets groups its files otherwise" in str(refused) \
                or "configurations" in str(refused), (files, expected, str(refused))
            return
        if layout is None:
            assert expected == {"train": read}, (files, expected)
            return
        assert {str(name): group for name, group in layout.splits.items()} == expected, (files, layout.splits)


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


def test_a_file_the_hub_would_leave_out_is_refused_and_a_glob_reads_all(tmp_path):
    touch(str(tmp_path), "train.parquet")
    touch(str(tmp_path), "photos-2021.parquet")
    with pytest.raises(UsageError, match=r"leaves 1 of its 2 Parquet files out of every split \(e.g. photos-2021"):
        resolve_inputs([str(tmp_path)])
    assert resolve_inputs([str(tmp_path / "*.parquet")]).inputs == [str(tmp_path / "*.parquet")]  # plain


def test_a_folder_without_split_words_is_plain_parquet(tmp_path):
    for name in ("part-0.parquet", "photos/2021.parquet", "trainee.parquet", "retrain.parquet"):
        touch(str(tmp_path), name)
    assert hub_parquet(str(tmp_path)) is None


@pytest.mark.parametrize("names, splits", [
    (("data/dev.parquet", "data/validation.parquet"), {"validation": 2}),  # one split, as datasets reads it
    (("data/val.parquet", "data/valid.parquet", "data/train.parquet"), {"train": 1, "validation": 2}),
    (("data/my_train.parquet", "data/my_test.parquet"), {"train": 1, "test": 1}),
    (("data/train_1.parquet", "data/test_1.parquet"), {"train": 1, "test": 1}),
    (("data/train-part1.parquet", "data/test-part1.parquet"), {"train": 1, "test": 1}),
    (("data/train/2024/a.parquet", "data/test/2024/b.parquet"), {"train": 1, "test": 1}),
])
def test_the_reviewers_layouts_are_read_as_datasets_reads_them(tmp_path, names, splits):
    for name in names:
        touch(str(tmp_path), name)
    layout = hub_parquet(str(tmp_path))
    assert {name: len(files) for name, files in layout.splits.items()} == splits
    assert {str(n): g for n, g in layout.splits.items()} == datasets_splits(str(tmp_path))


def test_split_aliases_pick_datasets_name(tmp_path):
    touch(str(tmp_path), "data/dev.parquet")
    touch(str(tmp_path), "data/train.parquet")
    assert resolve_inputs([str(tmp_path)], "dev").inputs == [str(tmp_path / "data" / "dev.parquet")]
    assert resolve_inputs([str(tmp_path)], "validation").inputs == [str(tmp_path / "data" / "dev.parquet")]


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
    with pytest.raises(InputError, match="'shape_id' is a column of this file already") as caught:
        open_source([str(tmp_path / "plain"), str(tmp_path / "saved")])
    assert caught.value.file.endswith("t.parquet")
    assert f"column 'shape' is a ClassLabel in {tmp_path / 'saved'}" in caught.value.message


def test_images_held_two_ways_are_refused_before_any_model_loads(tmp_path):
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    (tmp_path / "a").mkdir()
    pq.write_table(pa.table({"image": pa.array([{"bytes": b"x", "path": None}], struct)}), tmp_path / "a" / "s.parquet")
    pq.write_table(pa.table({"image": [b"y"]}), tmp_path / "a" / "t.parquet")
    with pytest.raises(InputError, match="ingest each kind in a run of its own") as caught:
        open_source([str(tmp_path / "a")])
    assert caught.value.file.endswith(".parquet")
    assert open_source([str(tmp_path / "a")], skip_bad_files=True) is not None  # skipped when read, as before


def test_class_label_integers_meet_the_recorded_type_of_their_id_field(tmp_path, tiny_model, cli):
    from datasets import ClassLabel, Dataset, Features, Value

    (tmp_path / "plain").mkdir()
    buffer = io.BytesIO()
    PILImage.new("RGB", (16, 16), "red").save(buffer, "PNG")
    image = buffer.getvalue()
    pq.write_table(pa.table({"image": [image], "caption": ["a"], "shape_id": ["s0"]}), tmp_path / "plain" / "p.parquet")
    Dataset.from_dict({"image": [image], "caption": ["b"], "shape": [1]},
                      features=Features({"image": Value("binary"), "caption": Value("string"),
                                         "shape": ClassLabel(names=["a", "b"])})).save_to_disk(str(tmp_path / "saved"))
    store = ("-c", "f3", "--data-dir", str(tmp_path / "store"), "--model", tiny_model)
    first = cli("ingest", tmp_path / "plain", *store)
    assert first.exit_code == 0, first.output
    second = cli("ingest", tmp_path / "saved", *store)
    assert second.exit_code == 1 and "payload field 'shape_id' is keyword in collection 'f3' but integer" in second.output


def test_a_named_source_with_a_split_keeps_the_split_in_its_name(tmp_path, tiny_model, cli):
    from datasets import Dataset, DatasetDict

    def rows(prefix, n):
        pngs = []
        for i in range(n):
            buffer = io.BytesIO()
            PILImage.new("RGB", (16, 16), (i * 40, 0, 0)).save(buffer, "PNG")
            pngs.append(buffer.getvalue())
        return Dataset.from_dict({"image": pngs, "caption": [f"{prefix} {i}" for i in range(n)]})

    for name in ("A", "B"):
        DatasetDict({"train": rows(f"{name} train", 3), "validation": rows(f"{name} val", 2)}).save_to_disk(
            str(tmp_path / name))
    store = ("-c", "s2", "--data-dir", str(tmp_path / "store"), "--model", tiny_model, "--source", "ds", "--json", "-q")
    first = cli("ingest", tmp_path / "A", tmp_path / "B", "--split", "train", *store)
    assert first.exit_code == 0, first.output
    synced = cli("ingest", tmp_path / "A", tmp_path / "B", "--split", "validation", "--sync", "--max-delete", "all",
                 *store)
    assert synced.exit_code == 0, synced.output
    summary = json.loads(synced.stdout)
    assert summary["deleted"] == 0 and summary["source"] == "ds#validation"
    listed = cli("info", "-c", "s2", "--data-dir", str(tmp_path / "store"), "--json")
    assert json.loads(listed.stdout)["points"] == 10


@pytest.mark.parametrize("names, splits", [
    (("train/a.parquet", "train/_b.parquet", "test/c.parquet"), {"train": 2, "test": 1}),  # datasets reads _b
    (("_x/train.parquet", "test.parquet"), {"train": 1, "test": 1}),
    (("2021-train.parquet", "2021-test.parquet", "2021-dev.parquet"), {"train": 1, "validation": 1, "test": 1}),
    (("x-training.parquet", "x-eval.parquet"), {"train": 1, "test": 1}),
    (("data/train-00000-of-00001.parquet", "data/validation-00000-of-00001.parquet",
      "data/dev-00000-of-00001.parquet"), {"train": 1, "validation": 1, "dev": 1}),  # datasets keeps these names
    (("data/custom-00000-of-00001.parquet", "data/other-00000-of-00001.parquet"), {"custom": 1, "other": 1}),
])
def test_the_fourth_reviews_layouts_are_read_as_datasets_reads_them(tmp_path, names, splits):
    for name in names:
        touch(str(tmp_path), name)
    layout = hub_parquet(str(tmp_path))
    assert {name: len(files) for name, files in layout.splits.items()} == splits
    assert {str(n): g for n, g in layout.splits.items()} == datasets_splits(str(tmp_path))


@pytest.mark.parametrize("names", [("cfg/custom-00000-of-00001.parquet", "cfg/other-00000-of-00001.parquet"),
                                   ("default/custom/0000.parquet", "default/other/0000.parquet")])
def test_hub_names_datasets_groups_otherwise_are_refused(tmp_path, names):
    for name in names:
        touch(str(tmp_path), name)
    with pytest.raises(UsageError, match="datasets groups its files otherwise \\(one split, train\\)"):
        hub_parquet(str(tmp_path))


def test_a_split_alias_reads_and_names_the_split_by_its_name(tmp_path):
    for name in ("2021-train.parquet", "2021-dev.parquet"):
        touch(str(tmp_path), name)
    for alias in ("dev", "validation"):
        picked = resolve_inputs([str(tmp_path)], alias)
        assert picked.inputs == [str(tmp_path / "2021-dev.parquet")] and picked.name.endswith("#validation")
        assert picked.split == "validation"


def test_a_lone_split_under_an_underscore_folder_is_read(tmp_path):
    touch(str(tmp_path), "_data/train-00000-of-00001.parquet")
    assert resolve_inputs([str(tmp_path)]).inputs == [str(tmp_path / "_data" / "train-00000-of-00001.parquet")]


@pytest.mark.parametrize("names, splits", [
    (("train.parquet", "__train.parquet"), {"train": 2}),  # datasets skips __ folders, not __ files
    (("train/a.parquet", "train/__b.parquet", "test/c.parquet"), {"train": 2, "test": 1}),
    (("data/train-00000-of-00001.parquet", "data/__extra-00000-of-00001.parquet"), {"train": 1, "__extra": 1}),
])
def test_the_fifth_reviews_layouts_are_read_as_datasets_reads_them(tmp_path, names, splits):
    for name in names:
        touch(str(tmp_path), name)
    layout = hub_parquet(str(tmp_path))
    assert {name: len(files) for name, files in layout.splits.items()} == splits
    assert {str(n): g for n, g in layout.splits.items()} == datasets_splits(str(tmp_path))


def test_a_lone_split_is_read_whole_whatever_plain_parquet_would_skip(tmp_path):
    touch(str(tmp_path), "train.parquet")
    touch(str(tmp_path), "__train.parquet")  # plain Parquet skips _ names; datasets reads it into train
    assert sorted(resolve_inputs([str(tmp_path)]).inputs) == [str(tmp_path / "__train.parquet"),
                                                               str(tmp_path / "train.parquet")]
    touch(str(tmp_path / "other"), "test.parquet")
    assert resolve_inputs([str(tmp_path / "other")]).inputs == [str(tmp_path / "other")]  # the folder, as before


def test_linked_folders_are_not_followed_as_datasets_does_not(tmp_path):
    touch(str(tmp_path / "ext"), "a.parquet")
    touch(str(tmp_path / "d"), "test.parquet")
    (tmp_path / "d" / "train").symlink_to(tmp_path / "ext")
    layout = hub_parquet(str(tmp_path / "d"))
    assert {str(n): g for n, g in layout.splits.items()} == datasets_splits(str(tmp_path / "d")) == {
        "test": [str(tmp_path / "d" / "test.parquet")]}


def test_a_split_name_datasets_refuses_is_refused(tmp_path):
    touch(str(tmp_path), "data/my-split-00000-of-00001.parquet")
    with pytest.raises(UsageError, match="names the split 'my-split', which datasets refuses"):
        hub_parquet(str(tmp_path))


def test_a_split_named_all_is_not_hidden_by_split_all(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = Dataset.from_dict({"caption": ["a"], "image": [b"x"]})
    DatasetDict({"all": rows, "train": rows}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(UsageError, match="has a split named 'all': to read that split alone, pass its files or folder"):
        resolve_inputs([str(tmp_path / "dd")], "all")


def test_files_of_two_numberings_say_what_datasets_would_do(tmp_path):
    touch(str(tmp_path), "train-2024/photos-2021.parquet")
    touch(str(tmp_path), "trainx/my_train/test-00000-of-00001.parquet")
    with pytest.raises(InputError, match="datasets would read them all as one split"):
        resolve_inputs([str(tmp_path)])
