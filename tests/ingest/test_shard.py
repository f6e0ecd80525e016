"""--shard i/N: N workers together read every row exactly once."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmindex import IngestOptions, ingest
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.errors import InputError
from mmindex.pipeline.ingest.sample import write_sample
from mmindex.pipeline.ingest.source import open_source, parse_shard


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    """Files of different sizes and row-group sizes, so shards do not line up with files."""
    folder = tmp_path_factory.mktemp("uneven")
    write_sample(folder, rows=90, seed=2, files=3, width=24, height=24)
    for index, group in enumerate((7, 11, 40)):
        path = folder / f"part-{index:05d}.parquet"
        pq.write_table(pq.read_table(path), path, row_group_size=group)
    return folder


def rows_of(source, batch_size=8):
    return [(b.file, b.first_row + i) for b in source.batches(batch_size) for i in range(b.batch.num_rows)]


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 40])
def test_the_union_of_the_shards_is_every_row_once(uneven, count):
    whole = rows_of(open_source([str(uneven)]))
    parts = [rows_of(open_source([str(uneven)], shard=(index, count))) for index in range(count)]
    union = [row for part in parts for row in part]
    assert len(union) == len(set(union)) == len(whole) == 90  # disjoint, complete
    assert set(union) == set(whole)
    counts = [open_source([str(uneven)], shard=(index, count)).count_rows() for index in range(count)]
    assert counts == [len(part) for part in parts]


def test_row_numbers_stay_those_of_the_file(uneven):
    table = pq.read_table(uneven / "part-00001.parquet")
    for batch in open_source([str(uneven)], shard=(1, 3)).batches(4):
        if batch.file.endswith("part-00001.parquet"):
            ids = batch.batch.column("id").to_pylist()
            assert ids == table.column("id").to_pylist()[batch.first_row:batch.first_row + len(ids)]


def test_sharded_runs_into_one_collection_equal_one_run(tmp_path, uneven, encoder):
    one = QdrantEdgeStore("one", data_dir=tmp_path / "a")
    ingest([str(uneven)], one, encoder, IngestOptions(batch_size=8))
    many = QdrantEdgeStore("many", data_dir=tmp_path / "b")
    summaries = []
    for index in range(3):
        source = open_source([str(uneven)], shard=(index, 3))
        summaries.append(ingest(source, many, encoder, IngestOptions(batch_size=8, optimize=index == 2)))
    assert sum(s.upserted for s in summaries) == 90 and all(s.unchanged == 0 for s in summaries)
    ids = [str(i) for i in pa.concat_tables([pq.read_table(p) for p in sorted(uneven.glob("*.parquet"))])["id"]]
    from mmindex.pipeline.ingest.records import point_id_from_key

    point_ids = [point_id_from_key(i) for i in ids]
    a = {p.id: p.payload for p in one.retrieve(point_ids)}
    b = {p.id: p.payload for p in many.retrieve(point_ids)}
    assert len(a) == len(b) == 90 and a == b
    one.close(), many.close()


@pytest.mark.parametrize("spec", ["3", "3/3", "-1/2", "a/b", "1/0", "auto/4"])
def test_bad_shard_specs_are_refused(spec):
    with pytest.raises(InputError, match="--shard"):
        parse_shard(spec, environ={})


def test_auto_takes_the_index_from_the_scheduler():
    assert parse_shard("auto/8", {"JOB_COMPLETION_INDEX": "3"}) == (3, 8)
    assert parse_shard("auto/8", {"SLURM_ARRAY_TASK_ID": "7"}) == (7, 8)
    with pytest.raises(InputError, match="need 0 <= I < N"):
        parse_shard("auto/8", {"SLURM_ARRAY_TASK_ID": "8"})
