"""The real `mmindex` CLI, driven with click's CliRunner on real files."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pipeline.cli import main


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


def test_ingest_prints_a_json_summary_that_adds_up(ingested):
    assert ingested["read"] == 60 and ingested["upserted"] == 60
    assert ingested["read"] == ingested["upserted"] + ingested["unchanged"] + ingested["rejected"]


def test_ingest_again_uses_the_collection_model_and_skips_everything(run, ingested, sample_dir):
    result = run("ingest", sample_dir, "-c", "shapes", "--json", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["unchanged"], summary["embedded"]) == (60, 0)


def test_human_summary_and_notes(run, tiny_model, sample_dir):
    result = run("ingest", sample_dir, "-c", "x", "--model", tiny_model)
    assert result.exit_code == 0, result.output
    assert "note: caption column: 'caption' (detected" in result.stderr
    assert "embedded 60  upserted 60  unchanged (skipped) 0  rejected 0" in result.stdout


def test_query_json_lines_parse_and_respect_where(run, ingested):
    result = run("query", "a red circle", "-c", "shapes", "--where", "year >= 2020", "--limit", "5", "--json")
    assert result.exit_code == 0, result.output
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert 1 <= len(hits) <= 5
    assert all(h["payload"]["year"] >= 2020 and isinstance(h["score"], float) for h in hits)
    assert all(h["source"]["file"].endswith(".parquet") for h in hits)


def test_image_query_against_captions(run, ingested, sample_dir, tmp_path):
    import pyarrow.parquet as pq

    row = pq.read_table(sorted(sample_dir.glob("*.parquet"))[0]).to_pylist()[0]
    (tmp_path / "q.jpg").write_bytes(row["image"])
    result = run("query", "--image", tmp_path / "q.jpg", "-c", "shapes", "--target", "text", "--json", "-k", "3")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 3
    same = run("query", "--image", tmp_path / "q.jpg", "-c", "shapes", "--json", "-k", "1")
    assert json.loads(same.stdout)["payload"]["id"] == row["id"]


def test_table_output_and_filter_json(run, ingested):
    result = run("query", "a blue star", "-c", "shapes", "--filter-json",
                 '{"must": [{"key": "color", "match": {"value": "blue"}}]}', "-k", "2")
    assert result.exit_code == 0, result.output
    assert "  1. " in result.stdout and "color=blue" in result.stdout


def test_info_json(run, ingested, tiny_model):
    result = run("info", "-c", "shapes", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["points"] == 60 and info["model"] == tiny_model and info["vectors"] == ["image", "text"]
    assert info["indexed_fields"] == {"color": "keyword", "year": "integer"}


@pytest.mark.parametrize(
    "args, message",
    [
        (("query", "x", "-c", "missing"), "collection 'missing' does not exist"),
        (("query", "x", "-c", "shapes", "--where", "year >>= 3"), "expected a value"),
        (("query", "x", "-c", "shapes", "--filter-json", "{bad"), "not valid JSON"),
        (("ingest", "nowhere/*.parquet", "-c", "shapes"), "no Parquet files found"),
        (("info", "-c", "nothing"), "does not exist"),
    ],
)
def test_user_errors_are_one_line_and_exit_non_zero(run, ingested, args, message):
    result = run(*args)
    assert result.exit_code == 1
    assert message in result.stderr and "Traceback" not in result.output


def test_ingest_with_another_model_is_refused(run, ingested, sample_dir, tmp_path):
    run("init-model", tmp_path / "other", "--seed", "3")
    result = run("ingest", sample_dir, "-c", "shapes", "--model", tmp_path / "other", "--quiet")
    assert result.exit_code == 1 and "holds vectors of model" in result.stderr
    assert json.loads(run("info", "-c", "shapes", "--json").stdout)["points"] == 60


def test_query_needs_text_or_image(run, ingested):
    result = run("query", "-c", "shapes")
    assert result.exit_code == 2 and "either TEXT or --image" in result.output


def test_sample_writes_parquet(run, tmp_path):
    result = run("sample", tmp_path / "s", "--rows", "7", "--files", "2", "--image-kind", "path")
    assert result.exit_code == 0 and "wrote 7 rows to 2 file(s)" in result.stdout
    assert len(list((tmp_path / "s" / "images").iterdir())) == 7


def test_help_teaches_with_examples(run):
    for command in ("ingest", "query", "info", "sample", "init-model"):
        result = run(command, "--help")
        assert result.exit_code == 0
    assert "Examples:" in run("query", "--help").stdout
    assert "Quick start" in run("--help").stdout
