"""`mmindex.delete` and select_points: by id values, point ids, filters or source; counted, and refused
when what is named cannot be matched exactly (the command: tests/cli/test_delete.py)."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from mmindex import IngestOptions, delete, ingest, select_points
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.qdrant_server import QdrantServerStore
from mmindex.errors import FilterError, InputError
from mmindex.pipeline.ingest.records import point_id_from_key
from mmindex.pipeline.ingest.sample import write_sample
from helpers.samples import rows, write_delete_sample


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_delete_sample(tmp_path_factory.mktemp("delete-data"))


@pytest.fixture(params=["edge", "memory"])
def store(request, tmp_path, data, encoder):
    made = (QdrantEdgeStore("d", data_dir=tmp_path / "store") if request.param == "edge"
            else QdrantServerStore("d", url=":memory:"))
    ingest([str(data)], made, encoder, IngestOptions(batch_size=16, workers=1, optimize=False, source_name="s"))
    yield made
    made.close()


def test_delete_by_id_values_point_ids_where_and_source(store, data):
    everything = rows(data)
    first, second = everything[0]["id"], everything[1]["id"]
    assert delete(store, ids=[first, second]) == 2
    assert store.count() == 18 and not store.retrieve([point_id_from_key(first)])
    third = point_id_from_key(everything[2]["id"])
    assert delete(store, point_ids=[third.upper()]) == 1  # a UUID in any case
    old = [r for r in everything[3:] if r["year"] < 2018]
    assert delete(store, where="year < 2018") == len(old)
    assert store.count() == 17 - len(old) and store.count({"must": [
        {"key": "year", "range": {"lt": 2018}}]}) == 0
    assert delete(store, source="s") == 17 - len(old)
    assert store.count() == 0 and "s" not in store.metadata()["sources"]


def test_selection_reports_ids_with_no_point(store, data):
    found = select_points(store, ids=[rows(data)[0]["id"], "no-such-id"])
    assert len(found.ids) == 1 and found.not_found == ["no-such-id"]
    assert store.count() == 20  # selecting deletes nothing


@pytest.mark.parametrize("kwargs, error, message", [
    ({}, InputError, "one way"),
    ({"ids": ["a"], "where": "year > 1"}, InputError, "one way"),
    ({"point_ids": ["not-a-uuid"]}, InputError, "not a point id"),
    ({"ids": [""]}, InputError, "empty string"),
    ({"where": "colour = 'red'"}, FilterError, "colour"),
    ({"where": "year = 'recent'"}, FilterError, "year"),
])
def test_what_cannot_be_matched_exactly_is_refused(store, kwargs, error, message):
    with pytest.raises(error, match=message):
        select_points(store, **kwargs)
    assert store.count() == 20


def test_id_values_need_a_collection_with_an_id_column(tmp_path, encoder):
    folder = tmp_path / "d"
    write_sample(folder, rows=4, seed=22, width=32, height=32)
    table = pq.read_table(folder / "part-00000.parquet")
    pq.write_table(table.drop_columns(["id"]), folder / "part-00000.parquet")
    store = QdrantEdgeStore("c", data_dir=tmp_path / "store")
    ingest([str(folder)], store, encoder, IngestOptions(optimize=False))
    with pytest.raises(InputError, match="from image and caption content.*--point-ids"):
        select_points(store, ids=["x"])
    store.close()


def test_one_id_given_as_a_string_is_one_id(store, data):
    assert delete(store, ids=rows(data)[0]["id"]) == 1 and store.count() == 19
