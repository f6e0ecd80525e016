"""An Edge collection as ingest leaves it, and the checks that a copy holds the same points and record:
for tests/collection/test_copy.py and tests/cli/test_copy.py."""
from __future__ import annotations

import uuid

import numpy as np

from mmindex.connectors.base import CollectionOptions, CollectionSpec, PointRecord
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.pipeline.collection.copy import COPY_KEY


DIM = 8
POINTS = 70
LAYOUT = CollectionOptions(hnsw_m=8, hnsw_ef_construct=32)
SPEC = CollectionSpec("tiny-clip", DIM, {"year": "integer", "color": "keyword", "score": "float", "ok": "bool",
                                         "meta": "struct", "tags": "keyword", "caption": "keyword"},
                      fingerprint="f" * 64)
RECORDED = {"model_path": "/models/tiny-clip", "id_rule": {"rule": "column", "column": "id"},
            "sources": {"nightly": {"inputs": ["/data/a.parquet"], "synced_at": "2024-05-01T00:00:00+00:00"}}}


def unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def sample_points(n: int = POINTS) -> list[PointRecord]:
    rng = np.random.default_rng(7)
    points = []
    for i in range(n):
        vectors = {"image": unit(rng)}
        if i % 3:  # every third row has no caption, so no text vector
            vectors["text"] = unit(rng)
        payload = {
            "year": 2000 + i, "color": ["red", "grün", "青"][i % 3], "score": i / 7, "ok": i % 2 == 0,
            "meta": {"w": i, "nested": {"deep": [1, "two", None]}}, "tags": ["a", f"t{i}"],
            "caption": f"ein Bild Nr. {i} ✓" if i % 3 else None, "empty": [], "none": None,
        }
        points.append(PointRecord(str(uuid.uuid5(uuid.NAMESPACE_URL, f"row-{i}")), vectors, payload))
    return points


def every_point(store) -> dict:
    found, offset = {}, None
    while True:
        page, offset = store.scroll(limit=32, offset=offset, with_vectors=True)
        found.update({p.id: p for p in page})
        if offset is None:
            return found


def expected(points: list[PointRecord]) -> dict:
    return {p.id: (p.payload, p.vectors) for p in points}


def stored(store) -> dict:
    return {p.id: (p.payload, p.vectors) for p in every_point(store).values()}


# Vectors through qdrant-client's local mode (':memory:') differ from what was written by at most
# two float32 roundings: it divides each cosine vector by its float32 norm, 1 ± an ulp or two for a
# unit vector (measured over 5,000 vectors: relative error ≤ 1.6e-7, absolute ≤ 1.2e-7).
LOCAL_MODE_RTOL = 2 ** -22  # 2.4e-7


def assert_same_points(copy, want: dict, rtol: float = 0.0) -> None:
    """Same ids, equal payloads, the same named vectors, each equal within ``rtol`` (0: bit for bit).

    Edge keeps a unit vector's float32 values as given and the copy passes them through
    (float32 → Python float → float32 is lossless), so copies into Edge are exact.
    """
    got = every_point(copy)
    assert sorted(got) == sorted(want)
    for point_id, (payload, vectors) in want.items():
        point = got[point_id]
        assert point.payload == payload
        assert set(point.vectors) == set(vectors)
        for name, vector in vectors.items():
            values, wanted = np.asarray(point.vectors[name], dtype=np.float32), np.asarray(vector, dtype=np.float32)
            if rtol:
                np.testing.assert_allclose(values, wanted, rtol=rtol, atol=0)
            else:
                assert np.array_equal(values, wanted), (point_id, name)


def assert_same_record(copy) -> None:
    meta = copy.metadata()
    assert meta["model"] == SPEC.model and meta["model_fingerprint"] == SPEC.fingerprint and meta["dim"] == DIM
    assert meta["payload_types"] == SPEC.payload_types
    assert {k: meta[k] for k in RECORDED} == RECORDED
    assert meta["indexed_fields"] == {"year": "integer", "color": "keyword"}
    assert meta["options"] == LAYOUT.to_dict()
    assert COPY_KEY not in meta


def photos_collection(folder):
    """An Edge collection "photos" under ``folder`` as ingest leaves it: points, the model's record, two payload
    indexes, a layout. The caller closes it."""
    store = QdrantEdgeStore("photos", data_dir=folder, options=LAYOUT)
    store.ensure_collection(SPEC)
    store.update_metadata(RECORDED)
    store.create_payload_index("year", "integer")
    store.create_payload_index("color", "keyword")
    store.upsert(sample_points())
    store.finish()
    return store
