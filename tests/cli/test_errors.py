"""User errors of every command are one line on stderr and a non-zero exit."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "args, message",
    [
        (("query", "x", "-c", "missing"), "collection 'missing' does not exist"),  # exit 1; the rest up to ingest: 2
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
    # a filter that does not parse or cannot match is the command line's fault: a usage error (exit 2)
    assert result.exit_code == (2 if "--where" in args or "--filter-json" in args else 1)
    assert message in result.stderr and "Traceback" not in result.output
