"""`mmindex query` with examples and negatives (--like, --unlike, --not), groups and the ranking options' bad
inputs: one clear line and exit 2 each, before any model loads."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mmindex import QueryRequest, open_store, run_queries, search


def lines(result):
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_more_like_a_point_never_returns_the_point(run, ingested):
    first = lines(run("query", "a red circle", "-c", "shapes", "-k", "3", "--json"))
    for hit in first:
        for given in (hit["id"], hit["payload"]["id"]):  # the point id, or the id column's value
            similar = lines(run("query", "--like", given, "-c", "shapes", "-k", "5", "--json"))
            assert len(similar) == 5 and hit["id"] not in {h["id"] for h in similar}


def test_several_examples_and_negatives_exclude_every_stored_example(run, ingested):
    top = lines(run("query", "a red circle", "-c", "shapes", "-k", "4", "--json"))
    ids = [h["id"] for h in top]
    for strategy in ("average_vector", "best_score", "sum_scores"):
        got = lines(run("query", "--like", ids[0], "--like", ids[1], "--unlike", ids[2], "--like", "a red square",
                        "-c", "shapes", "-k", "6", "--strategy", strategy, "--json"))
        assert got and not {h["id"] for h in got} & set(ids[:3]), strategy


def test_not_is_a_text_unlike(run, ingested):
    """--not TEXT is a negative example given as a text, as --unlike TEXT is."""
    negated = lines(run("query", "a red circle", "--not", "a blue square", "-c", "shapes", "-k", "10", "--json"))
    unliked = lines(run("query", "a red circle", "--unlike", "a blue square", "-c", "shapes", "-k", "10", "--json"))
    assert [h["id"] for h in negated] == [h["id"] for h in unliked]


def test_examples_through_the_api_equal_the_vector_arithmetic(ingested, tmp_path):
    """--not with average_vector is the nearest-neighbour search of 2·q − n, through the Python API."""
    from mmindex.pipeline.models.encoder import encoder_for

    store = open_store("shapes", data_dir=tmp_path / "mmindex_data")
    try:
        answers = run_queries(store, QueryRequest(texts=["a blue star"], not_texts=["a star"], limit=8))
        encoder = encoder_for(store.metadata(), None, "shapes")
        query, negative = encoder.encode_texts(["a blue star", "a star"])
        expected = search(store, 2 * np.asarray(query, dtype=np.float64) - negative, limit=8)
    finally:
        store.close()
    assert [h.id for h in answers.answers[0][1]] == [h.id for h in expected]
    assert [h.score for h in answers.answers[0][1]] == pytest.approx([h.score for h in expected], abs=1e-5)


def test_groups_hold_at_most_group_size_hits_per_value(run, ingested):
    got = lines(run("query", "a red circle", "-c", "shapes", "-k", "3", "--group-by", "color", "--group-size", "2",
                    "--json"))
    groups = [h["group"] for h in got]
    assert len(set(groups)) == 3 and all(groups.count(g) <= 2 for g in groups)
    assert all(h["payload"]["color"] == h["group"] for h in got)
    assert groups == sorted(groups, key=groups.index)  # each group's hits together, groups in order
    table = run("query", "a red circle", "-c", "shapes", "-k", "2", "--group-by", "color")
    assert table.exit_code == 0 and table.stdout.count("  color = ") == 2


@pytest.mark.parametrize("args, words", [
    (["--diversity", "1.5"], "--diversity must be a number from 0 to 1"),
    (["--diversity", "-0.1"], "--diversity must be a number from 0 to 1"),
    (["--pool", "50"], "--pool is the candidate pool of --diversity"),
    (["--diversity", "0.5", "--pool", "0"], "--pool must be a whole number of at least 1"),
    (["--diversity", "0.5", "--pool", "5", "-k", "10"], "must be at most 5"),
    (["--group-size", "3"], "--group-size needs --group-by FIELD"),
    (["--group-by", "nosuchfield"], "--group-by: no field 'nosuchfield'"),
    (["--group-by", "score"], "do not form groups"),
    (["--group-by", "color", "--group-size", "0"], "--group-size must be a whole number of at least 1"),
    (["--like", "00000000-0000-0000-0000-000000000000"], "no point with id '00000000-0000-0000-0000-000000000000'"),
    (["--target", "both", "--score-threshold", "0.1"], "score_threshold compares one vector's cosine score"),
    (["--mode", "hybrid", "--score-threshold", "0.1"], "--score-threshold compare one vector's cosine scores"),
    (["--diversity", "0.5", "--group-by", "color"], "use one of them"),
    (["--unlike", ""], "an --unlike example is empty"),
    (["--group-by", "color", "--cutoff", "auto"], "--cutoff and --group-by both decide"),
    (["--group-by", ""], "--group-by needs a field name"),
    (["--mode", "keyword", "--target", "both"], "keyword mode searches the keyword vector"),
    (["--mode", "keyword", "--fusion", "rrf"], "keyword mode has one"),
    (["--target", "both", "--offset", "95"], "must be at most 100 (raise --fusion-depth"),
    (["--fusion-depth", "0"], "--fusion-depth must be a whole number from 1 to 10,000"),
])
def test_bad_ranking_options_are_one_line_and_exit_2(run, ingested, args, words):
    result = run("query", "a red circle", "-c", "shapes", *args)
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output
    assert "loading model" not in result.output.lower()


@pytest.mark.parametrize("example, words", [
    ("/no/such/photo.jpg", "/no/such/photo.jpg: no such image file"),
    ("missing.png", "missing.png: no such image file"),
    ("id:no-such-row", "no point with id 'no-such-row'"),
    ("image:/no/such.jpg", "/no/such.jpg: no such image file"),
])
def test_an_example_that_names_nothing_is_refused_not_searched_as_words(run, ingested, example, words):
    for option in ("--like", "--unlike"):
        result = run("query", "a red circle", option, example, "-c", "shapes")
        assert result.exit_code == 2 and words in result.output, result.output


def test_prefixes_say_what_an_example_is(run, ingested, sample_dir, tmp_path):
    import pyarrow.parquet as pq

    row = pq.read_table(sorted(sample_dir.glob("*.parquet"))[0]).to_pylist()[0]
    (tmp_path / "q.jpg").write_bytes(row["image"])
    by_id = lines(run("query", "--like", f"id:{row['id']}", "-c", "shapes", "-k", "3", "--json"))
    plain = lines(run("query", "--like", row["id"], "-c", "shapes", "-k", "3", "--json"))
    assert [h["id"] for h in by_id] == [h["id"] for h in plain]
    assert row["id"] not in {h["payload"]["id"] for h in by_id}
    as_words = lines(run("query", "--like", f"text:{row['id']}", "-c", "shapes", "-k", "3", "--json"))
    assert row["id"] in {h["payload"]["id"] for h in lines(run("query", "--like", "image:q.jpg", "-c", "shapes",
                                                                 "-k", "3", "--json"))}
    assert [h["id"] for h in as_words] == [h["id"] for h in lines(run("query", row["id"], "-c", "shapes", "-k", "3",
                                                                      "--json"))]


def test_a_boost_by_a_large_constant_keeps_the_order_of_the_scores(run, ingested):
    """Formula scores are compared as computed: 1000 + cosine ranks as the cosine does (no tolerance that grows
    with the score's size and lumps hits together)."""
    plain = lines(run("query", "a red circle", "-c", "shapes", "-k", "8", "--json"))
    boosted = lines(run("query", "a red circle", "-c", "shapes", "-k", "8", "--boost", "score + 1000", "--json"))
    scores = [h["score"] for h in boosted]
    assert scores == sorted(scores, reverse=True)
    assert [h["id"] for h in boosted] == [h["id"] for h in plain]


def test_info_says_what_keyword_search_covers(run, ingested):
    shown = run("info", "-c", "shapes")
    assert shown.exit_code == 0 and "keywords     BM25 over caption" in shown.stdout
    details = json.loads(run("info", "-c", "shapes", "--json").stdout)
    assert details["sparse_vectors"] == ["keywords"] and details["keywords"]["fields"] == []
