"""The CLI against a real Qdrant server: set QDRANT_URL (and QDRANT_API_KEY if it
needs one). Without it the test shows as skipped, with the reason."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from helpers.real_server import KEY, URL, needs_server, temporary_collection

from mmindex.pipeline.cli import main

pytestmark = needs_server


@pytest.fixture
def name():
    yield from temporary_collection()


def test_cli_against_a_real_server(name, sample_dir, tiny_model):
    env = {"QDRANT_URL": URL, **({"QDRANT_API_KEY": KEY} if KEY else {})}
    result = CliRunner().invoke(main, ["ingest", str(sample_dir), "-c", name, "--model", tiny_model, "--device", "cpu",
                                       "--json", "-q"], env=env)
    assert result.exit_code == 0, result.output
    info = json.loads(CliRunner().invoke(main, ["info", "-c", name, "--json"], env=env).output)
    assert info["points"] == 60 and info["store"] == "qdrant-server"
