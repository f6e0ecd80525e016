"""Data sets as Hugging Face ``datasets`` saves them: save_to_disk folders, DatasetDict splits, the Hub's Parquet
layouts and the local caches, with ``Image`` and ``ClassLabel`` features (pipeline/ingest/hf_layout.py,
arrow_shards.py, class_labels.py). Every folder here is written by ``datasets`` itself (needs the test extra's
``datasets``); the Hub layouts and caches are replicas under tmp_path, read offline."""
from __future__ import annotations

import io
import json
import os
import random
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from mmindex import IngestOptions, ingest
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.errors import InputError, UsageError
from mmindex.pipeline.ingest.class_labels import ClassLabel, label_arrays, label_schema, name_labels
from mmindex.pipeline.ingest.hf_layout import resolve_inputs
from mmindex.pipeline.ingest.source import open_source

datasets = pytest.importorskip("datasets")

NAMES = ["circle", "square", "triangle"]
TAGS = ["red", "green", "blue"]
COLORS = ["red", "green", "blue", "yellow", "purple", "orange"]
LABELS = [0, 2, -1, 1, 2, 0]
TAG_IDS = [[0], [1, 2], [], [2, 0], None, [1]]
REV = "0123456789abcdef0123456789abcdef01234567"
HF_VARIABLES = ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE", "XDG_CACHE_HOME")


def png(color: str, size: int = 24) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (size, size), color).save(buffer, "PNG")
    return buffer.getvalue()


def images() -> list[dict]:
    """Rows' images: bytes, except the last row's, a path relative to the data set's folder (REL.png)."""
    found = [{"bytes": png(color), "path": f"{color}.png"} for color in COLORS[:-1]]
    return found + [{"bytes": None, "path": "rel.png"}]


def features():
    from datasets import ClassLabel as HFClassLabel, Features, Image, List, Value

    return Features({"image": Image(), "caption": Value("string"), "shape": HFClassLabel(names=NAMES),
                     "tags": List(HFClassLabel(names=TAGS))})


def hf_dataset(rows: slice = slice(None), prefix: str = "a"):
    """The rows as a ``datasets.Dataset`` (made where rel.png is: datasets reads relative paths from the cwd)."""
    from datasets import Dataset

    return Dataset.from_dict({"image": images()[rows], "caption": [f"{prefix} {c} shape" for c in COLORS][rows],
                              "shape": LABELS[rows], "tags": [t or [] for t in TAG_IDS][rows]}, features=features())


def plain_table() -> pa.Table:
    """The same rows as plain Parquet holds them: names as strings, the integers in ``<col>_id``."""
    def name(i):
        return None if i == -1 else NAMES[i]
    return pa.table({
        "image": images(), "caption": [f"a {c} shape" for c in COLORS],
        "shape": [name(i) for i in LABELS], "shape_id": [None if i == -1 else i for i in LABELS],
        "tags": [[TAGS[i] for i in t] for t in (t or [] for t in TAG_IDS)],
        "tags_id": [list(t or []) for t in TAG_IDS],
    })


def save_dataset(folder, num_shards: int = 1):
    """``hf_dataset()`` saved by ``save_to_disk`` into folder/saved (built in ``folder``, where its rel.png is)."""
    here = os.getcwd()
    os.chdir(folder)
    try:
        (folder / "rel.png").write_bytes(png("purple"))
        hf_dataset().save_to_disk(str(folder / "saved"), num_shards=num_shards)
    finally:
        os.chdir(here)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """Each way of holding the same six rows: {kind: (input, split)}; HF_HOME for the cache kinds."""
    root = tmp_path_factory.mktemp("hf")
    here = os.getcwd()
    os.chdir(root)
    try:
        (root / "rel.png").write_bytes(png(COLORS[-1]))
        ds = hf_dataset()
        found = {}
        plain = root / "plain"
        plain.mkdir()
        pq.write_table(plain_table(), plain / "rows.parquet")
        shutil.copy(root / "rel.png", plain / "rel.png")
        found["plain"] = (str(plain), None)
        ds.save_to_disk(str(root / "saved"), num_shards=2)
        found["save_to_disk"] = (str(root / "saved"), None)
        datasets.DatasetDict({"train": ds, "test": hf_dataset(slice(0, 2), "another")}).save_to_disk(str(root / "dict"))
        found["DatasetDict"] = (str(root / "dict"), "train")
        hub = root / "hub-layout"
        write_hub_layout(ds, hub, "data/{split}-{i:05d}-of-00002.parquet")
        found["Hub data/"] = (str(hub), "train")
        converted = root / "converted"
        write_hub_layout(ds, converted, "default/{split}/{i:04d}.parquet")
        found["refs/convert/parquet"] = (str(converted), "train")
        older = root / "older"
        write_hub_layout(ds, older, "default/shapes-{split}-{i:05d}-of-00002.parquet")
        found["older refs/convert"] = (str(older), "train")
        home = root / "home"
        write_hub_layout(ds, home / "hub" / "datasets--acme--shapes" / "snapshots" / REV,
                         "data/{split}-{i:05d}-of-00002.parquet")
        as_blobs(home / "hub" / "datasets--acme--shapes", REV)
        (home / "hub" / "datasets--acme--shapes" / "refs").mkdir(parents=True)
        (home / "hub" / "datasets--acme--shapes" / "refs" / "main").write_text(REV)
        found["hub cache"] = ("acme/shapes", "train")
        write_datasets_cache(root / "saved", home / "datasets" / "acme___prepared" / "default" / "0.0.0" / "f00d")
        found["datasets cache"] = ("acme/prepared", "train")
        return found, home
    finally:
        os.chdir(here)


def write_hub_layout(ds, folder, pattern: str) -> None:
    """``to_parquet`` of the rows in two shards per split (train, and a validation split of two rows) named as the
    Hub names them, and rel.png in the data set's folder."""
    for split, rows in (("train", ds), ("validation", ds.select(range(2)))):
        half = (len(rows) + 1) // 2
        for i, part in enumerate((rows.select(range(half)), rows.select(range(half, len(rows))))):
            path = folder / pattern.format(split=split, i=i)
            path.parent.mkdir(parents=True, exist_ok=True)
            part.to_parquet(str(path))
    shutil.copy("rel.png", folder / "rel.png")  # made in the cwd, where datasets read it from


def as_blobs(repo, revision: str) -> None:
    """Each file of the snapshot moved to ``blobs/`` and linked back, as huggingface_hub's cache keeps them."""
    (repo / "blobs").mkdir()
    for number, path in enumerate(sorted((repo / "snapshots" / revision).rglob("*.parquet"))):
        blob = repo / "blobs" / f"blob{number}"
        path.rename(blob)
        path.symlink_to(os.path.relpath(blob, path.parent))


def write_datasets_cache(saved, folder) -> None:
    """A prepared copy as ``datasets`` caches it: ``{name}-{split}-NNNNN-of-NNNNN.arrow`` + dataset_info.json."""
    folder.mkdir(parents=True)
    for i, shard in enumerate(sorted(saved.glob("data-*.arrow"))):
        shutil.copy(shard, folder / f"prepared-train-{i:05d}-of-00002.arrow")
    info = json.loads((saved / "dataset_info.json").read_text())
    info["splits"] = {"train": {"name": "train", "num_examples": 6, "shard_lengths": [3, 3]}}
    (folder / "dataset_info.json").write_text(json.dumps(info))


@pytest.fixture
def hf_home(layouts, monkeypatch):
    for name in HF_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(layouts[1]))
    return layouts[1]


def points_of(store) -> dict:
    """{id: (payload without where it was read from, vectors)}; ``_source.path`` (the image's path) is kept."""
    found, offset = {}, None
    while True:
        page, offset = store.scroll(limit=64, offset=offset, with_vectors=True)
        for point in page:
            payload = dict(point.payload)
            payload["_source"] = {"path": payload["_source"].get("path")}
            found[point.id] = (payload, point.vectors)
        if offset is None:
            return found


def ingested(tmp_path, encoder, name: str, split: str | None) -> tuple[dict, object]:
    store = QdrantEdgeStore("shapes", data_dir=str(tmp_path / "store"))
    try:
        summary = ingest([name], store, encoder, IngestOptions(split=split, batch_size=8))
        return points_of(store), summary
    finally:
        store.close()


@pytest.fixture(scope="module")
def from_plain(layouts, encoder, tmp_path_factory):
    source, _ = layouts[0]["plain"]
    return ingested(tmp_path_factory.mktemp("plain"), encoder, source, None)[0]


@pytest.mark.parametrize("kind", ["save_to_disk", "DatasetDict", "Hub data/", "refs/convert/parquet",
                                  "older refs/convert", "hub cache", "datasets cache"])
def test_each_layout_gives_the_points_of_plain_parquet(layouts, hf_home, from_plain, encoder, tmp_path, kind):
    source, split = layouts[0][kind]
    points, summary = ingested(tmp_path, encoder, source, split)
    assert (summary.read, summary.upserted, summary.rejected) == (6, 6, 0), summary.rejections
    assert sorted(points) == sorted(from_plain)  # point ids come from content: the same bytes and captions
    assert {i: p for i, (p, _) in points.items()} == {i: p for i, (p, _) in from_plain.items()}  # names, ids, path
    for point_id, (_, vectors) in points.items():  # the same inputs; batches of other sizes round differently
        assert vectors.keys() == from_plain[point_id][1].keys()
        for name, vector in vectors.items():
            want = from_plain[point_id][1][name]
            if isinstance(vector, list):  # dense: a forward pass; sparse (keywords) are counts, equal
                assert np.allclose(vector, want, rtol=0, atol=1e-6), (point_id, name)
            else:
                assert vector == want, (point_id, name)
    payloads = sorted((p["caption"], p["shape"], p["shape_id"], p["tags"]) for p, _ in points.values())
    assert ("a purple shape", "triangle", 2, []) in payloads
    assert ("a blue shape", None, None, []) in payloads  # -1: no label


def test_the_plain_rows_are_the_oracle(from_plain):
    """The reference itself holds what the names say (so the comparison above can fail)."""
    assert len(from_plain) == 6
    shapes = sorted((p["caption"], p["shape"], p["shape_id"], p["tags"], p["tags_id"]) for p, _ in from_plain.values())
    assert shapes[0] == ("a blue shape", None, None, [], [])
    assert ("a green shape", "triangle", 2, ["green", "blue"], [1, 2]) in shapes


def oracle(values, names):
    """Plain Python: -1 and null → (None, None); 0 … n-1 → (name, i); anything else → (None, None) and bad."""
    out, bad = [], []
    for value in values:
        if value is None or value == -1:
            out.append((None, None))
        elif 0 <= value < len(names):
            out.append((names[value], value))
        else:
            out.append((None, None))
            bad.append(value)
    return out, bad


# Every Arrow list kind a Sequence/List(ClassLabel) column can be read as (fixed_size_list: Sequence(…, length=n)).
LIST_KINDS = ["list_", "large_list", "fixed_size_list"] + [k for k in ("list_view", "large_list_view") if hasattr(pa, k)]
label_names = st.lists(st.text(min_size=1, max_size=6), min_size=0, max_size=5, unique=True)


@settings(max_examples=150, deadline=None)
@given(names=label_names, data=st.data())
def test_class_label_mapping_matches_a_plain_python_oracle(names, data):
    value = st.one_of(st.none(), st.integers(-3, len(names) + 2))
    flat = data.draw(st.lists(value, max_size=12))
    got_names, got_ids, bad = label_arrays(pa.array(flat, pa.int64()), ClassLabel("c", tuple(names)))
    want, want_bad = oracle(flat, names)
    assert list(zip(got_names.to_pylist(), got_ids.to_pylist())) == want
    assert [value for _, value in bad] == want_bad and all(flat[row] == v for row, v in bad)

    kind = data.draw(st.sampled_from(LIST_KINDS))
    width = data.draw(st.integers(0, 3)) if kind == "fixed_size_list" else None
    items = st.lists(value, min_size=width or 0, max_size=4 if width is None else width)
    lists = data.draw(st.lists(st.one_of(st.none(), items), max_size=8))
    start = data.draw(st.integers(0, len(lists)))
    arrow_type = pa.list_(pa.int64(), width) if width is not None else getattr(pa, kind)(pa.int64())
    column = pa.array(lists, arrow_type).slice(start)  # a slice: offsets that do not start at 0
    assert label_schema(pa.schema([("c", arrow_type)]), {"c": ClassLabel("c", tuple(names), many=True)})[1]
    got_names, got_ids, bad = label_arrays(column, ClassLabel("c", tuple(names), many=True))
    expected_names, expected_ids, expected_bad = [], [], []
    for row, items in enumerate(lists[start:]):
        if items is None:
            expected_names.append(None)
            expected_ids.append(None)
            continue
        mapped, wrong = oracle(items, names)
        expected_names.append([n for n, _ in mapped])
        expected_ids.append([i for _, i in mapped])
        expected_bad += [(row, v) for v in wrong]
    assert got_names.to_pylist() == expected_names and got_ids.to_pylist() == expected_ids
    assert bad == expected_bad


def test_name_labels_keeps_other_columns_and_names_the_field():
    batch = pa.record_batch({"x": [1, 2], "label": [1, 5]})
    named, errors = name_labels(batch, {"label": ClassLabel("label", ("a", "b"))})
    assert named.schema.names == ["x", "label", "label_id"]
    assert named.to_pylist() == [{"x": 1, "label": "b", "label_id": 1}, {"x": 2, "label": None, "label_id": None}]
    assert list(errors) == [1] and "field 'label'" in errors[1] and "class label 5" in errors[1]


# --- splits, names and the sync --------------------------------------------------------------------------------

def test_split_all_reads_every_split_into_the_split_field(layouts):
    source = open_source([layouts[0]["DatasetDict"][0]], split="all")
    rows = [row for batch in source.batches(16) for row in batch.batch.to_pylist()]
    assert [row["split"] for row in rows] == ["train"] * 6 + ["test"] * 2
    assert source.default_name() == layouts[0]["DatasetDict"][0]


def test_source_names_carry_the_split_and_the_hub_name(layouts, hf_home):
    folder, _ = layouts[0]["DatasetDict"]
    assert open_source([folder], split="test").default_name() == f"{folder}#test"
    assert open_source(["acme/shapes"], split="train").default_name() == "hf://datasets/acme/shapes#train"
    assert open_source([layouts[0]["save_to_disk"][0]]).default_name() == layouts[0]["save_to_disk"][0]


def test_a_plain_parquet_folder_is_read_as_before(sample_dir):
    resolved = resolve_inputs([str(sample_dir)])
    assert resolved.inputs == [str(sample_dir)] and resolved.name is None and not resolved.image_folders


def test_sync_of_one_split_keeps_the_others_and_a_rerun_changes_nothing(layouts, encoder, tmp_path):
    folder, _ = layouts[0]["DatasetDict"]
    store = QdrantEdgeStore("shapes", data_dir=str(tmp_path / "store"))
    try:
        ingest([folder], store, encoder, IngestOptions(split="train", sync=True))
        test = ingest([folder], store, encoder, IngestOptions(split="test", sync=True))
        assert (test.upserted, test.deleted) == (2, 0)  # the train split is another source: kept
        again = ingest([folder], store, encoder, IngestOptions(split="train", sync=True))
        assert (again.read, again.unchanged, again.embedded, again.deleted) == (6, 6, 0, 0)
        assert store.count() == 8
    finally:
        store.close()


def test_a_shard_rewritten_after_listing_is_refused(tmp_path):
    save_dataset(tmp_path)
    source = open_source([str(tmp_path / "saved")])
    shard = next((tmp_path / "saved").glob("*.arrow"))
    shard.write_bytes(shard.read_bytes() + b"\0" * 8)
    with pytest.raises(InputError, match="changed after the run listed it") as caught:
        list(source.batches(4))
    assert caught.value.file.endswith(shard.name)


# --- bad inputs: one line each ---------------------------------------------------------------------------------

def test_a_datasetdict_without_split_is_refused_listing_the_splits(layouts, cli, tiny_model):
    result = cli("ingest", layouts[0]["DatasetDict"][0], "-c", "x", "--model", tiny_model)
    assert result.exit_code == 2
    assert "2 splits (train, test)" in result.output and "--split train" in result.output


def test_an_unknown_split_is_refused_listing_the_known_ones(layouts):
    with pytest.raises(UsageError, match=r"--split extra: .* no such split \(its splits: train, validation\)"):
        open_source([layouts[0]["Hub data/"][0]], split="extra")  # (dev is datasets' alias of validation)


def test_split_on_plain_parquet_is_refused(sample_dir):
    with pytest.raises(UsageError, match="no input is a data set with splits"):
        open_source([str(sample_dir)], split="train")


def test_an_id_column_clash_is_refused(tmp_path):
    table = hf_dataset_table().append_column("shape_id", pa.array([7] * 6))
    pq.write_table(table, tmp_path / "clash.parquet")
    with pytest.raises(InputError, match="'shape_id' is a column of this file already") as caught:
        open_source([str(tmp_path / "clash.parquet")])
    assert caught.value.file.endswith("clash.parquet")


def hf_dataset_table() -> pa.Table:
    """The rows as ``datasets`` stores them (integers, the features in the schema metadata), images as bytes."""
    table = pa.table({"image": [{"bytes": png(c), "path": None} for c in COLORS], "caption": COLORS,
                      "shape": LABELS, "tags": [t or [] for t in TAG_IDS]})
    meta = {"info": {"features": features().to_dict()}}
    return table.replace_schema_metadata({b"huggingface": json.dumps(meta).encode()})


def test_a_label_outside_the_names_rejects_its_row_naming_file_row_and_field(tmp_path, encoder):
    table = hf_dataset_table()
    table = table.set_column(2, "shape", pa.array([0, 1, 9, 2, 0, 1])).replace_schema_metadata(table.schema.metadata)
    pq.write_table(table, tmp_path / "bad.parquet")
    store = QdrantEdgeStore("x", data_dir=str(tmp_path / "store"))
    try:
        summary = ingest([str(tmp_path / "bad.parquet")], store, encoder)
    finally:
        store.close()
    assert (summary.read, summary.upserted, summary.rejected) == (6, 5, 1)
    (rejection,) = summary.rejections
    assert rejection.file.endswith("bad.parquet") and rejection.row == 2
    assert "field 'shape': class label 9 is not one of the 3 names" in rejection.reason


def test_a_hub_name_not_cached_names_where_it_looked(tmp_path, monkeypatch, cli, tiny_model):
    for name in HF_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    with pytest.raises(InputError) as caught:
        open_source(["acme/missing"])
    message = str(caught.value)
    assert str(tmp_path / "home" / "hub" / "datasets--acme--missing") in message
    assert str(tmp_path / "home" / "datasets" / "acme___missing") in message
    assert "hf download --repo-type dataset acme/missing" in message and "save_to_disk" in message
    result = cli("ingest", "acme/missing", "-c", "x", "--model", tiny_model)
    assert result.exit_code == 1 and "\n" not in result.output.strip() and "Traceback" not in result.output


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_corrupt_arrow_shard_is_a_clear_error_naming_the_file(tmp_path, cli, tiny_model, damage):
    save_dataset(tmp_path)
    shard = next((tmp_path / "saved").glob("*.arrow"))
    data = shard.read_bytes()
    shard.write_bytes({"truncated": data[: len(data) * 2 // 3], "garbage": random.Random(0).randbytes(len(data)), "empty": b""}[damage])
    with pytest.raises(InputError, match="not a readable Arrow IPC shard") as caught:
        open_source([str(tmp_path / "saved")])
    assert caught.value.file == str(shard)
    result = cli("ingest", tmp_path / "saved", "-c", "x", "--model", tiny_model)
    assert result.exit_code == 1 and shard.name in result.output and "Traceback" not in result.output


def test_skip_bad_files_skips_a_corrupt_shard_and_reads_the_others(tmp_path):
    save_dataset(tmp_path, num_shards=2)
    first = sorted((tmp_path / "saved").glob("*.arrow"))[0]
    first.write_bytes(first.read_bytes()[:100])
    source = open_source([str(tmp_path / "saved")], skip_bad_files=True)
    batches = list(source.batches(8, skip_bad_files=True))
    assert [(b.file == str(first), b.batch is None) for b in batches] == [(True, True), (False, False)]
    assert "not a readable Arrow IPC shard" in batches[0].error and batches[1].batch.num_rows == 3


def test_evaluate_reads_the_split_it_is_given(layouts, encoder):
    from mmindex.pipeline.training.evaluate import evaluate

    report = evaluate([layouts[0]["DatasetDict"][0]], encoder, split="test")
    assert (report["images"], report["captions"], report["rejected"]) == (2, 2, 0)


@pytest.mark.slow
def test_eval_command_reads_the_split_it_is_given(layouts, cli, tiny_model):
    result = cli("eval", layouts[0]["DatasetDict"][0], "--split", "test", "--model", tiny_model, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["images"], report["captions"]) == (2, 2)


def test_names_come_from_dataset_info_json_when_the_file_has_no_features(layouts, tmp_path):
    table = hf_dataset_table().replace_schema_metadata(None)
    pq.write_table(table, tmp_path / "rows.parquet")
    shutil.copy(os.path.join(layouts[0]["save_to_disk"][0], "dataset_info.json"), tmp_path / "dataset_info.json")
    rows = [row for batch in open_source([str(tmp_path / "rows.parquet")]).batches(8) for row in batch.batch.to_pylist()]
    assert [(r["shape"], r["shape_id"], r["tags"]) for r in rows[:2]] == [("circle", 0, ["red"]),
                                                                          ("triangle", 2, ["green", "blue"])]
    (tmp_path / "dataset_info.json").unlink()
    rows = [row for batch in open_source([str(tmp_path / "rows.parquet")]).batches(8) for row in batch.batch.to_pylist()]
    assert rows[0]["shape"] == 0 and "shape_id" not in rows[0]  # no features anywhere: integers, as written


def test_each_way_datasets_writes_a_list_of_class_labels_is_understood():
    from mmindex.pipeline.ingest.class_labels import class_labels

    label = {"_type": "ClassLabel", "names": ["a", "b"]}
    found = class_labels({"one": label, "seq": {"_type": "Sequence", "feature": label}, "list": {"_type": "List",
                          "feature": label}, "old": [label], "text": {"_type": "Value", "dtype": "string"}})
    assert found == {"one": ClassLabel("one", ("a", "b")), "seq": ClassLabel("seq", ("a", "b"), True),
                     "list": ClassLabel("list", ("a", "b"), True), "old": ClassLabel("old", ("a", "b"), True)}
