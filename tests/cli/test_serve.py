"""`mmindex serve`'s option checks before it starts."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mmindex.pipeline.cli import main

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'mmindex[serve]')")


def test_api_key_without_a_server_is_refused_with_the_right_flag():
    result = CliRunner().invoke(main, ["serve", "-c", "x", "--api-key", "k"], env={"QDRANT_URL": ""})
    assert result.exit_code == 2 and "--serve-api-key" in result.output
    empty = CliRunner().invoke(main, ["serve", "-c", "x", "--serve-api-key", ""])
    assert empty.exit_code == 2 and "empty" in empty.output


def test_a_missing_collection_is_named_at_start_instead_of_failing_on_a_model(tmp_path):
    """Without --model no model can be chosen for a collection that does not exist: the command says which
    collection is missing and what to do, before any model is looked for."""
    result = CliRunner().invoke(main, ["serve", "-c", "nope", "--data-dir", str(tmp_path), "--device", "cpu"],
                                env={"QDRANT_URL": "", "MMINDEX_CONFIG": ""})
    assert result.exit_code == 1, result.output
    assert "collection 'nope' does not exist" in result.output and "--model" in result.output
    assert "Traceback" not in result.output and "model" not in result.output.split("does not exist")[0]


def test_the_decode_bound_is_an_option():
    result = CliRunner().invoke(main, ["serve", "-c", "x", "--max-decode-mib", "64", "--print-config"],
                                env={"QDRANT_URL": ""})
    assert result.exit_code == 0 and '"max_decode_mib": 64' in result.output, result.output


@pytest.mark.parametrize("given, env, want", [
    (["--log-level", "WARNING"], {}, "warning"),
    ([], {"MMINDEX_LOG_LEVEL": "INFO"}, "info"),  # the variable that also sets mmindex's own notes, in capitals
    ([], {"MMINDEX_LOG_LEVEL": "Debug"}, "debug"),
    (["--log-level", "error"], {"MMINDEX_LOG_LEVEL": "INFO"}, "error"),
])
def test_the_log_level_is_taken_in_any_case(given, env, want):
    result = CliRunner().invoke(main, ["serve", "-c", "x", *given, "--print-config"],
                                env={"QDRANT_URL": "", "MMINDEX_CONFIG": "", **env})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["log_level"] == want
    refused = CliRunner().invoke(main, ["serve", "-c", "x", "--log-level", "LOUD", "--print-config"])
    assert refused.exit_code == 2 and "'LOUD' is not one of" in refused.output
