"""The ingest/query suite against a real Qdrant server or cluster: set QDRANT_URL (and
QDRANT_API_KEY if it needs one). Without it every test here shows as skipped, with the reason."""
from __future__ import annotations

import pytest

from mmindex.connectors.base import CollectionOptions
from mmindex.connectors.qdrant_server import QdrantServerStore
from mmindex import IngestOptions, ingest, search
from helpers.real_server import KEY, URL, needs_server, temporary_collection


pytestmark = needs_server


@pytest.fixture
def name():
    yield from temporary_collection()


def test_ingest_then_query_on_a_real_server(name, sample_dir, encoder):
    options = CollectionOptions(quantization="int8", hnsw_m=8, shard_number=2)
    store = QdrantServerStore(name, url=URL, api_key=KEY, options=options, parallel_writes=4, bulk_load=True)
    summary = ingest([str(sample_dir)], store, encoder, IngestOptions(index_fields=["year", "color"], batch_size=16))
    assert (summary.upserted, summary.rejected) == (60, 0) and store.count() == 60
    config = store.client.get_collection(name).config
    assert config.hnsw_config.m == 8 and config.params.shard_number == 2
    assert config.quantization_config.scalar.type.value == "int8"
    assert config.optimizer_config.indexing_threshold != 0  # restored after the bulk load
    vector = encoder.encode_texts(["a red circle"])[0]
    hits = search(store, vector, target="text", where="year >= 2020 and color = red", limit=5)
    assert hits and all(h.payload["year"] >= 2020 and h.payload["color"] == "red" for h in hits)
    exact = search(store, vector, target="text", where="year >= 2020 and color = red", limit=5, exact=True)
    assert [h.id for h in exact][:1] == [h.id for h in hits][:1]
    again = ingest([str(sample_dir)], store, encoder)
    assert (again.unchanged, again.embedded) == (60, 0)
    store.close()


def test_sync_delete_alias_and_copy_on_a_real_server(name, tmp_path, encoder):
    """Issue 13 on a real server: a sync after deletes and an edit, a delete by filter, an alias
    switch, and a copy to the embedded store and back that compares equal."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmindex import copy_collection, delete
    from mmindex.connectors.qdrant_edge import QdrantEdgeStore
    from mmindex.pipeline.ingest.sample import write_sample

    data = tmp_path / "d"
    write_sample(data, rows=20, seed=41, width=32, height=32)
    store = QdrantServerStore(name, url=URL, api_key=KEY, parallel_writes=4)
    ingest([str(data)], store, encoder, IngestOptions(sync=True, source_name="s", batch_size=8))
    path = data / "part-00000.parquet"
    rows = pq.read_table(path).to_pylist()
    rows[0]["caption"] += " (fixed)"
    pq.write_table(pa.Table.from_pylist(rows[:15], schema=pq.read_schema(path)), path)
    synced = ingest([str(data)], store, encoder, IngestOptions(sync=True, source_name="s", batch_size=8,
                                                               max_delete="all"))  # 5 of 20: over the default 10%
    assert (synced.embedded, synced.deleted, store.count()) == (1, 5, 15)
    old = sum(r["year"] < 2018 for r in rows[:15])
    assert delete(store, where="year < 2018") == old and store.count() == 15 - old
    alias, back = f"{name}-live", f"{name}-back"
    store.set_alias(alias, name)
    try:
        assert QdrantServerStore(alias, url=URL, api_key=KEY).count() == 15 - old
        edge = QdrantEdgeStore("copy", data_dir=tmp_path / "edge")
        assert copy_collection(store, edge).target_points == 15 - old
        returned = QdrantServerStore(back, url=URL, api_key=KEY)
        assert copy_collection(edge, returned).target_points == 15 - old
        first, _ = store.scroll(limit=100, with_vectors=True)
        second, _ = returned.scroll(limit=100, with_vectors=True)
        assert [(p.id, p.payload) for p in first] == [(p.id, p.payload) for p in second]
        edge.close()
    finally:
        store.delete_alias(alias)
        if store.client.collection_exists(back):
            store.client.delete_collection(back)
    store.close()
