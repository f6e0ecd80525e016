"""Collection layout options (quantization, HNSW, on-disk, shards) on both stores, and query-time knobs
(the flags: tests/cli/test_layout.py)."""
from __future__ import annotations

import numpy as np
import pytest

from mmindex.connectors.base import CollectionOptions, CollectionSpec, PointRecord, SearchRequest
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.qdrant_server import QdrantServerStore


LAYOUT = CollectionOptions(quantization="int8", hnsw_m=8, hnsw_ef_construct=64, on_disk=True, shard_number=2,
                           replication_factor=1, write_consistency_factor=1)


def vectors(n, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(params=["edge", "memory"])
def laid_out(request, tmp_path):
    store = (QdrantEdgeStore("lay", data_dir=tmp_path, options=LAYOUT) if request.param == "edge"
             else QdrantServerStore("lay", url=":memory:", options=LAYOUT))
    store.ensure_collection(CollectionSpec("m", 16))
    data = vectors(300)
    import uuid

    store.upsert([PointRecord(str(uuid.UUID(int=i + 1)), {"image": v, "text": v}, {"i": i}) for i, v in enumerate(data)])
    store.finish()
    yield store, data
    store.close()


def test_layout_is_recorded_and_searches_rescore(laid_out):
    store, data = laid_out
    assert store.info().options == LAYOUT.to_dict()
    for i in (0, 17, 299):
        for exact in (False, True):
            hits = store.search(SearchRequest(vector=data[i], using="image", limit=3, exact=exact, hnsw_ef=64))
            assert hits[0].payload["i"] == i and hits[0].score == pytest.approx(1.0, abs=1e-4)  # rescored: exact


def test_server_collection_is_created_with_the_layout():
    """Local mode ignores layout, so the request itself is checked (a real server: test_real_server.py)."""
    from qdrant_client import QdrantClient

    class Recording:
        def __init__(self, client):
            self.client, self.created = client, {}

        def __getattr__(self, name):
            method = getattr(self.client, name)
            if name != "create_collection":
                return method

            def create(*args, **kwargs):
                self.created = kwargs
                return method(*args, **kwargs)

            return create

    store = QdrantServerStore("cfg", client=Recording(QdrantClient(":memory:")), options=LAYOUT)
    store.ensure_collection(CollectionSpec("m", 16))
    sent = store.client.created
    assert sent["hnsw_config"].m == 8 and sent["hnsw_config"].ef_construct == 64
    assert sent["quantization_config"].scalar.type.value == "int8"
    assert sent["quantization_config"].scalar.always_ram is True
    assert all(params.on_disk is True and params.size == 16 for params in sent["vectors_config"].values())
    assert (sent["shard_number"], sent["replication_factor"], sent["write_consistency_factor"]) == (2, 1, 1)
    assert sent["metadata"]["mmindex"]["options"] == LAYOUT.to_dict()
    store.close()


@pytest.mark.parametrize("bad", [{"quantization": "int4"}, {"shard_number": 0}, {"hnsw_m": -1}])
def test_bad_layouts_are_refused(bad):
    with pytest.raises(ValueError):
        CollectionOptions(**bad)
