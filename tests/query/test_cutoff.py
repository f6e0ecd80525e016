"""``--cutoff auto`` (pipeline/query/cutoff.py): the count's properties over random scores, a plain-Python oracle of
the expected-F1 rule, the background sample on both stores, and a tiny end-to-end collection."""
from __future__ import annotations

import math
import tempfile
import uuid
from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmindex.connectors.base import CollectionSpec, PointRecord, SearchRequest
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.qdrant_server import QdrantServerStore
from mmindex.errors import UsageError
from mmindex.pipeline.query import cutoff
from mmindex.pipeline.query.cutoff import (
    Background,
    background_sample,
    background_scores,
    relevance_probabilities,
    relevant_count,
)

def background_of(seed: int, size: int) -> np.ndarray:
    """A query's scores over a whole collection of ``size`` points: spread like a model's cosines (σ ≈ 0.25)."""
    return np.random.default_rng(seed).normal(0.05, 0.25, size)


def hits_at(background: np.ndarray, z_scores) -> np.ndarray:
    """Hit scores at these z-scores against ``background``, best first."""
    return np.sort(background.mean() + background.std() * np.asarray(z_scores, dtype=float))[::-1]


def z_for_chance_count(count: float, points: int) -> float:
    """The z-score above which a normal background of ``points`` points puts ``count`` of them."""
    return NormalDist().inv_cdf(1 - count / points)


backgrounds = st.builds(background_of, st.integers(0, 10_000), st.integers(200, 2000))


@settings(max_examples=150, deadline=None)
@given(background=backgrounds, data=st.data())
def test_nothing_is_relevant_when_nothing_stands_out(background, data):
    """Up to 100 hits, each with at least 100 points of the collection expected at or above its score by chance:
    zero hits (each has p < 1 / (n + 2), so answering nothing has the higher expected F1)."""
    top = z_for_chance_count(100, len(background))
    z = data.draw(st.lists(st.floats(-3, top), max_size=100))
    assert relevant_count(hits_at(background, z), background) == 0


@settings(max_examples=150, deadline=None)
@given(background=backgrounds, data=st.data())
def test_every_hit_is_kept_when_every_hit_stands_out(background, data):
    """Hits that fewer than 2 points of the collection would reach by chance (p > 1/2) are all kept."""
    bottom = z_for_chance_count(2, len(background))
    z = data.draw(st.lists(st.floats(bottom + 0.01, bottom + 12), min_size=1, max_size=100))
    assert relevant_count(hits_at(background, z), background) == len(z)


def oracle(scores: list[float], background: list[float]) -> int:
    """The rule written out in plain Python: z-scores, chance counts N·Φ̄(z), logistic probabilities, the expected
    F1 of each prefix that ends where the score drops (the shortest of equal ones), and the empty answer's,
    Π(1 − p), if it is higher."""
    mean = sum(background) / len(background)
    spread = math.sqrt(sum((b - mean) ** 2 for b in background) / len(background))
    a, b = cutoff.CALIBRATION
    counts = [len(background) * (1 - NormalDist().cdf((s - mean) / spread)) for s in scores]
    chance = [1 / (1 + math.exp(-(a + b * math.log10(max(count, 1e-300))))) for count in counts]
    best_k, best = 0, -1.0
    for k in range(1, len(scores) + 1):
        if k == len(scores) or scores[k - 1] - scores[k] > cutoff.SCORE_TIE:
            value = 2 * sum(chance[:k]) / (k + sum(chance))
            if value > best:
                best_k, best = k, value
    return 0 if math.prod(1 - p for p in chance) > best else best_k


grid_scores = st.lists(st.integers(0, 400), min_size=1, max_size=60).map(lambda v: sorted((x / 400 for x in v),
                                                                                          reverse=True))


@settings(max_examples=200, deadline=None)
@given(scores=grid_scores, background=backgrounds)
def test_the_count_is_the_expected_f1_rule(scores, background):
    """Against the plain-Python oracle; and the rules it implies: between 0 and n, every hit with p > 1/2 kept
    (Lipton et al. 2014), and a group of equal scores never split."""
    count = relevant_count(scores, background)
    assert count == oracle(scores, background.tolist())
    likely = int((relevance_probabilities(scores, background) > 0.5).sum())
    assert likely <= count <= len(scores)
    assert count in (0, len(scores)) or scores[count - 1] > scores[count]


@settings(max_examples=150, deadline=None)
@given(scores=grid_scores, background=backgrounds, shift=st.integers(-512, 512), power=st.integers(-2, 2))
def test_the_count_ignores_a_shift_or_a_scale_of_every_score(scores, background, shift, power):
    """z-scores do not change when every score (hits and background) gains one constant or is multiplied by one
    positive factor (powers of two and multiples of 1/1024, so the arithmetic is exact)."""
    background = np.round(background * 1024) / 1024
    moved = [s * 2.0 ** power + shift / 1024 for s in scores]
    assert relevant_count(moved, background * 2.0 ** power + shift / 1024) == relevant_count(scores, background)
    assert relevant_count(scores, background[::-1]) == relevant_count(scores, background)


def test_a_larger_collection_needs_a_higher_score():
    """The same z-scores stand out less in a larger collection, whose best unrelated points score higher."""
    background = background_of(1, 500)
    hits = hits_at(background, [3.2, 3.1, 3.0])
    assert relevant_count(hits, Background(background, 500)) == 3
    assert relevant_count(hits, Background(background, 1_000_000)) == 0


def test_a_background_without_spread_and_bad_inputs():
    flat = np.full(10, 0.2)
    assert relevant_count([0.9, 0.2, 0.1], flat) == 1  # above the flat background: infinitely far; equal: z = 0
    assert relevant_count([], flat) == 0
    with pytest.raises(UsageError, match="descending"):
        relevant_count([0.1, 0.9], flat)
    with pytest.raises(UsageError, match="finite scores"):
        relevant_count([float("nan")], flat)
    with pytest.raises(UsageError, match="background"):
        relevant_count([0.5], [])


DIM, CLUSTERS, MEMBERS = 32, 30, 8


def clustered_points() -> tuple[list[PointRecord], np.ndarray]:
    """CLUSTERS tight clusters of MEMBERS points around random unit centres; point i belongs to cluster i % CLUSTERS."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(CLUSTERS, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    records = []
    for i in range(CLUSTERS * MEMBERS):
        vector = centres[i % CLUSTERS] + rng.normal(scale=0.08, size=DIM)
        records.append(PointRecord(str(uuid.uuid5(uuid.NAMESPACE_OID, f"p{i}")),
                                   {"image": (vector / np.linalg.norm(vector)).astype(np.float32),
                                    "text": centres[(i + 1) % CLUSTERS].astype(np.float32)},
                                   {"cluster": i % CLUSTERS}))
    return records, centres


@pytest.fixture(scope="module")
def stores():
    records, centres = clustered_points()
    made = [QdrantEdgeStore("cut", data_dir=tempfile.mkdtemp(prefix="cutoff-")),
            QdrantServerStore("cut", url=":memory:")]
    for store in made:
        store.ensure_collection(CollectionSpec("m", DIM, {}))
        store.upsert(records)
    yield made, records, centres
    for store in made:
        store.close()


def test_the_relevant_hits_of_a_tiny_collection_on_both_stores(stores):
    """A query at a cluster's centre: its top CANDIDATES hits and its background give exactly that cluster's
    points, on the embedded store and on the server store alike."""
    made, records, centres = stores
    for cluster in (0, 11, 29):
        answers = []
        for store in made:
            hits = store.search(SearchRequest(vector=centres[cluster].tolist(), using="image",
                                              limit=cutoff.CANDIDATES, with_payload=True))
            count = relevant_count([h.score for h in hits], background_scores(store, centres[cluster], "image"))
            answers.append([h.id for h in hits[:count]])
            assert {h.payload["cluster"] for h in hits[:count]} == {cluster} and count == MEMBERS
        assert answers[0] == answers[1]


def test_the_background_sample_is_the_same_on_both_stores_and_bounded(stores):
    """A collection larger than the sample: the runs of ids read the same points on both stores, at most ``size``,
    spread over the id space; a small one is read whole; scores are numpy's cosines."""
    made, records, _ = stores
    samples = [background_sample(store, "image", size=60, seed=5) for store in made]
    assert samples[0].shape == samples[1].shape and 45 <= len(samples[0]) <= 60
    assert np.allclose(samples[0], samples[1], atol=1e-6)
    whole = [background_sample(store, "text", size=1000) for store in made]
    assert len(whole[0]) == len(records) and np.allclose(whole[0], whole[1], atol=1e-6)
    query = np.random.default_rng(4).normal(size=DIM)
    every = np.stack([r.vectors["text"] for r in records]).astype(np.float64)
    expected = np.sort(every @ (query / np.linalg.norm(query)))
    found = background_scores(made[0], query, "text", size=1000)
    assert found.population == len(records) and np.allclose(np.sort(found.scores), expected, atol=1e-5)
    with pytest.raises(UsageError, match="non-zero length"):
        background_scores(made[0], np.zeros(DIM), "image")


def test_the_sample_is_read_once_and_again_when_the_collection_changes(tmp_path):
    records, _ = clustered_points()
    store = QdrantEdgeStore("cache", data_dir=tmp_path)
    store.ensure_collection(CollectionSpec("m", DIM, {}))
    store.upsert(records[:100])
    reads = []
    scroll = store.scroll
    store.scroll = lambda *args, **kwargs: reads.append(1) or scroll(*args, **kwargs)
    first = background_sample(store, "image")
    assert background_sample(store, "image") is first and len(reads) == 1
    store.upsert(records[100:110])
    assert len(background_sample(store, "image")) == 110 and len(reads) == 2
    store.close()
