"""The congruence suite's data and its comparison (tests/connectors/): unit vectors from seeds, points with every
payload type the filters use, and ``compare_store_results``, which makes the same call on several stores and
asserts the answers agree, as qdrant-client's ``compare_client_results`` does for its local mode and a server."""
from __future__ import annotations

import dataclasses
import uuid

import numpy as np

from mmindex.connectors.base import CollectionSpec, PointRecord


DIM = 8
SPEC = CollectionSpec("test-model", DIM, {"year": "integer", "color": "keyword", "created": "datetime", "tags": "keyword"})


def vector(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def points(n: int) -> list[PointRecord]:
    colors = ["red", "green", "blue"]
    return [
        PointRecord(
            str(uuid.uuid5(uuid.NAMESPACE_OID, str(i))),
            {"image": vector(i), "text": vector(1000 + i)} if i % 4 else {"image": vector(i)},
            {"year": 2015 + i % 10, "color": colors[i % 3], "created": f"20{10 + i % 10}-06-01T00:00:00Z",
             "tags": [colors[i % 3], "x"], "caption": f"item {i}"},
        )
        for i in range(n)
    ]


def compare_store_results(stores, call, atol: float = 1e-5):
    """``call(store)`` on each store; every answer must equal the first store's: ids, payloads, counts and
    offsets exactly, scores and vectors within ``atol``. Returns the first answer.

    Answers may be hits or points (dataclasses), lists and tuples of them (a scroll page and its next
    offset), numbers, or dicts of these.
    """
    answers = [call(store) for store in stores]
    first = _plain(answers[0])
    for store, answer in zip(stores[1:], answers[1:]):
        where = f"{_name(stores[0])} vs {_name(store)}"
        _assert_close(first, _plain(answer), atol, where)
    return answers[0]


def _name(store) -> str:
    return f"{type(store).__name__}({getattr(store, 'collection', '?')})"


def _plain(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, np.ndarray):
        return value.astype(np.float64).tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _assert_close(a, b, atol: float, where: str, path: str = "answer") -> None:
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), f"{where}: {path}: {a!r} != {b!r}"
        assert abs(a - b) <= atol, f"{where}: {path}: {a!r} and {b!r} differ by more than {atol}"
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: {path}: {len(a)} and {len(b)} items\n{a!r}\n{b!r}"
        for index, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, atol, where, f"{path}[{index}]")
    elif isinstance(a, dict) and isinstance(b, dict):
        assert sorted(a) == sorted(b), f"{where}: {path}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            _assert_close(a[key], b[key], atol, where, f"{path}.{key}")
    else:
        assert a == b, f"{where}: {path}: {a!r} != {b!r}"
