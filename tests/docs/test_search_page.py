"""docs/search.md's Try-it commands run as written (with fewer rows), each printing an answer."""
from __future__ import annotations

import shlex

from tests.docs.test_docs import DOCS, ROOT, documented_commands, fenced_blocks

PAGE = DOCS / "search.md"
ROWS = 60


def try_it() -> list[list[str]]:
    blocks = [b for b in fenced_blocks(PAGE) if b["heading"].lower().startswith("try it")]
    assert len(blocks) == 1, "docs/search.md has no ```bash block under its 'Try it' heading"
    commands = [args for _, args in documented_commands(blocks)]
    return [[str(ROWS) if i and args[i - 1] == "--rows" else a for i, a in enumerate(args)] for args in commands]


def test_the_search_page_shows_every_ranking_option():
    shown = " ".join(shlex.join(args) for args in try_it())
    for option in ("--mode hybrid", "--not", "--diversity", "--pool", "--group-by", "--group-size", "--boost",
                   "--cutoff auto", "--text-fields", "facets"):
        assert option in shown, option


def test_the_search_page_runs_as_written(cli, tmp_path):
    (tmp_path / "demo").symlink_to(ROOT / "demo", target_is_directory=True)  # `--model demo/shapes-clip`
    for args in try_it():
        result = cli(*args)
        assert result.exit_code == 0, f"mmindex {shlex.join(args)}\n{result.output}"
        assert result.output.strip(), f"mmindex {shlex.join(args)} printed nothing"
