"""The Ray engine writes the same points, and accounts for the same rows, as the local engine."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers.hazards import EXPECTED, MAX_PAYLOAD, MAX_PIXELS, write_hazards

from mmindex import IngestOptions, ingest
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.queries import SparseVector
from mmindex.pipeline.config import StoreSettings
from mmindex.pipeline.ingest.records import point_id_from_key
from mmindex.pipeline.ingest.source import open_source

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'mmindex[ray]')")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_engine_equals_the_local_engine(tmp_path, tiny_model, encoder, local_ray):
    from mmindex.pipeline.ingest.ray import RayOptions, ingest_on_ray

    path, root = write_hazards(tmp_path / "data")
    options = IngestOptions(image_root=str(root), max_pixels=MAX_PIXELS, max_payload_bytes=MAX_PAYLOAD, batch_size=8)

    local_store = QdrantEdgeStore("same", data_dir=tmp_path / "local")
    local = ingest([str(path)], local_store, encoder, options)

    settings = StoreSettings(collection="same", data_dir=str(tmp_path / "ray"))
    source = open_source([str(path)])
    progress = []
    remote = ingest_on_ray(source, settings, tiny_model, options, RayOptions(max_actors=1, device="cpu"),
                           on_progress=lambda rows, rejected: progress.append(rows))

    for field in ("read", "embedded", "upserted", "unchanged", "rejected", "duplicate_ids", "image_only",
                  "truncated_captions", "cleaned_captions", "not_processed"):
        assert getattr(remote, field) == getattr(local, field), field
    assert remote.adds_up() and remote.status == "ok" and sum(progress) == remote.read
    assert sorted((r.row, r.stage, r.reason) for r in remote.rejections) == \
        sorted((r.row, r.stage, r.reason) for r in local.rejections)

    keys = [k for k in pq.read_table(path, columns=["id"])["id"].to_pylist() if k and k.strip()]
    ids = sorted({point_id_from_key(k) for k in keys})
    ray_store = QdrantEdgeStore("same", data_dir=tmp_path / "ray")
    want = {p.id: p for p in local_store.retrieve(ids, with_vectors=True)}
    got = {p.id: p for p in ray_store.retrieve(ids, with_vectors=True)}
    assert set(got) == set(want) and len(got) == sum(1 for e in EXPECTED.values() if e[0] == "ok") - 1
    for point_id, point in want.items():
        assert got[point_id].payload == point.payload
        assert set(got[point_id].vectors) == set(point.vectors)
        for name in point.vectors:
            if isinstance(point.vectors[name], SparseVector):  # the keyword vector: the same tokens and weights
                assert got[point_id].vectors[name] == point.vectors[name]
                continue
            np.testing.assert_allclose(got[point_id].vectors[name], point.vectors[name], atol=1e-5)
    assert got[point_id_from_key("dup")].payload["caption"] == "the last caption"  # input order kept
    ray_store.close()  # the embedded store has one writer: the next run's

    again = ingest_on_ray(open_source([str(path)]), settings, tiny_model, options, RayOptions(device="cpu"))
    assert again.embedded == 2 and again.unchanged == local.upserted - 2  # incremental on Ray too
    local_store.close()
