"""Fixtures of the CLI tests: `run` (the CLI in-process, in a fresh working folder) and `ingested`
(the sample ingested into collection 'shapes' there)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mmindex.pipeline.cli import main


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("QDRANT_URL", raising=False)
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture
def ingested(run, tiny_model, sample_dir):
    result = run("ingest", sample_dir, "-c", "shapes", "--model", tiny_model, "--index-fields", "year,color",
                 "--json", "--quiet")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])
