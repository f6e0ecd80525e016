"""`mmindex delete`: counts, asks (--yes, --dry-run), deletes; selector mistakes are usage errors."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from helpers.samples import rows, write_delete_sample

from mmindex.pipeline.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_delete_sample(tmp_path_factory.mktemp("delete-data"))


def test_cli_counts_asks_and_deletes(tmp_path, data, tiny_model):
    runner = CliRunner()
    where = ["-c", "cli", "--data-dir", str(tmp_path / "store")]
    assert runner.invoke(main, ["ingest", str(data), *where, "--model", tiny_model, "-q", "--source", "s"]).exit_code == 0
    dry = runner.invoke(main, ["delete", *where, "--where", "year >= 2018", "--dry-run"])
    expected = sum(r["year"] >= 2018 for r in rows(data))
    assert dry.exit_code == 0 and f"{expected} point(s) of collection 'cli' match where year >= 2018" in dry.output
    refused = runner.invoke(main, ["delete", *where, "--where", "year >= 2018"])  # stdin is no terminal
    assert refused.exit_code == 2 and "--yes" in refused.output
    done = runner.invoke(main, ["delete", *where, "--where", "year >= 2018", "--yes", "--json"])
    assert done.exit_code == 0
    outcome = json.loads(done.output)
    assert (outcome["matched"], outcome["deleted"]) == (expected, expected)
    kept = next(r["id"] for r in rows(data) if r["year"] < 2018)
    ids = runner.invoke(main, ["delete", *where, "--ids", f"{kept},nope", "--yes"])
    assert "1 given id(s) have no point" in ids.output
    bad = runner.invoke(main, ["delete", *where, "--where", "nope = 1", "--yes"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output and "nope" in bad.output  # a filter: usage
    missing = runner.invoke(main, ["delete", "-c", "absent", "--data-dir", str(tmp_path / "store"), "--ids", "a"])
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_selector_mistakes_are_usage_errors(tmp_path, data, tiny_model, cli):
    where = ["-c", "u", "--data-dir", tmp_path / "store"]
    assert cli("ingest", data, *where, "--model", tiny_model, "-q", "--source", "s").exit_code == 0
    nothing = cli("delete", *where)
    assert nothing.exit_code == 2 and "name the points to delete" in nothing.output
    everything = cli("delete", *where, "--filter-json", "{}", "--yes")
    assert everything.exit_code == 1 and "matches every point" in everything.output
    unknown = cli("delete", *where, "--source", "nope", "--yes")
    assert unknown.exit_code == 0 and "0 point(s)" in unknown.output and "records 's'" in unknown.output
    empty = cli("delete", *where, "--ids", ",", "--dry-run")
    assert empty.exit_code == 2 and "--ids names no id" in empty.output
    two_ways = cli("delete", *where, "--ids", "a", "--where", "year > 1", "--dry-run")
    assert two_ways.exit_code == 2 and "name the points to delete one way" in two_ways.output
