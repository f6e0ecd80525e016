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
    table = CliRunner().invoke(main, ["eval", str(sample_dir), "--model", tiny_model], catch_exceptions=False)
    assert "exact (in memory):" in table.stdout and "R@1" in table.stdout


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
