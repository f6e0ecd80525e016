"""The rescoring tests' engines: one tiny Qdrant Edge shard and one ``QdrantClient(':memory:')`` collection holding
the same points, queried the same way — a prefetch of the nearest points on the named vector ``image``, rescored
by a formula (``connectors/edge_formula.py`` for Edge, ``connectors/server_formula.py`` for the client) — and a
comparison of their answers with an oracle's scores."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import qdrant_edge as qe
from qdrant_client import QdrantClient, models

from mmindex.connectors.edge_formula import edge_formula
from mmindex.connectors.server_formula import server_formula

ENGINES = ("edge", "memory")
REL_TOL = 1e-4  # both engines return float32 scores
ABS_TOL = 1e-6


class TwoEngines:
    """The same points in both engines. ``points``: (integer id, vector, payload)."""

    def __init__(self, folder: Path, dim: int):
        self.dim = dim
        config = qe.EdgeConfig(vectors={"image": qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)})
        self.shard = qe.EdgeShard.create(str(folder / "shard"), config)
        self.client = QdrantClient(":memory:")
        self.client.create_collection("c", vectors_config={
            "image": models.VectorParams(size=dim, distance=models.Distance.COSINE)})
        self.ids: list[int] = []

    def put(self, points: list[tuple[int, list[float], dict[str, Any]]]) -> None:
        """Upsert ``points`` (replacing any point with the same id, payload included) into both engines."""
        self.shard.update(qe.UpdateOperation.upsert_points(
            [qe.Point(id=i, vector={"image": list(v)}, payload=p) for i, v, p in points]))
        self.client.upsert("c", [models.PointStruct(id=i, vector={"image": list(v)}, payload=p)
                                 for i, v, p in points])
        self.ids = sorted(set(self.ids) | {i for i, _, _ in points})

    def nearest(self, engine: str, vector: list[float]) -> dict[int, float]:
        """Every point's similarity to ``vector`` (float32, as the engine gives it to a formula)."""
        limit = len(self.ids)
        if engine == "edge":
            found = self.shard.query(qe.QueryRequest(limit=limit, query=qe.Query.Nearest(list(vector), using="image"),
                                                     with_payload=False))
        else:
            found = self.client.query_points("c", query=list(vector), using="image", limit=limit).points
        return {int(p.id): float(p.score) for p in found}

    def rescore(self, engine: str, vector: list[float], formula: Any, defaults: dict | None = None,
                limit: int | None = None) -> list[tuple[int, float]]:
        """(id, score) best first: every point prefetched by ``vector``, rescored by ``formula``. Raises what the
        engine raises."""
        count = len(self.ids)
        if engine == "edge":
            found = self.shard.query(qe.QueryRequest(
                limit=limit or count, query=edge_formula(formula, defaults), with_payload=False,
                prefetches=[qe.Prefetch(count, query=qe.Query.Nearest(list(vector), using="image"))]))
        else:
            found = self.client.query_points(
                "c", query=server_formula(formula, defaults), limit=limit or count,
                prefetch=[models.Prefetch(query=list(vector), using="image", limit=count)]).points
        return [(int(p.id), float(p.score)) for p in found]

    def close(self) -> None:
        self.shard.close()
        self.client.close()


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def assert_matches_oracle(engines: TwoEngines, vector: list[float], formula: Any,
                          oracle: Callable[[int, float], float], context: str = "") -> str:
    """On both engines: when ``oracle(id, similarity)`` raises ``ArithmeticError`` for some point, the query fails;
    otherwise every point comes back with the oracle's score (float32 rounding allowed), best first, and the
    oracle agrees with the order (up to ties within tolerance). Returns which happened ("failed" or "scored")."""
    outcome = "scored"
    for engine in ENGINES:
        similarities = engines.nearest(engine, vector)
        try:
            expected = {i: oracle(i, similarities[i]) for i in engines.ids}
            expected = {i: _as_float32(value) for i, value in expected.items()}
        except ArithmeticError:
            try:
                got = engines.rescore(engine, vector, formula)
            except Exception:  # Edge raises a bare Exception ("Operation cancelled"), qdrant-client a ValueError
                outcome = "failed"
                continue
            raise AssertionError(f"{engine}: the oracle fails on some point, the engine scored {got} {context}")
        got = engines.rescore(engine, vector, formula)
        assert sorted(i for i, _ in got) == engines.ids, f"{engine}: {got} {context}"
        for point, score in got:
            assert close(score, expected[point]), f"{engine}: point {point}: {score} != {expected[point]} {context}"
        oracle_scores = [expected[i] for i, _ in got]
        for higher, lower in zip(oracle_scores, oracle_scores[1:]):
            assert higher >= lower or close(higher, lower), f"{engine}: order {got} vs {expected} {context}"
    return outcome


def _as_float32(value: float) -> float:
    """The score as both engines return it: a float32; one outside float32's range fails the query."""
    if not math.isfinite(value) or abs(value) > 3.4028234663852886e38:
        raise ArithmeticError(f"{value} is not a finite float32")
    return value
