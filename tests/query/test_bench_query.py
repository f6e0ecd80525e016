"""bench/query.py's own bookkeeping, checked against plain numpy: the exact top-10 it scores against, the Recall@10
column it prints, and the vectors it generates, so that a figure in bench/README.md §5 cannot come from a miscount."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import query  # noqa: E402
import query_store  # noqa: E402
import vector_sets  # noqa: E402

from mmindex.connectors.base import SearchRequest  # noqa: E402
from mmindex.pipeline.ingest.records import point_id_from_key  # noqa: E402


def all_points(vectors) -> np.ndarray:
    return np.concatenate([chunk for _, chunk in vectors.chunks()])


def numpy_recall(store, vectors, queries: np.ndarray, hnsw_ef: int) -> float:
    """Recall@10 recomputed from scratch: a full sort of every score, the store searched again."""
    truth = np.argsort(-(queries @ all_points(vectors).T), axis=1)[:, :10]
    index_of = {point_id_from_key(i): i for i in range(vectors.points)}
    found = 0
    for query_vector, expected in zip(queries, truth):
        hits = store.search(SearchRequest(vector=query_vector, limit=10, hnsw_ef=hnsw_ef))
        found += len(set(expected.tolist()) & {index_of[hit.id] for hit in hits})
    return found / truth.size


def run_bench(tmp_path, points: int, efs: str) -> dict:
    return query.main(["--points", str(points), "--settings", "f32", "--ef", efs, "--queries", "40",
                       "--peers", "numpy", "--peer-queries", "10", "--in-process", "--keep", str(tmp_path),
                       "--json", str(tmp_path / "out.json")])


def check_recall_column(result: dict, tmp_path) -> list[float]:
    vectors = vector_sets.vector_set("clustered", result["spec"]["points"])
    queries = vectors.queries(40)
    store = query_store.open_store(tmp_path / "f32", query_store.parse_setting("f32").options)
    try:
        recalls = []
        for row in result["settings"][0]["rows"]:
            expected = numpy_recall(store, vectors, queries, row["hnsw_ef"])
            assert row["recall"] == pytest.approx(expected, abs=1e-12), row
            recalls.append(row["recall"])
        return recalls
    finally:
        store.close()


def test_recall_column_is_numpy_recall_at_two_ef_values(tmp_path):
    result = run_bench(tmp_path, 2000, "8,64")
    assert [row["hnsw_ef"] for row in result["settings"][0]["rows"]] == [8, 64]
    check_recall_column(result, tmp_path)
    assert all(peer["recall"] == 1.0 for peer in result["peers"])  # numpy exact agrees with the blocked exact top
    assert (tmp_path / "out.json").is_file()


@pytest.mark.slow
def test_recall_column_is_numpy_recall_where_hnsw_misses(tmp_path):
    """6,000 × 512-d is above the engine's full-scan threshold: HNSW answers, and a small ef misses neighbours."""
    result = run_bench(tmp_path, 6000, "2,128")
    low, high = check_recall_column(result, tmp_path)
    assert low < high and low < 0.99


class ListedStore:
    """A store whose answers are given (query i, a vector of i's, gets ``answers[i]``): the fault-injection point
    for the recall count."""

    def __init__(self, answers: list[list[str]]):
        self.answers = answers

    def search(self, request):
        return [type("Hit", (), {"id": point_id})() for point_id in self.answers[int(request.vector[0])]]


@settings(max_examples=40, deadline=None)
@given(data=st.data(), queries=st.integers(1, 8))
def test_sweep_point_counts_the_share_of_true_neighbours_returned(data, queries):
    truth = [data.draw(st.lists(st.integers(0, 40), min_size=10, max_size=10, unique=True)) for _ in range(queries)]
    answers = [data.draw(st.lists(st.integers(0, 40), max_size=10, unique=True)) for _ in range(queries)]
    store = ListedStore([[point_id_from_key(i) for i in answer] for answer in answers])
    vectors = np.repeat(np.arange(queries, dtype=np.float32)[:, None], 4, axis=1)
    row = query_store.sweep_point(store, vectors, query_store.point_ids(np.array(truth)), 16, None)
    plain = sum(len(set(t) & set(a)) for t, a in zip(truth, answers)) / (10 * queries)
    assert row["recall"] == pytest.approx(plain)
    assert row["queries"] == queries and row["p50_ms"] <= row["p99_ms"]


@pytest.mark.parametrize("kind", ["clustered", "uniform"])
def test_exact_top_in_blocks_is_a_full_sort(kind):
    vectors = vector_sets.vector_set(kind, 2500, dim=32)
    queries = vectors.queries(7)
    top = vector_sets.exact_top(vectors, queries, block=700)  # blocks that do not fall on chunk boundaries
    scores = queries @ all_points(vectors).T
    assert np.array_equal(top["all"][1], np.argsort(-scores, axis=1)[:, :10])
    blue = np.flatnonzero(np.arange(vectors.points) % 10 == 2)
    assert np.array_equal(top["blue"][1], blue[np.argsort(-scores[:, blue], axis=1)[:, :10]])
    assert np.allclose(top["all"][0], np.sort(scores, axis=1)[:, ::-1][:, :10], atol=1e-6)


def test_points_are_the_same_however_many_are_drawn_and_queries_are_not_points():
    small, large = vector_sets.vector_set("clustered", 2000, dim=64), vector_sets.vector_set("clustered", 5000, dim=64)
    assert np.array_equal(all_points(small), all_points(large)[:2000])
    assert np.allclose(np.linalg.norm(all_points(large), axis=1), 1, atol=1e-5)
    nearest = (small.queries(50) @ all_points(large).T).max(axis=1)
    assert nearest.max() < 0.9999  # held out: no query is a point


def test_mixture_has_the_statistics_of_clip_image_vectors():
    vectors = vector_sets.vector_set("clustered", 4000)
    nearest = vector_sets.exact_top(vectors, vectors.queries(200))["all"][0][:, 0]
    stats = vector_sets.statistics(vectors, nearest)
    assert 0.45 <= stats["pair_cos_mean"] <= 0.55  # CLIP image vectors: ~0.5
    assert 0.8 <= stats["nn_cos_p50"] <= 0.95
    uniform = vector_sets.vector_set("uniform", 4000)
    assert abs(vector_sets.statistics(uniform, nearest)["pair_cos_mean"]) < 0.01


@pytest.mark.parametrize("text, error", [("f16", "layout must be one of"), ("f32:m=x", "not m=INT"),
                                         ("binary", "no binary quantization")])
def test_a_wrong_setting_is_named(text, error):
    if text == "binary" and "binary" in query_store.QUANTIZATIONS:
        pytest.skip("this tree's connectors offer binary quantization")
    with pytest.raises(ValueError, match=error):
        query_store.parse_setting(text)


def test_a_setting_lays_out_what_it_names():
    options = query_store.parse_setting("int8-disk:m=32:efc=200").options
    assert (options.quantization, options.on_disk, options.hnsw_m, options.hnsw_ef_construct) == ("int8", True, 32, 200)


@pytest.mark.parametrize("flags, named", [(["--points", "0"], "--points 0"), (["--points", "5"], "--points 5"),
                                          (["--queries", "0"], "--queries 0"), (["--peer-queries", "-1"], "--peer-queries"),
                                          (["--oversampling", "0,0.5,-3"], "--oversampling"),
                                          (["--oversampling", "inf"], "--oversampling"), (["--ef", "0"], "--ef 0"),
                                          (["--dim", "0"], "--dim 0"), (["--peers", "bogus"], "--peers bogus"),
                                          (["--ef", "abc"], "--ef abc"), (["--oversampling", "x"], "--oversampling x")])
def test_sizes_and_sweep_values_it_cannot_run_are_refused_naming_the_option(flags, named, capsys):
    with pytest.raises(SystemExit) as stopped:
        query.arguments(flags)
    assert stopped.value.code == 2 and named in capsys.readouterr().err
