"""`mmindex facets`: the table and --json, counts equal to the sample's own and to what `query` finds with the same
filter, the note on a created index, and one line with exit code 2 for each mistake (docs/reliability.md)."""
from __future__ import annotations

import json
from collections import Counter

import pyarrow.dataset as ds


def sample_counts(sample_dir, column: str, keep=lambda row: True) -> Counter:
    rows = ds.dataset(str(sample_dir)).to_table().to_pylist()
    return Counter(row[column] for row in rows if row[column] is not None and keep(row))


def ordered(counts: Counter) -> list[list]:
    return [[value, count] for value, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def test_json_counts_are_the_samples_own_under_the_filter(run, ingested, sample_dir):
    result = run("facets", "color", "shape", "-c", "shapes", "--where", "year >= 2020", "--limit", "50", "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["collection"] == "shapes" and [f["field"] for f in answer["facets"]] == ["color", "shape"]
    for facet in answer["facets"]:
        expected = sample_counts(sample_dir, facet["field"], lambda row: row["year"] >= 2020)
        assert [[v["value"], v["count"]] for v in facet["values"]] == ordered(expected)
        assert facet["more"] is False
    # color was indexed at ingest (--index-fields year,color); shape gets its index now, once, with a note
    assert [f["index_created"] for f in answer["facets"]] == [False, True]
    assert "note: created a payload index on shape" in result.stderr and "on color" not in result.stderr


def test_the_table_shows_each_value_with_its_count_and_says_when_more_exist(run, ingested, sample_dir):
    result = run("facets", "color", "-c", "shapes", "--limit", "2")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "color in 'shapes': 2+ values"
    for line, (value, count) in zip(lines[1:3], ordered(sample_counts(sample_dir, "color"))):
        assert line.split() == [value, str(count)]
    assert lines[3].strip() == "… more values (--limit 4 shows more)"


def test_a_count_is_the_number_of_hits_query_finds_with_the_same_filter(run, ingested):
    answer = json.loads(run("facets", "shape", "-c", "shapes", "--where", "color = red", "--json").stdout)
    assert answer["facets"][0]["values"], "the sample has red shapes"
    for value in answer["facets"][0]["values"]:
        found = run("query", "a shape", "-c", "shapes", "--where", f"color = red and shape = '{value['value']}'",
                    "--limit", "100", "--json")
        assert len(found.stdout.splitlines()) == value["count"], value


def test_mistakes_are_one_line_usage_errors(run, ingested):
    for args, message in [
        (["colour"], "unknown field colour (fields: "),
        (["score"], "score holds float values: facets count the values of keyword, integer and bool fields only"),
        (["color", "--where", "colr = red"], "unknown field colr"),
        (["color", "--filter-json", "{nope"], "--filter-json is not valid JSON"),
        (["color", "--limit", "0"], "Invalid value for '--limit'"),
    ]:
        result = run("facets", *args, "-c", "shapes")
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr, result.stderr
        assert "Traceback" not in result.output


def test_a_missing_collection_exits_1_and_no_field_is_a_usage_error(run, ingested):
    missing = run("facets", "color", "-c", "nope")
    assert missing.exit_code == 1 and "collection 'nope' does not exist" in missing.stderr
    none = run("facets", "-c", "shapes")
    assert none.exit_code == 2 and "Missing argument 'FIELD...'" in none.stderr
