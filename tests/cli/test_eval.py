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
