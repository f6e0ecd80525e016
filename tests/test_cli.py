"""The real `mmindex` CLI, driven with click's CliRunner on real files."""
from __future__ import annotations

import json
import re

import click
import pytest
from click.testing import CliRunner

from mmindex.pipeline.cli import main
from mmindex.pipeline.cli.format import SectionedCommand


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
    assert info["points"] == 60 and info["model"] == "tiny-clip" and info["vectors"] == ["image", "text"]
    assert info["model_path"] == tiny_model and info["model_fingerprint"].startswith("sha256:")
    assert info["id_rule"] == {"rule": "column", "column": "id"}
    assert info["indexed_fields"] == {"color": "keyword", "year": "integer"}


@pytest.mark.parametrize(
    "args, message",
    [
        (("query", "x", "-c", "missing"), "collection 'missing' does not exist"),
        (("query", "x", "-c", "shapes", "--where", "year >>= 3"), "expected a value"),
        (("query", "x", "-c", "shapes", "--filter-json", "{bad"), "not valid JSON"),
        (("query", "x", "-c", "shapes", "--filter-json", '{"must": [{"key": "year", "match": {"value": 1.5}}]}'),
         "--filter-json: must[0].match.value is 1.5"),
        (("query", "x", "-c", "shapes", "--filter-json", '{"must": [{"key": "year", "range": {"lt": NaN}}]}'),
         "lt is nan, which matches nothing"),
        (("query", "x", "-c", "shapes", "--filter-json", '{"must": [{"has_id": ["abc"]}]}'), "not a point id"),
        (("query", "x", "-c", "shapes", "--filter-json", "null"), "must be a JSON object"),
        (("query", "x", "-c", "shapes", "--where", "color > red"), "color is a keyword field"),
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
    assert result.exit_code == 2 and "give a TEXT to search for, or --image FILE" in result.output


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


def test_query_prints_a_header_per_query_with_the_model_name(run, ingested, tiny_model):
    result = run("query", "a red circle", "a blue star", "-c", "shapes", "-k", "2", "--where", "year >= 2020")
    assert result.exit_code == 0, result.output
    headers = [line for line in result.stdout.splitlines() if "→" in line]
    assert headers == [
        "'a red circle' → images of 'shapes' (model tiny-clip), where year >= 2020: 2 hits",
        "'a blue star' → images of 'shapes' (model tiny-clip), where year >= 2020: 2 hits",
    ]
    assert tiny_model not in result.stdout  # the folder's name, never the ingesting machine's path


def test_query_fields_chooses_what_is_shown(run, ingested):
    result = run("query", "a red circle", "-c", "shapes", "-k", "3", "--fields", "shape,year,shape,caption")
    assert result.exit_code == 0, result.output
    field_lines = [line.strip() for line in result.stdout.splitlines() if line.startswith("      ")]
    assert len(field_lines) == 3
    assert all(re.fullmatch(r"shape=\w+  year=\d{4}  caption=\S.*", line) for line in field_lines), field_lines
    as_json = [json.loads(line) for line in run("query", "a red circle", "-c", "shapes", "-k", "3", "--fields",
                                                "shape,year", "--json").stdout.splitlines()]
    assert [sorted(hit["payload"]) for hit in as_json] == [["shape", "year"]] * 3


def test_query_fields_names_an_unknown_field(run, ingested):
    result = run("query", "a red circle", "-c", "shapes", "--fields", "shape,colour")
    assert result.exit_code == 2 and "--fields: no field 'colour' in collection 'shapes'" in result.output
    assert "color" in result.output  # the fields it has


def test_query_output_fits_the_terminal_in_screen_columns():
    from mmindex.pipeline.cli.format import display_width, short

    assert display_width("蓝色的三角形") == 12 and display_width("é") == 1
    assert display_width(short("蓝色的三角形在白色的背景上", 10)) <= 10
    assert short("a\nb\tc", 10) == "a b c"


def test_query_default_fields_start_with_the_indexed_ones_and_fit_the_width(run, ingested, monkeypatch):
    monkeypatch.setenv("COLUMNS", "70")
    result = run("query", "a red circle", "-c", "shapes", "-k", "3")
    field_lines = [line for line in result.stdout.splitlines() if line.startswith("      ")]
    assert len(field_lines) == 3
    for line in field_lines:
        assert line.split()[:2][0].startswith("color=") and line.split()[1].startswith("year=")
        assert len(line) <= 70 and line.endswith("…")  # more fields than fit: cut, and said so


def test_query_json_names_the_query_and_rank(run, ingested, sample_dir, tmp_path):
    import pyarrow.parquet as pq

    row = pq.read_table(sorted(sample_dir.glob("*.parquet"))[0]).to_pylist()[0]
    (tmp_path / "q.jpg").write_bytes(row["image"])
    result = run("query", "a red circle", "--image", tmp_path / "q.jpg", "-c", "shapes", "-k", "2", "--offset", "1",
                 "--json")
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(h["query"], h["rank"]) for h in hits] == [
        ({"text": "a red circle"}, 2), ({"text": "a red circle"}, 3),
        ({"image": str(tmp_path / "q.jpg")}, 2), ({"image": str(tmp_path / "q.jpg")}, 3)]


def test_info_shows_the_model_by_name(run, ingested, tiny_model):
    line = next(l for l in run("info", "-c", "shapes").stdout.splitlines() if l.startswith("model"))
    assert line.split()[1] == "tiny-clip" and f"loaded from {tiny_model}" in line and "(sha256:" in line


def test_version():
    from mmindex import __version__

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"mmindex, version {__version__}"


def _options(group, prefix=("mmindex",)):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _options(command, prefix + (name,))
            continue
        for param in command.params:
            if isinstance(param, click.Option):
                yield " ".join(prefix + (name,)), param, command


def test_every_option_has_a_one_line_description():
    missing = [f"{command} {max(param.opts, key=len)}" for command, param, _ in _options(main)
               if not (param.help or "").strip() or "\n" in param.help]
    assert missing == []


def test_sectioned_help_places_every_option_once():
    for name, _, command in {(n, None, c) for n, _, c in _options(main) if isinstance(c, SectionedCommand)}:
        context = click.Context(command, info_name=name)
        assert command.unknown() == [] and command.unplaced(context) == [], name
        names = [option for _, section in command.sections for option in section]
        assert len(names) == len(set(names)), name


def test_ingest_help_starts_with_what_people_need(run):
    text = run("ingest", "--help").stdout
    titles = [line[:-1] for line in text.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert titles == ["Input, model and collection", "Keeping the collection in sync", "Reliability", "Throughput",
                      "Output",
                          "Server connection and collection layout (Qdrant server or cluster)", "Other options"]
    options = text[text.index("Input, model and collection:"):]
    order = [options.index(flag) for flag in ("--collection", "--model", "--caption-col", "--missing-caption",
                                           "--max-reject-rate", "--batch-size", "--workers", "--shard-number",
                                           "--quantization")]
    assert order == sorted(order)
