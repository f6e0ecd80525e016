"""The exit-code table of docs/reliability.md holds for every command: one example per row runs here (130 and 143
in tests/ingest/test_resume.py, which signals a real run), and no error that names a command-line option can exit
as anything but a usage error."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmindex.pipeline.ingest.sample import write_sample

ROOT = Path(__file__).resolve().parents[2]
SIGNALLED = {130, 143}  # tests/ingest/test_resume.py::test_signal_stops_cleanly_and_resume_completes

CASES = [
    (0, ("query", "a red circle", "-c", "shapes")),
    (0, ("info", "-c", "shapes")),
    (1, ("query", "a red circle", "-c", "no-such-collection")),
    (1, ("info", "-c", "no-such-collection")),
    (1, ("ingest", "nowhere/*.parquet", "-c", "shapes")),
    (2, ("ingest", "{data}", "-c", "shapes", "--caption-col", "nope")),  # the example (was 1)
    (2, ("ingest", "{data}", "-c", "shapes", "--image-col", "nope")),
    (2, ("ingest", "{data}", "-c", "shapes", "--payload-cols", "nope")),
    (2, ("ingest", "{data}", "-c", "shapes", "--index-fields", "nope")),
    (2, ("ingest", "{data}", "-c", "shapes", "--index-fields", "year:bogus")),
    (2, ("ingest", "{data}", "-c", "shapes", "--index-fields", "tags.nope")),  # reviews: a field below a column
    (2, ("ingest", "{data}", "-c", "fresh", "--index-fields", "year.nope")),
    (2, ("copy", "-c", "shapes", "--to-collection", "shapes")),
    (2, ("ingest", "{data}", "-c", "shapes", "--no-such-option")),
    (2, ("eval", "{data}", "--group-col", "nope")),
    (2, ("query", "a red circle", "-c", "shapes", "--where", "year >=")),
    (2, ("query", "a red circle", "-c", "shapes", "--where", "color > red")),
    (2, ("query", "a red circle", "-c", "shapes", "--filter-json", "{bad")),
    (2, ("query", "a red circle", "-c", "shapes", "--target", "both", "--score-threshold", "0.5")),
    (2, ("query", "a red circle", "-c", "shapes", "--fields", "nope")),
    (2, ("query", "a red circle", "-c", "shapes", "--limit", "0")),
    (2, ("delete", "-c", "shapes", "--ids")),
    (3, ("ingest", "{broken}", "-c", "broken")),
]


def documented_codes() -> set[int]:
    text = (ROOT / "docs" / "reliability.md").read_text()
    table = text.split("## Exit codes", 1)[1]
    return {int(code) for row in re.findall(r"^\| ([\d, ]+) \|", table, re.M) for code in row.split(",")}


def test_every_documented_code_has_an_example_here():
    assert documented_codes() == {code for code, _ in CASES} | SIGNALLED


@pytest.fixture
def broken(tmp_path):
    """20 rows, 6 of them with bytes that are no image: 30% rejected, over the default 5%."""
    path = write_sample(tmp_path / "broken", rows=20, seed=2, width=32, height=32)[0]
    rows = pq.read_table(path).to_pylist()
    for row in rows[:6]:
        row["image"] = b"not an image"
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), path)
    return tmp_path / "broken"


@pytest.mark.parametrize("code, args", CASES, ids=[" ".join(args[:1] + args[3:]) for _, args in CASES])
def test_each_row_of_the_table(run, ingested, tiny_model, sample_dir, broken, code, args):
    args = [{"{data}": str(sample_dir), "{broken}": str(broken)}.get(a, a) for a in args]
    if args[0] in ("ingest", "eval") and "--no-such-option" not in args:
        args += ["--model", tiny_model]
    result = run(*args)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    if code == 2:
        assert "loading model" not in result.output  # the command line is checked before any model loads


def option_errors(root: Path) -> list[str]:
    """``InputError(...)`` calls whose message is about an option's value — it starts with the option's name
    (``--caption-col 'x' is not a column``) or asks for one (``name it with --caption-col``): usage errors."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "InputError" and node.args:
                text = "".join(sub.value for sub in ast.walk(node.args[0])
                               if isinstance(sub, ast.Constant) and isinstance(sub.value, str))
                if re.match(r"--[a-z]", text) or "name it with --" in text:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text[:80]}")
    return found


def test_errors_that_name_an_option_are_usage_errors():
    """The kind behind "--caption-col nope exits 1": an error caused by an option's value is a UsageError."""
    assert option_errors(ROOT / "pipeline") == []
