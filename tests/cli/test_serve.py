"""`mmindex serve`'s option checks before it starts."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from mmindex.pipeline.cli import main

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'mmindex[serve]')")


def test_api_key_without_a_server_is_refused_with_the_right_flag():
    result = CliRunner().invoke(main, ["serve", "-c", "x", "--api-key", "k"], env={"QDRANT_URL": ""})
    assert result.exit_code == 2 and "--serve-api-key" in result.output
    empty = CliRunner().invoke(main, ["serve", "-c", "x", "--serve-api-key", ""])
    assert empty.exit_code == 2 and "empty" in empty.output
