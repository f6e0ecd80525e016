"""`mmindex query`: JSON lines, tables, filters, image queries, headers, fields and paging."""
from __future__ import annotations

import json
import re


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


def test_query_needs_text_or_image(run, ingested):
    result = run("query", "-c", "shapes")
    assert result.exit_code == 2 and "give a TEXT to search for, --image FILE, or --like EXAMPLE" in result.output


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
