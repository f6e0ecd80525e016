"""Scheduled runs leave the collection equal to its source: deletes (--sync), edits, moved
images, later thumbnails, id rules, and sources that share a collection.

Every test asserts exact point counts, ids and payloads after the second run; the central
one compares a --sync run after deletes, edits and moves with a fresh ingest of the new
source (ids, payloads, vectors within 1e-5), with and without an id column, on both stores.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import ROOT
from helpers.samples import all_rows

from mmindex import IngestOptions, ingest
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.qdrant_server import QdrantServerStore
from mmindex.connectors.queries import SparseVector
from mmindex.errors import CollectionMismatchError
from mmindex.pipeline.ingest.images import THUMBNAIL_KEY
from mmindex.pipeline.ingest.records import content_hash, point_id_from_key
from mmindex.pipeline.ingest.sample import write_sample

# These tests delete a quarter or more of a source on purpose: the --max-delete guard (default 10%) has tests of its
# own (tests/ingest/test_sync_guard.py).
FAST = dict(batch_size=16, workers=1, optimize=False, max_delete="all")


class Stores:
    """Opens one collection again for each run (the embedded store, or one shared in-memory server)."""

    def __init__(self, kind, folder):
        self.kind, self.folder = kind, folder
        self.client = None
        if kind == "memory":
            from qdrant_client import QdrantClient

            self.client = QdrantClient(":memory:")

    def open(self, name="c"):
        if self.kind == "edge":
            return QdrantEdgeStore(name, data_dir=self.folder)
        return QdrantServerStore(name, url=":memory:", client=self.client)

    def run(self, data, encoder, name="c", **options):
        store = self.open(name)
        try:
            inputs = [str(d) for d in data] if isinstance(data, (list, tuple)) else [str(data)]
            return ingest(inputs, store, encoder, IngestOptions(**{**FAST, **options}))
        finally:
            if self.kind == "edge":
                store.close()

    def points(self, name="c", vectors=False):
        store = self.open(name)
        try:
            found, offset = {}, None
            while True:
                page, offset = store.scroll(limit=256, offset=offset, with_vectors=vectors)
                found.update((p.id, p) for p in page)
                if offset is None:
                    return found
        finally:
            if self.kind == "edge":
                store.close()


@pytest.fixture(params=["edge", "memory"])
def stores(request, tmp_path):
    return Stores(request.param, tmp_path / "store")


def edge(tmp_path):
    return Stores("edge", tmp_path / "store")


def rewrite(path, change):
    """Read a Parquet file as rows, let ``change`` edit the list, write it back."""
    table = pq.read_table(path)
    rows = change(table.to_pylist())
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)


def drop_column(folder, name):
    for path in sorted(folder.glob("*.parquet")):
        table = pq.read_table(path)
        pq.write_table(table.drop_columns([name]), path)


def ids_of(rows):
    return {point_id_from_key(row["id"]) for row in rows}


def test_deleted_rows_are_stale_until_sync_deletes_exactly_them(tmp_path, encoder, stores):
    data = tmp_path / "d"
    write_sample(data, rows=40, seed=5, files=2, width=32, height=32)
    first = stores.run(data, encoder)
    assert (first.upserted, first.stale, first.deleted) == (40, 0, 0)
    rewrite(data / "part-00001.parquet", lambda rows: rows[10:])
    plain = stores.run(data, encoder)
    # The rows after the deleted ones moved up: their _source.row is updated, nothing embedded.
    assert (plain.read, plain.embedded, plain.unchanged, plain.payload_updated) == (30, 0, 20, 10)
    assert (plain.stale, plain.deleted) == (10, 0)
    assert len(stores.points()) == 40  # without --sync nothing is deleted, only counted
    synced = stores.run(data, encoder, sync=True)
    assert (synced.read, synced.unchanged, synced.embedded, synced.deleted, synced.stale) == (30, 30, 0, 10, 0)
    assert set(stores.points()) == ids_of(all_rows(data))
    again = stores.run(data, encoder, sync=True)
    assert (again.deleted, again.stale) == (0, 0) and len(stores.points()) == 30


@pytest.mark.parametrize("id_column", [True, False], ids=["id-column", "content-ids"])
def test_sync_after_deletes_edits_and_moves_equals_a_fresh_ingest(tmp_path, encoder, stores, id_column):
    data = tmp_path / "d"
    write_sample(data, rows=24, seed=6, files=2, width=32, height=32, image_kind="path", image_format="png")
    if not id_column:
        drop_column(data, "id")
    stores.run(data, encoder, sync=True, source_name="photos")
    assert len(stores.points()) == 24
    images = data / "images"
    # Two files swap names (the rows follow their pictures), one file moves to a subfolder,
    # a caption typo is fixed, a payload column is edited, two rows are deleted.
    first = pq.read_table(data / "part-00000.parquet").to_pylist()
    a, b = first[0]["image"], first[1]["image"]
    os.rename(data / a, images / "tmp.png")
    os.rename(data / b, data / a)
    os.rename(images / "tmp.png", data / b)
    (images / "moved").mkdir()
    c = first[2]["image"]
    os.rename(data / c, images / "moved" / os.path.basename(c))

    def edit(rows):
        rows[0]["image"], rows[1]["image"] = b, a
        rows[2]["image"] = f"images/moved/{os.path.basename(c)}"
        rows[3]["caption"] = rows[3]["caption"] + " (fixed)"
        rows[4]["color"] = "ultraviolet"
        return rows[:-2]

    rewrite(data / "part-00000.parquet", edit)
    synced = stores.run(data, encoder, sync=True, source_name="photos")
    assert synced.embedded == 1  # only the fixed caption; moves and the column edit keep their vectors
    assert synced.payload_updated == 4  # two swapped paths, one moved file, one edited column
    assert synced.deleted == (2 if id_column else 3)  # content ids: the typo's old point goes too
    fresh = Stores(stores.kind, tmp_path / "fresh")
    fresh.run(data, encoder, name="c", source_name="photos")
    got, want = stores.points(vectors=True), fresh.points(vectors=True)
    assert set(got) == set(want) and len(got) == 22
    for point_id, point in want.items():
        assert got[point_id].payload == point.payload, point_id
        assert set(got[point_id].vectors) == set(point.vectors)
        for name, vector in point.vectors.items():
            if isinstance(vector, SparseVector):  # the keyword vector: the same tokens and weights
                assert got[point_id].vectors[name] == vector, point_id
                continue
            np.testing.assert_allclose(got[point_id].vectors[name], vector, atol=1e-5)
    # Each point's stored path holds the picture its vectors were made from (its content hash says so).
    for point in got.values():
        picture = (data / point.payload["_source"]["path"]).read_bytes()
        assert content_hash(picture, point.payload.get("caption"), encoder.identity) == point.payload["_hash"]


def test_fixing_a_caption_typo_without_an_id_column_keeps_one_point(tmp_path, encoder):
    stores = edge(tmp_path)
    data = tmp_path / "d"
    write_sample(data, rows=10, seed=7, width=32, height=32)
    drop_column(data, "id")
    stores.run(data, encoder)
    rewrite(data / "part-00000.parquet", lambda rows: [{**r, "caption": r["caption"] + "!"} if i == 0 else r
                                                       for i, r in enumerate(rows)])
    plain = stores.run(data, encoder)
    assert (plain.embedded, plain.stale) == (1, 1) and len(stores.points()) == 11
    synced = stores.run(data, encoder, sync=True)
    assert synced.deleted == 1 and len(stores.points()) == 10
    captions = sorted(p.payload["caption"] for p in stores.points().values())
    assert captions == sorted(r["caption"] for r in all_rows(data))


def test_changing_the_id_column_is_refused_then_rebuilt_with_sync(tmp_path, encoder, stores):
    data = tmp_path / "d"
    write_sample(data, rows=12, seed=8, width=32, height=32)
    table = pq.read_table(data / "part-00000.parquet")
    table = table.append_column("sku", pa.array([f"sku-{i}" for i in range(table.num_rows)]))
    pq.write_table(table, data / "part-00000.parquet")
    stores.run(data, encoder, id_col="id")
    with pytest.raises(CollectionMismatchError, match=r"from column 'id'.*from column 'sku'.*--id-col id.*--sync"):
        stores.run(data, encoder, id_col="sku")
    assert set(stores.points()) == {point_id_from_key(r["id"]) for r in table.to_pylist()}
    rebuilt = stores.run(data, encoder, id_col="sku", sync=True)
    assert (rebuilt.upserted, rebuilt.deleted) == (12, 12)
    assert set(stores.points()) == {point_id_from_key(f"sku-{i}") for i in range(12)}
    assert stores.run(data, encoder, id_col="sku").unchanged == 12  # the new rule is recorded


def test_thumbnails_asked_later_are_added_without_embedding(tmp_path, encoder, stores):
    data = tmp_path / "d"
    write_sample(data, rows=10, seed=9, width=48, height=40)
    stores.run(data, encoder)
    assert not any(THUMBNAIL_KEY in p.payload for p in stores.points().values())
    later = stores.run(data, encoder, thumbnails=24)
    assert (later.embedded, later.payload_updated, later.unchanged) == (0, 10, 0)
    thumbs = {i: p.payload[THUMBNAIL_KEY] for i, p in stores.points().items()}
    assert len(thumbs) == 10 and all(thumbs.values())
    assert stores.run(data, encoder, thumbnails=24).unchanged == 10  # the stored ones fit
    assert stores.run(data, encoder).unchanged == 10  # a run without --thumbnails keeps them
    bigger = stores.run(data, encoder, thumbnails=32)
    assert bigger.payload_updated == 10
    assert all(p.payload[THUMBNAIL_KEY] != thumbs[i] for i, p in stores.points().items())


def test_new_payload_column_updates_payload_only(tmp_path, encoder, stores):
    data = tmp_path / "d"
    write_sample(data, rows=8, seed=10, width=32, height=32)
    stores.run(data, encoder)
    table = pq.read_table(data / "part-00000.parquet")
    pq.write_table(table.append_column("rating", pa.array(range(8), pa.int64())), data / "part-00000.parquet")
    summary = stores.run(data, encoder)
    assert (summary.embedded, summary.payload_updated) == (0, 8)
    assert sorted(p.payload["rating"] for p in stores.points().values()) == list(range(8))


def test_two_sources_share_a_collection_and_sync_only_their_own(tmp_path, encoder, stores):
    one, two = tmp_path / "one", tmp_path / "two"
    write_sample(one, rows=10, seed=11, width=32, height=32)
    write_sample(two, rows=10, seed=12, width=32, height=32, start_index=100)
    stores.run(one, encoder, source_name="one")
    stores.run(two, encoder, source_name="two")
    assert len(stores.points()) == 20
    rewrite(one / "part-00000.parquet", lambda rows: rows[:6])
    synced = stores.run(one, encoder, source_name="one", sync=True)
    assert synced.deleted == 4
    assert set(stores.points()) == ids_of(all_rows(one)) | ids_of(all_rows(two))
    names = {p.payload["_source"]["name"] for p in stores.points().values()}
    assert names == {"one", "two"}


def test_default_source_name_is_the_inputs_as_absolute_paths(tmp_path, encoder, monkeypatch):
    stores = edge(tmp_path)
    data = tmp_path / "d"
    write_sample(data, rows=4, seed=13, width=32, height=32)
    monkeypatch.chdir(tmp_path)
    summary = stores.run("d", encoder)
    assert summary.source == str(data)
    assert {p.payload["_source"]["name"] for p in stores.points().values()} == {str(data)}
    store = stores.open()
    assert list(store.metadata()["sources"]) == [str(data)]
    store.close()


def test_rejected_rows_keep_their_points_and_unreadable_files_stop_the_sync(tmp_path, encoder, stores):
    data = tmp_path / "d"
    write_sample(data, rows=12, seed=14, files=2, width=32, height=32)
    stores.run(data, encoder)
    rewrite(data / "part-00000.parquet", lambda rows: [{**r, "image": b"not an image"} if i == 0 else r
                                                       for i, r in enumerate(rows)])
    summary = stores.run(data, encoder, sync=True)
    assert (summary.rejected, summary.deleted) == (1, 0) and len(stores.points()) == 12
    rewrite(data / "part-00000.parquet", lambda rows: rows[2:])  # two rows really gone…
    (data / "part-00001.parquet").write_bytes(b"PAR1 broken PAR1")  # …but a file cannot be read
    summary = stores.run(data, encoder, sync=True, skip_bad_files=True)
    assert summary.deleted == 0 and summary.stale is None and len(stores.points()) == 12
    assert "--sync deleted nothing: 1 input file(s)" in summary.warnings[0]
    assert "part-00001.parquet" in summary.warnings[0]


def test_dry_run_counts_and_writes_nothing(tmp_path, encoder, stores):
    data = tmp_path / "d"
    write_sample(data, rows=12, seed=15, width=32, height=32)
    stores.run(data, encoder)
    before = stores.points(vectors=True)

    def edit(rows):
        rows[0]["caption"] += " edited"
        rows[1]["color"] = "ultraviolet"
        return rows[:-3]

    rewrite(data / "part-00000.parquet", edit)
    plan = stores.run(data, encoder, sync=True, dry_run=True, thumbnails=16)
    assert plan.dry_run and (plan.upserted, plan.payload_updated, plan.unchanged, plan.deleted) == (1, 8, 0, 3)
    assert plan.embedded == 0
    after = stores.points(vectors=True)
    assert {i: (p.payload, p.vectors) for i, p in after.items()} == {i: (p.payload, p.vectors) for i, p in
                                                                    before.items()}
    fresh = Stores(stores.kind, tmp_path / "none")
    plan = fresh.run(data, encoder, name="absent", dry_run=True)
    assert (plan.upserted, plan.stale) == (9, 0)
    if stores.kind == "edge":
        assert not (tmp_path / "none" / "absent").exists()


def test_a_sync_killed_while_deleting_converges_when_run_again(tmp_path, tiny_model):
    data, data_dir = tmp_path / "d", tmp_path / "store"
    write_sample(data, rows=30, seed=16, width=32, height=32)
    base = ["ingest", str(data), "-c", "k", "--data-dir", str(data_dir), "--model", tiny_model, "--device", "cpu",
            "--no-optimize", "--json", "-q"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    root = ROOT
    subprocess.run([sys.executable, "-m", "mmindex", *base], check=True, env=env, cwd=root, capture_output=True)
    rewrite(data / "part-00000.parquet", lambda rows: rows[:10])
    # The same CLI, with deletes of 2 ids per request and a pause after the first request.
    script = tmp_path / "slow_delete.py"
    script.write_text(
        "import sys, time\n"
        "import mmindex.pipeline.ingest.sync as ingestion\n"
        "from mmindex.connectors.qdrant_edge import QdrantEdgeStore\n"
        "ingestion.DELETE_BATCH = 2\n"
        "real = QdrantEdgeStore.delete\n"
        "def slow(self, ids):\n"
        "    real(self, ids)\n"
        "    print('DELETED', len(ids), file=sys.stderr, flush=True)\n"
        "    time.sleep(120)\n"
        "QdrantEdgeStore.delete = slow\n"
        "from mmindex.pipeline.cli import main\n"
        "main(sys.argv[1:], prog_name='mmindex')\n")
    sync = ["--sync", "--max-delete", "all"]  # 20 of 30 rows are gone: over the default 10%
    process = subprocess.Popen([sys.executable, str(script), *base, *sync], env=env, cwd=root,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = b""
    deadline = time.monotonic() + 120
    while b"DELETED 2\n" not in seen and time.monotonic() < deadline:
        chunk = os.read(process.stderr.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert b"DELETED 2" in seen
    store = QdrantEdgeStore("k", data_dir=data_dir)
    assert store.count() == 28  # killed after the first of ten delete requests
    store.close()
    rerun = subprocess.run([sys.executable, "-m", "mmindex", *base, *sync], env=env, cwd=root,
                           capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    summary = __import__("json").loads(rerun.stdout)
    assert (summary["deleted"], summary["unchanged"], summary["embedded"]) == (18, 10, 0)
    store = QdrantEdgeStore("k", data_dir=data_dir)
    found, _ = store.scroll(limit=100, with_payload=False)
    assert {p.id for p in found} == ids_of(all_rows(data))
    store.close()


def test_sync_with_a_shard_is_refused(tmp_path, encoder):
    from mmindex.errors import InputError
    from mmindex.pipeline.ingest.source import open_source

    data = tmp_path / "d"
    write_sample(data, rows=4, seed=17, width=32, height=32)
    store = QdrantEdgeStore("c", data_dir=tmp_path / "store")
    with pytest.raises(InputError, match="--sync needs the whole source"):
        ingest(open_source([str(data)], shard=(0, 2)), store, encoder, IngestOptions(sync=True))
    assert not (tmp_path / "store" / "c").exists()


def test_several_inputs_are_named_by_their_folder_and_sync_needs_a_source(tmp_path, encoder):
    """A glob the shell expanded lists other files tomorrow: the name must not depend on the list."""
    from mmindex.errors import InputError

    stores = edge(tmp_path)
    data = tmp_path / "d"
    files = write_sample(data, rows=8, seed=20, files=2, width=32, height=32)
    summary = stores.run(files, encoder)
    assert summary.source == str(data)
    with pytest.raises(InputError, match="--sync with several inputs .* needs --source NAME"):
        stores.run(files, encoder, sync=True)
    first = stores.run(files, encoder, sync=True, source_name="shapes")
    assert (first.payload_updated, first.deleted) == (8, 0)  # the points now belong to source "shapes"
    rewrite(files[1], lambda rows: rows[:2])
    synced = stores.run(files, encoder, sync=True, source_name="shapes")
    assert (synced.deleted, synced.unchanged, len(stores.points())) == (2, 6, 6)


# -- what a fresh review found ---------------------------------------------------------------------

def test_sources_with_overlapping_ids_are_reported_as_taking_points_over(tmp_path, encoder, stores):
    one, two = tmp_path / "one", tmp_path / "two"
    write_sample(one, rows=10, seed=23, width=32, height=32)
    write_sample(two, rows=6, seed=24, width=32, height=32, start_index=7)  # ids 7..12: three shared
    assert stores.run(one, encoder, source_name="one").taken_over == 0
    second = stores.run(two, encoder, source_name="two")
    assert second.taken_over == 3 and "source 'one'" in second.warnings[0] and "overlap" in second.warnings[0]
    owners = [p.payload["_source"]["name"] for p in stores.points().values()]
    assert (owners.count("one"), owners.count("two"), len(owners)) == (7, 6, 13)


def test_a_sync_that_rejects_too_many_rows_deletes_nothing(tmp_path, encoder, stores):
    """Content ids: rows whose images cannot be read have no id, so only the reject rate can tell
    an unreachable image share from deleted rows."""
    data = tmp_path / "d"
    write_sample(data, rows=10, seed=25, width=32, height=32, image_kind="path")
    drop_column(data, "id")
    stores.run(data, encoder)
    os.rename(data / "images", data / "images.off")
    summary = stores.run(data, encoder, sync=True)
    assert (summary.rejected, summary.deleted) == (10, 0) and len(stores.points()) == 10
    assert "--sync deleted nothing: 10 of 10 rows were rejected" in summary.warnings[0]
    os.rename(data / "images.off", data / "images")
    rewrite(data / "part-00000.parquet", lambda rows: rows[:9])
    assert stores.run(data, encoder, sync=True, max_reject_rate=0.0).deleted == 1


def test_whole_float_ids_are_the_integer_ids(tmp_path, encoder, stores):
    """pandas writes an integer id column with a null as float64; 20.0 and 20 must be one point."""
    data = tmp_path / "d"
    write_sample(data, rows=6, seed=26, width=32, height=32)
    path = data / "part-00000.parquet"
    table = pq.read_table(path)
    floats = table.set_column(0, "id", pa.array([float(i) for i in range(6)], pa.float64()))
    pq.write_table(floats, path)
    stores.run(data, encoder)
    pq.write_table(floats.set_column(0, "id", pa.array(range(6), pa.int64())), path)
    again = stores.run(data, encoder)
    assert (again.embedded, len(stores.points())) == (0, 6)
    assert set(stores.points()) == {point_id_from_key(i) for i in range(6)}


def test_a_renamed_id_column_keeps_its_points(tmp_path, encoder, stores):
    data = tmp_path / "d"
    write_sample(data, rows=8, seed=27, width=32, height=32)
    stores.run(data, encoder, id_col="id")
    path = data / "part-00000.parquet"
    pq.write_table(pq.read_table(path).rename_columns(
        ["sku" if n == "id" else n for n in pq.read_schema(path).names]), path)
    renamed = stores.run(data, encoder, id_col="sku")
    assert (renamed.embedded, len(stores.points())) == (0, 8)
    store = stores.open()
    assert store.metadata()["id_rule"] == {"rule": "column", "column": "sku"}


def test_lost_rows_of_a_file_stop_the_sync_in_every_engine(tmp_path, encoder):
    """The Ray engine's writer counts through the same `IngestRun.admit`: a file whose rows could not
    all be read must reach it through the batch's tally."""
    from mmindex.pipeline.ingest.rows import read_batch
    from mmindex.pipeline.ingest.run import IngestRun
    from mmindex.pipeline.ingest.source import SourceBatch, open_source
    from mmindex.pipeline.ingest.summary import IngestSummary

    data = tmp_path / "d"
    write_sample(data, rows=4, seed=29, width=32, height=32)
    source = open_source([str(data)])
    store = QdrantEdgeStore("c", data_dir=tmp_path / "store")
    run = IngestRun(store, IngestSummary("c"), IngestOptions(source_name="s"), None, None)
    lost = SourceBatch(file="x.parquet", path="x.parquet", first_row=0, batch=None, error="corrupt row group",
                       lost_rows=3)
    tally, rows = read_batch(source, lost, "m", IngestOptions())
    run.admit(tally, rows)
    assert run.lost_files == {"x.parquet"} and run.summary.rejected == 3
    store.close()
