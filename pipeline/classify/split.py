"""Deterministic splits of a collection's points by id, as ``training.train.split_rows`` splits rows: the same point
always lands on the same side, whatever the order the points are read in or which other points are there."""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from mmindex.errors import UsageError

BUCKETS = 10_000


def bucket(key: str, seed: int = 0, salt: str = "") -> int:
    """The point's bucket in 0..9999: the first 8 bytes of SHA-256 of ``salt``, ``seed`` and ``key``, modulo 10,000
    (uniform, and independent for another seed or salt)."""
    digest = hashlib.sha256(f"{salt}\x00{seed}\x00{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def held_out(keys: Sequence[str], fraction: float, seed: int = 0, salt: str = "") -> np.ndarray:
    """(n,) bools: True for the keys (point ids) on the held-out side, about ``fraction`` of them (a key is held
    out when its ``bucket`` is below ``fraction`` × 10,000). UsageError unless 0 < fraction < 1."""
    if not 0 < fraction < 1:
        raise UsageError(f"the held-out share must be between 0 and 1 (exclusive), not {fraction!r}")
    limit = fraction * BUCKETS
    return np.fromiter((bucket(str(key), seed, salt) < limit for key in keys), dtype=bool, count=len(keys))
