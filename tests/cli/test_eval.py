"""`mmindex eval`: a JSON report with the collection's metrics, and a table."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mmindex.pipeline.cli import main


def test_eval_cli_json_with_collection(tmp_path, sample_dir, tiny_model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["eval", str(sample_dir), "--model", tiny_model, "-c", "ev", "--ingest", "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["images"] == 60 and report["rows_missing_from_collection"] == 0
    assert [m["direction"] for m in report["exact"]] == ["text→image", "image→text"]
    assert report["store"][0]["recall@1"] == pytest.approx(report["exact"][0]["recall@1"])
    for key in ("precision@10", "recall_all@10", "f1@10", "map", "ndcg@10"):
        assert [m[key] for m in report["store"]] == [m[key] for m in report["exact"]], key
    table = CliRunner().invoke(main, ["eval", str(sample_dir), "--model", tiny_model], catch_exceptions=False)
    assert "exact (in memory):" in table.stdout and "R@1" in table.stdout
    assert all(column in table.stdout for column in ("P@10", "R@10 all", "F1@10", "mAP", "nDCG@10"))


def test_eval_on_a_missing_collection_says_so_before_loading_a_model(tmp_path, sample_dir, monkeypatch):
    """No --model: the default Hub model would be loaded (or downloaded) first; the missing collection is named
    at once instead, with the way out."""
    from mmindex.pipeline.models import encoder

    def loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(encoder.Encoder, "__init__", loading)
    result = CliRunner().invoke(main, ["eval", str(sample_dir), "-c", "nosuch", "--data-dir", str(tmp_path)],
                                catch_exceptions=False)
    assert result.exit_code == 1
    assert f"collection 'nosuch' does not exist under {tmp_path}; add --ingest to create it" in result.output


def test_eval_compare_prints_the_search_modes_side_by_side(tmp_path, sample_dir, tiny_model, monkeypatch):
    """The same queries in every mode: dense equals the through-store text→image row; the cutoff row has P, R, F1."""
    monkeypatch.chdir(tmp_path)
    modes = "dense,keyword,hybrid,hybrid-rrf,both,diverse,cutoff"
    result = CliRunner().invoke(main, ["eval", str(sample_dir), "--model", tiny_model, "-c", "ev", "--ingest",
                                       "--compare", modes, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = {row["mode"]: row for row in report["compare"]}
    assert list(rows) == modes.split(",")
    for key in ("recall@1", "recall@10", "mrr", "map", "ndcg@10", "precision@10"):
        assert rows["dense"][key] == pytest.approx(report["store"][0][key]), key
    assert {"precision@cutoff", "recall@cutoff", "f1@cutoff", "hits"} <= set(rows["cutoff"])
    assert rows["keyword"]["recall@1"] > rows["dense"]["recall@1"]  # captions query their own words
    table = CliRunner().invoke(main, ["eval", str(sample_dir), "--model", tiny_model, "-c", "ev",
                                      "--compare", "dense,hybrid"], catch_exceptions=False)
    assert "search modes, text→image" in table.stdout and "  hybrid " in table.stdout


@pytest.mark.parametrize("args, words", [
    (["--compare", "dense,fancy"], "--compare: unknown mode 'fancy'"),
    (["--compare", "dense", "--no-ingest"], "--compare ranks through a collection"),
])
def test_eval_compare_mistakes_are_one_line_and_exit_2(tmp_path, sample_dir, tiny_model, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    collection = ["-c", "ev"] if "fancy" in args[1] else []
    result = CliRunner().invoke(main, ["eval", str(sample_dir), "--model", tiny_model, *collection, *args],
                                catch_exceptions=False)
    assert result.exit_code == 2 and words in result.output, result.output
