"""`mmindex copy`: between data dirs, under another name, refusals in one line, and a copied collection that
answers queries like the original."""
from __future__ import annotations

import json

import pytest
from helpers.copying import POINTS, assert_same_points, assert_same_record, expected, photos_collection, sample_points

from mmindex.connectors.qdrant_edge import QdrantEdgeStore


@pytest.fixture
def source(tmp_path):
    """An Edge collection as ingest leaves it: points, the model's record, two payload indexes, a layout."""
    store = photos_collection(tmp_path / "src")
    yield store
    store.close()


@pytest.fixture
def run(cli):
    return cli


def test_cli_copies_between_data_dirs_and_a_second_run_says_it_is_complete(run, source, tmp_path):
    source.close()  # the command opens the store itself
    result = run("copy", "-c", "photos", "--data-dir", tmp_path / "src", "--to-data-dir", tmp_path / "dst",
                 "--json", "--page-size", 20)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["copied"] == summary["source_points"] == summary["target_points"] == POINTS
    copy = QdrantEdgeStore("photos", data_dir=tmp_path / "dst")
    assert_same_points(copy, expected(sample_points()))
    assert_same_record(copy)
    copy.close()
    again = run("copy", "-c", "photos", "--data-dir", tmp_path / "src", "--to-data-dir", tmp_path / "dst",
                "--to-collection", "photos")
    assert again.exit_code == 0 and again.stdout.startswith("nothing to copy: the target is already a complete copy")
    assert f"({POINTS} points)" in again.stdout and "Traceback" not in again.output
    as_json = json.loads(run("copy", "-c", "photos", "--data-dir", tmp_path / "src", "--to-data-dir", tmp_path / "dst",
                             "--json").stdout)
    assert as_json["already_complete"] and as_json["copied"] == 0 and as_json["finished_at"] == summary["finished_at"]
    other = run("copy", "-c", "photos", "--data-dir", tmp_path / "src", "--to-data-dir", tmp_path / "dst",
                "--to-collection", "photos-2")
    assert other.exit_code == 0, other.output
    onto_a_copy = run("copy", "-c", "photos-2", "--data-dir", tmp_path / "dst", "--to-data-dir", tmp_path / "dst",
                      "--to-collection", "photos")
    assert onto_a_copy.exit_code == 1 and "already holds 70 points (a copy of" in onto_a_copy.output
    assert len(onto_a_copy.output.strip().splitlines()) == 1
    nowhere = run("copy", "-c", "photos", "--data-dir", tmp_path / "src")
    assert nowhere.exit_code == 2 and "say where to copy to" in nowhere.output
    same = run("copy", "-c", "photos", "--data-dir", tmp_path / "src", "--to-collection", "photos")
    assert same.exit_code == 2 and "same collection" in same.output  # options that cannot go together


def test_cli_copy_in_one_store_under_another_name_prints_a_summary(run, source, tmp_path):
    source.close()
    result = run("copy", "-c", "photos", "--data-dir", tmp_path / "src", "--to-collection", "photos-v2", "-q")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"copied {POINTS} points in ")
    assert lines[1].strip().endswith(f"src/photos ({POINTS} points)")
    assert lines[2].strip().endswith(f"src/photos-v2 ({POINTS} points)")


def test_copy_help_has_examples(run):
    text = run("copy", "--help").stdout
    assert "Examples:" in text and "--to-url" in text and "mmindex copy -c photos" in text


def test_a_copied_collection_answers_queries_like_the_original(run, tiny_model, sample_dir, tmp_path):
    """End to end with the real model: ingest, copy to another data dir, query both."""
    ingest = run("ingest", sample_dir, "-c", "shapes", "--model", tiny_model, "--index-fields", "year,color", "-q")
    assert ingest.exit_code == 0, ingest.output
    copied = run("copy", "-c", "shapes", "--to-data-dir", tmp_path / "copy", "-q")
    assert copied.exit_code == 0, copied.output

    def answers(*where):
        result = run("query", "a red circle", "-c", "shapes", *where, "--where", "year >= 2015", "--json",
                     "--exact", "--device", "cpu")
        assert result.exit_code == 0, result.output
        return [(hit["id"], round(hit["score"], 5)) for hit in map(json.loads, result.stdout.splitlines())]

    original = answers()
    assert original and answers("--data-dir", tmp_path / "copy") == original
    info = json.loads(run("info", "-c", "shapes", "--data-dir", tmp_path / "copy", "--json").stdout)
    assert info["points"] == 60 and set(info["indexed_fields"]) == {"year", "color"}
