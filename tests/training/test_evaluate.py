"""Retrieval metrics: exact on hand-made embeddings, groups, and store vs in-memory agreement."""
from __future__ import annotations

import math
import uuid
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmindex.connectors.base import CollectionSpec, PointRecord
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.qdrant_server import QdrantServerStore
from mmindex.pipeline.training.evaluate import (
    TIE_TOLERANCE,
    EvalPairs,
    embed_pairs,
    exact_metrics,
    exact_ranks,
    metrics_from_ranks,
    store_metrics,
)
from mmindex.pipeline.ingest.run import ingest
from mmindex.pipeline.ingest.sample import write_sample
from mmindex.pipeline.ingest.source import open_source
from helpers.ties import ShuffledTies


def test_metrics_from_known_ranks():
    m = metrics_from_ranks("text→image", [1, 2, 6, math.inf])
    assert m.queries == 4
    assert m.recall == {1: 0.25, 5: 0.5, 10: 0.75}
    assert m.mrr == pytest.approx((1 + 1 / 2 + 1 / 6 + 0) / 4)
    assert m.median_rank == 4.0
    assert m.to_dict()["recall@5"] == 0.5


def unit(*rows):
    array = np.asarray(rows, dtype=np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def test_exact_ranks_on_hand_made_embeddings():
    documents = unit([1, 0, 0], [0, 1, 0], [0, 0, 1])
    # query 0 is nearest doc 0; query 1 is nearest doc 0, then doc 1; query 2: docs 0, 1, then 2.
    queries = unit([1, 0, 0], [1, 0.5, 0], [1, 0.8, 0.1])
    ranks = exact_ranks(queries, documents, np.array([0, 1, 2]), np.array([0, 1, 2]))
    assert ranks == [1.0, 2.0, 3.0]


def test_ties_count_against_the_query():
    documents = unit([1, 0], [1, 0], [0, 1])
    ranks = exact_ranks(unit([1, 0]), documents, np.array([1]), np.array([0, 1, 2]))
    assert ranks == [2.0]


def test_any_member_of_the_group_is_correct():
    documents = unit([1, 0, 0], [0.9, 0.1, 0], [0, 0, 1])
    query = unit([1, 0, 0])
    assert exact_ranks(query, documents, np.array([5]), np.array([7, 5, 8])) == [2.0]
    # Another caption of the same image group shares its group id: now the top doc counts.
    assert exact_ranks(query, documents, np.array([5]), np.array([5, 5, 8])) == [1.0]
    assert exact_ranks(query, documents, np.array([9]), np.array([5, 5, 8])) == [math.inf]


def test_several_captions_per_image_count_for_each_other(tmp_path, encoder):
    path = write_sample(tmp_path / "d", rows=10, seed=2, width=32, height=32)[0]
    rows = pq.read_table(path).to_pylist()
    doubled = []
    for row in rows:
        doubled.append(row)
        doubled.append({**row, "id": row["id"] + "-b", "caption": row["caption"] + " (second caption)"})
    pq.write_table(pa.Table.from_pylist(doubled, schema=pq.read_schema(path)), path)
    pairs = embed_pairs(open_source([str(path)]), encoder)
    assert len(pairs.image_rows) == 10 and len(pairs.text_rows) == 20  # identical images embedded once
    assert (pairs.text_groups[0::2] == pairs.text_groups[1::2]).all()
    t2i, i2t = exact_metrics(pairs)
    assert (t2i.queries, i2t.queries) == (20, 10)


def test_group_columns_join_rows(tmp_path, encoder):
    write_sample(tmp_path / "d", rows=30, seed=3, width=32, height=32)
    pairs = embed_pairs(open_source([str(tmp_path / "d")], caption_col="short_caption"), encoder, ["color", "shape"])
    labels = {(r.payload["color"], r.payload["shape"]) for r in pairs.text_rows}
    assert len(set(pairs.text_groups.tolist())) == len(labels)


def test_store_search_agrees_with_exact_on_a_small_collection(tmp_path, sample_dir, encoder):
    store = QdrantEdgeStore("ev", data_dir=tmp_path)
    ingest([str(sample_dir)], store, encoder)
    pairs = embed_pairs(open_source([str(sample_dir)]), encoder)
    through_store, missing = store_metrics(pairs, store)
    assert missing == 0
    exact = exact_metrics(pairs)
    for a, b in zip(exact, through_store):
        assert a.recall == pytest.approx(b.recall) and a.mrr == pytest.approx(b.mrr, abs=1e-3)
    store.close()


def synthetic_pairs(images: list[int], captions: list[int]) -> EvalPairs:
    """Rows whose image is vector ``images[i]`` and caption vector ``captions[i]`` (equal numbers: identical
    images or captions), grouped by image as eval groups them."""
    rows = [SimpleNamespace(id=str(uuid.uuid5(uuid.NAMESPACE_OID, str(i)))) for i in range(len(images))]
    first_row: dict[int, int] = {}
    for i, image in enumerate(images):
        first_row.setdefault(image, i)
    group = {image: g for g, image in enumerate(first_row)}
    return EvalPairs(
        image_vectors=np.stack([unit(np.random.default_rng(image).normal(size=6))[0] for image in first_row]),
        image_groups=np.array([group[image] for image in first_row]),
        image_rows=[rows[i] for i in first_row.values()],
        text_vectors=np.stack([unit(np.random.default_rng(1000 + c).normal(size=6))[0] for c in captions]),
        text_groups=np.array([group[image] for image in images]),
        text_rows=rows, summary=None, image_of_point={row.id: str(image) for row, image in zip(rows, images)})


def store_of(pairs: EvalPairs, images: list[int]) -> QdrantServerStore:
    store = QdrantServerStore("ev", url=":memory:")
    store.ensure_collection(CollectionSpec("m", 6, {}))
    image_vector = dict(zip(sorted(set(images), key=images.index), pairs.image_vectors))
    store.upsert([PointRecord(row.id, {"image": image_vector[image], "text": text}, {})
                  for row, image, text in zip(pairs.text_rows, images, pairs.text_vectors)])
    return store


@settings(max_examples=40, deadline=None)
@given(data=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3)), min_size=2, max_size=25),
       seed=st.integers(0, 1000))
def test_eval_through_the_store_equals_exact_whatever_the_ties(data, seed):
    """Shared images, shared captions, any engine tie order: through-the-collection figures equal the in-memory
    ones whenever nothing is missing (the rank rule counts ties against the query, in both)."""
    images, captions = [d[0] for d in data], [d[1] for d in data]
    pairs = synthetic_pairs(images, captions)
    store = store_of(pairs, images)
    through_store, missing = store_metrics(pairs, ShuffledTies(store, seed))
    assert missing == 0
    assert [m.to_dict() for m in through_store] == [m.to_dict() for m in exact_metrics(pairs)]
    store.close()


def test_images_sharing_one_caption_agree_through_the_store_run_after_run(tmp_path, encoder):
    """The issue's example: several images share the caption "No description"; eval's through-the-collection
    figures equal its exact ones, and are the same on every run."""
    path = write_sample(tmp_path / "d", rows=24, seed=4, width=32, height=32)[0]
    rows = pq.read_table(path).to_pylist()
    for row in rows[::2]:
        row["caption"] = "No description"
    for row in rows[1:8]:
        row["image"] = rows[1]["image"]
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), path)
    store = QdrantEdgeStore("ev", data_dir=tmp_path / "store")
    ingest([str(path)], store, encoder)
    pairs = embed_pairs(open_source([str(path)]), encoder)
    exact = [m.to_dict() for m in exact_metrics(pairs)]
    for seed in range(3):
        through_store, missing = store_metrics(pairs, ShuffledTies(store, seed))
        assert missing == 0 and [m.to_dict() for m in through_store] == exact
    assert [m.to_dict() for m in store_metrics(pairs, store)[0]] == exact
    store.close()


def tied(scores: np.ndarray) -> list[float]:
    """Scores within TIE_TOLERANCE of the next higher one made equal to it (identical vectors' float32 scores
    differ in the last bits), so that a plain sort sees the ties the metrics see."""
    order = np.argsort(-scores, kind="stable")
    result, top = [0.0] * len(scores), math.inf
    for previous, index in zip([None, *order[:-1]], order):
        if previous is None or scores[previous] - scores[index] > TIE_TOLERANCE:
            top = float(scores[index])
        result[index] = top
    return result


@settings(max_examples=12, deadline=None)
@given(data=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3)), min_size=2, max_size=25))
def test_every_relevant_answer_counts_as_scikit_learn_counts_it(data):
    """precision, recall and F1 at K, mAP and nDCG@K of eval (image→text: every caption of the image's group is
    relevant; shared captions tie exactly) equal scikit-learn's on each query's ranking sorted by score with a
    relevant document after every other one of equal score (the pessimistic rule), averaged over queries."""
    import sklearn.metrics as sk  # scikit-learn (the test extra): the oracle, loaded by this test only

    images, captions = [d[0] for d in data], [d[1] for d in data]
    pairs = synthetic_pairs(images, captions)
    text_to_image, image_to_text = exact_metrics(pairs)
    for metrics, queries, query_groups, documents, document_groups in (
            (text_to_image, pairs.text_vectors, pairs.text_groups, pairs.image_vectors, pairs.image_groups),
            (image_to_text, pairs.image_vectors, pairs.image_groups, pairs.text_vectors, pairs.text_groups)):
        rows = []
        for query, group in zip(queries, query_groups):
            scores, relevant = tied(documents @ query), document_groups == group
            flags = relevant[sorted(range(len(scores)), key=lambda i: (-scores[i], relevant[i]))]
            rank_scores = np.arange(len(flags), 0, -1)
            cut = [1] * min(10, len(flags)) + [0] * max(0, len(flags) - 10)
            ndcg = sk.ndcg_score([flags.astype(float)], [rank_scores], k=10) if len(flags) > 1 else float(flags[0])
            rows.append((flags[:10].sum() / 10, sk.recall_score(flags, cut, zero_division=0),
                         sk.average_precision_score(flags, rank_scores), ndcg))
        precision, recall, mean_ap, ndcg = np.mean(rows, axis=0)
        assert metrics.precision[10] == pytest.approx(precision) and metrics.recall_all[10] == pytest.approx(recall)
        assert metrics.map == pytest.approx(mean_ap) and metrics.ndcg[10] == pytest.approx(ndcg)
