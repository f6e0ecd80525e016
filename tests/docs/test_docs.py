"""The docs cannot drift from the code.

- Every ``mmindex`` command line in a ```bash block of README.md or docs/*.md names a real command, and every
  option it uses exists on that command (a choice option's value is one of its choices). Parsed with click's own
  command objects: ``main.get_command`` resolves subcommands, each option is looked up in the command's params.
- The Try-it flow runs, offline, in a fresh folder: the README's one-liner and the commands of
  docs/getting-started.md that can run here (sample, ingest with the bundled demo model, query, info,
  config show), with ``--rows 40`` in the default suite and as written (500 rows) under ``-m slow``; and every
  command's ``--help``.
- The README stays the front door: at most 200 lines, the Try-it one-liner as getting-started has it, a row for
  every command in its table.
- The synopsis in docs/reference.md names every option of every command, and no option a command lacks.
- Every relative link in README.md and docs/*.md points to a file that exists (links from docs/ stay inside
  docs/, the only files MkDocs publishes; README anchors into docs/ name a heading of that page), so does every
  repository file the prose names in `code` (``tests/…``, ``deploy/…``), and mkdocs.yml's nav lists exactly the
  pages in docs/.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

from mmindex.pipeline.cli import main

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 200
DEMO_ROWS = 40  # the default suite's sample size; the docs' own (500) run under -m slow
# Commands the Try-it flow runs here: offline, quick, and touching only its own folder.
RUNNABLE = {("sample",), ("ingest",), ("query",), ("info",), ("config", "show")}
OPERATORS = {"&&", "||", ";", "|", "&"}
REDIRECTS = {">", ">>", "<", "2>", "&>"}

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
                   re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


# --- reading the pages -------------------------------------------------------------------------------------------

def fenced_blocks(path: Path) -> list[dict]:
    """Each fenced block of ``path``: info string, body, first line number, and the heading it sits under."""
    text = path.read_text(encoding="utf-8")
    headings = [(m.start(), m.group(2)) for m in HEADING.finditer(FENCE.sub(lambda m: " " * len(m.group(0)), text))]
    blocks = []
    for match in FENCE.finditer(text):
        above = [title for start, title in headings if start < match.start()]
        blocks.append({"info": match.group("info").strip().split(" ")[0].lower(), "body": match.group("body"),
                       "line": text.count("\n", 0, match.start()) + 2, "heading": above[-1] if above else "",
                       "page": path})
    return blocks


def logical_lines(body: str, first_line: int) -> list[tuple[int, str]]:
    """Lines of a shell block with ``\\`` continuations joined, each with the line number it starts on."""
    lines, pending, start = [], "", first_line
    for number, line in enumerate(body.splitlines(), start=first_line):
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lines.append((start, pending + line))
        pending = ""
    if pending:
        lines.append((start, pending))
    return lines


def shell_commands(line: str) -> list[list[str]]:
    """The simple commands of one shell line (split at ``&&``, ``||``, ``;``, ``|``), comments and redirects dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, current, skip_next = [], [], False
    for token in lexer:
        if skip_next:
            skip_next = False
        elif token in OPERATORS:
            commands.append(current)
            current = []
        elif token in REDIRECTS:
            skip_next = True
        else:
            current.append(token)
    commands.append(current)
    return [command for command in commands if command]


def mmindex_args(command: list[str]) -> list[str] | None:
    """The arguments after ``mmindex`` (or ``python -m mmindex``), past ``NAME=value`` prefixes; None for others."""
    words = list(command)
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        words.pop(0)
    if words[:1] == ["mmindex"]:
        return words[1:]
    if len(words) >= 3 and words[0] in ("python", "python3") and words[1:3] == ["-m", "mmindex"]:
        return words[3:]
    return None


def documented_commands(blocks: list[dict] | None = None) -> list[tuple[str, list[str]]]:
    """(``page:line``, arguments) of every mmindex command in a ```bash block of the README and docs/*.md."""
    found = []
    for block in blocks if blocks is not None else [b for page in PAGES for b in fenced_blocks(page)]:
        if block["info"] not in ("bash", "sh", "shell", "console"):
            continue
        for number, line in logical_lines(block["body"], block["line"]):
            where = f"{block['page'].relative_to(ROOT)}:{number}"
            try:
                commands = shell_commands(line)
            except ValueError as error:  # unbalanced quotes: the reader could not run it either
                found.append((where, ["<unparsable>", f"{error}: {line}"]))
                continue
            found.extend((where, args) for args in map(mmindex_args, commands) if args is not None)
    return found


# --- click -------------------------------------------------------------------------------------------------------

def context(command: click.Command, parent: click.Context | None = None, name: str = "mmindex") -> click.Context:
    """A context as click makes one when it runs ``command`` (settings such as ``-h`` pass from group to command)."""
    return click.Context(command, parent=parent, info_name=name, **command.context_settings)


def subcommand(ctx: click.Context, name: str) -> click.Context | None:
    command = ctx.command.get_command(ctx, name) if isinstance(ctx.command, click.Group) else None
    return context(command, ctx, name) if command is not None else None


def all_commands(ctx: click.Context | None = None, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Context]]:
    """Every command and group under ``main``, ``main`` itself first: its path and a context for it."""
    ctx = ctx or context(main)
    found = [(path, ctx)]
    if isinstance(ctx.command, click.Group):
        for name in ctx.command.list_commands(ctx):
            found.extend(all_commands(subcommand(ctx, name), path + (name,)))
    return found


def params_by_option(ctx: click.Context) -> dict[str, click.Parameter]:
    return {opt: param for param in ctx.command.get_params(ctx) if isinstance(param, click.Option)
            for opt in [*param.opts, *param.secondary_opts]}


def check_arguments(args: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """The command path ``args`` name, and every problem with their options (none: an empty list)."""
    ctx, path, problems, i = context(main), [], [], 0
    while i < len(args):
        token = args[i]
        if token == "--":
            break
        if token.startswith("-") and len(token) > 1 and not re.fullmatch(r"-\d[\d.]*", token):
            name, equals, value = token.partition("=") if token.startswith("--") else (token, "", "")
            param = params_by_option(ctx).get(name)
            if param is None:
                problems.append(f"`mmindex {' '.join(path)}` has no option {name}")
                i += 1
                continue
            takes_value = not (param.is_flag or param.count)
            if takes_value and not equals:
                value = args[i + 1] if i + 1 < len(args) else ""
                i += param.nargs
            if takes_value and isinstance(param.type, click.Choice) and "$" not in value:
                choices = [str(c) for c in param.type.choices]
                if (value if param.type.case_sensitive else value.lower()) not in choices:
                    problems.append(f"`mmindex {' '.join(path)} {name}` takes {'|'.join(choices)}, not {value!r}")
            i += 1
            continue
        if isinstance(ctx.command, click.Group):
            sub = subcommand(ctx, token)
            if sub is None:
                problems.append(f"`mmindex {' '.join(path)}` has no command {token!r}")
                break
            ctx = sub
            path.append(token)
        i += 1
    return tuple(path), problems


DOCUMENTED = documented_commands()


def test_the_docs_hold_commands_to_check():
    assert len(DOCUMENTED) >= 40, "the ```bash blocks were not read: is the fence pattern out of date?"
    found = {check_arguments(args)[0] for _, args in DOCUMENTED}
    for path in RUNNABLE | {("serve",), ("eval",), ("train",), ("delete",), ("copy",), ("alias", "set")}:
        assert path in found, f"no ```bash block shows `mmindex {' '.join(path)}`"


@pytest.mark.parametrize("where,args", DOCUMENTED, ids=[f"{w} {' '.join(a[:1])}" for w, a in DOCUMENTED])
def test_documented_command_and_its_options_exist(where, args):
    assert args[:1] != ["<unparsable>"], f"{where}: {args[1]}"
    path, problems = check_arguments(args)
    assert not problems, f"{where}: mmindex {shlex.join(args)}\n" + "\n".join(problems)


def test_the_checker_sees_a_wrong_option_and_a_wrong_command():
    assert check_arguments(["ingest", "data", "--thumbnails", "64", "--text-model", "x"])[1] == []
    assert check_arguments(["ingest", "data", "--no-such-option"])[1]
    assert check_arguments(["alias", "rename", "a", "b"])[1]
    assert check_arguments(["query", "x", "--target", "pictures"])[1]
    assert check_arguments(["--config", "prod.toml", "config", "show", "ingest", "--json"]) == (("config", "show"), [])
    assert check_arguments(["ingest", "-h"]) == (("ingest",), [])  # -h reaches every command, as in a real run


# --- the Try-it flow, run --------------------------------------------------------------------------------------------

def flow(rows: int | None) -> list[list[str]]:
    """The README's Try-it commands and getting-started's that can run here, in order, each once."""
    blocks = [b for b in fenced_blocks(README) if b["heading"].lower().startswith("try it")]
    assert len(blocks) == 1, "README.md has no ```bash block under its 'Try it' heading"
    blocks += fenced_blocks(DOCS / "getting-started.md")
    commands = []
    for _, args in documented_commands(blocks):
        if check_arguments(args)[0] not in RUNNABLE or any("$" in a for a in args):
            continue
        if rows is not None:
            args = [str(min(rows, int(a))) if i and args[i - 1] == "--rows" else a for i, a in enumerate(args)]
        if args not in commands:
            commands.append(args)
    return commands


def run_flow(cli, tmp_path, rows):
    (tmp_path / "demo").symlink_to(ROOT / "demo", target_is_directory=True)  # the docs' `--model demo/shapes-clip`
    commands = flow(rows)
    assert {check_arguments(c)[0] for c in commands} == RUNNABLE
    for args in commands:
        result = cli(*args)
        assert result.exit_code == 0, f"mmindex {shlex.join(args)}\n{result.output}"
        assert result.output.strip(), f"mmindex {shlex.join(args)} printed nothing"


def test_try_it_flow_runs(cli, tmp_path):
    run_flow(cli, tmp_path, DEMO_ROWS)
    assert len(list((tmp_path / "data" / "images").glob("*.jpg"))) == DEMO_ROWS


@pytest.mark.slow
def test_try_it_flow_runs_as_written(cli, tmp_path):
    run_flow(cli, tmp_path, None)


@pytest.mark.parametrize("path", [p for p, _ in all_commands()], ids=lambda p: " ".join(p) or "mmindex")
def test_help_of_every_command(cli, path):
    result = cli(*path, "--help")
    assert result.exit_code == 0 and "Usage:" in result.output, result.output


# --- the README --------------------------------------------------------------------------------------------------

def test_readme_is_the_front_door():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES, f"README.md has {len(text.splitlines())} lines"
    try_it = [b["body"] for b in fenced_blocks(README) if b["heading"].lower().startswith("try it")]
    assert try_it and try_it[0] in [b["body"] for b in fenced_blocks(DOCS / "getting-started.md")], \
        "getting-started.md must show the README's Try-it command as it is"
    rows = [line for line in text.splitlines() if line.startswith("| `mmindex")]
    for path, _ in all_commands():
        name = " ".join(("mmindex",) + path)
        assert any(re.match(rf"\| `{re.escape(name)}(`| )", row) for row in rows), \
            f"README.md's command table has no row for `{name}`"


# --- the synopsis --------------------------------------------------------------------------------------------------

def synopsis() -> dict[tuple[str, ...], str]:
    """docs/reference.md's ```text synopsis: command path → its entry, with ``STORE`` spelt out."""
    blocks = [b["body"] for b in fenced_blocks(DOCS / "reference.md") if b["info"] == "text"]
    assert blocks, "docs/reference.md has no ```text synopsis"
    entries, macros, key = {}, {}, None
    for line in blocks[0].splitlines():
        if not line.strip():
            key = None
        elif line.startswith("STORE ="):
            key = "STORE"
            macros[key] = line.partition("=")[2]
        elif line.startswith("mmindex"):
            words, path, ctx = line.split()[1:], [], context(main)
            while words and subcommand(ctx, words[0]) is not None:
                ctx = subcommand(ctx, words[0])
                path.append(words.pop(0))
            key = tuple(path)
            assert key not in entries, f"the synopsis shows `mmindex {' '.join(key)}` twice"
            entries[key] = line
        elif key == "STORE":
            macros[key] += " " + line
        elif key is not None:
            entries[key] += " " + line
    return {k: re.sub(r"\bSTORE\b", macros.get("STORE", ""), v) for k, v in entries.items()}


def test_synopsis_names_every_option_of_every_command():
    entries = synopsis()
    for path, ctx in all_commands():
        if isinstance(ctx.command, click.Group) and path:
            continue  # a group's own options are --help alone; its commands have entries
        name = " ".join(("mmindex",) + path)
        assert path in entries, f"docs/reference.md's synopsis has no entry for `{name}`"
        shown = set(re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", entries[path]))
        options = params_by_option(ctx)
        for opt in sorted(shown - set(options)):
            pytest.fail(f"the synopsis of `{name}` shows {opt}, which it does not take")
        helps = set(ctx.help_option_names)  # every command has them; the page says so once
        for param in {id(p): p for p in options.values()}.values():
            if param.hidden or set(param.opts) & helps:
                continue
            wanted = [o for o in param.opts if o.startswith("--")][:1] + list(param.secondary_opts)
            missing = [o for o in wanted if o not in shown]
            assert not missing, f"the synopsis of `{name}` omits {', '.join(missing)}"


# --- links and the nav ---------------------------------------------------------------------------------------------

def prose(path: Path) -> str:
    """The page without its fenced blocks and inline code, where brackets are not links."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return re.sub(r"(`+)(?:(?!\1).)+?\1", "", text, flags=re.DOTALL)


def github_slug(title: str) -> str:
    title = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", title).strip().lower()
    return re.sub(r"[^\w\- ]", "", title).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files(page):
    bad = []
    for target in LINK.findall(prose(page)):
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve()
        if not resolved.exists():
            bad.append(f"{target}: no such file")
        elif page.parent == DOCS and DOCS not in resolved.parents:
            bad.append(f"{target}: outside docs/, which MkDocs does not publish (name the file in `code` instead)")
        elif anchor and page == README and resolved.suffix == ".md":
            slugs = {github_slug(m.group(2)) for m in HEADING.finditer(FENCE.sub("", resolved.read_text("utf-8")))}
            if anchor not in slugs:
                bad.append(f"{target}: {resolved.name} has no heading #{anchor}")
    assert not bad, f"{page.relative_to(ROOT)}:\n" + "\n".join(bad)


# Repository files the prose names in `code` (`tests/models/test_demo_model.py`, `deploy/k8s/cronjob.yaml`): folders of
# this repository only (docs/ pages are links, checked above and by mkdocs; other projects' paths are not ours).
REPO_PATH = re.compile(r"(?:tests|bench|deploy|demo|pipeline|connectors|mmindex|\.ci)/[\w./{},-]*")


def expand_braces(path: str) -> list[str]:
    """``a.{service,timer}`` → ``a.service``, ``a.timer`` (as the shell expands them)."""
    match = re.search(r"\{([^{}]*)\}", path)
    if not match:
        return [path]
    return [p for part in match.group(1).split(",") for p in expand_braces(path[:match.start()] + part + path[match.end():])]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_repository_files_named_in_code_exist(page):
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    spans = [m.group(2).strip() for m in re.finditer(r"(`+)((?:(?!\1).)+?)\1", text, flags=re.DOTALL)]
    missing = [path for span in spans if REPO_PATH.fullmatch(span) for path in expand_braces(span)
               if not (ROOT / path).exists()]
    assert not missing, f"{page.relative_to(ROOT)} names files that do not exist: {', '.join(missing)}"


def nav_pages(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return [page for item in nav for page in nav_pages(item)]


def test_nav_lists_every_page():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = nav_pages(config["nav"])
    assert sorted(listed) == sorted(p.name for p in DOCS.glob("*.md")), "mkdocs.yml's nav and docs/*.md differ"
    assert len(listed) == len(set(listed))


def test_the_test_command_says_what_the_skipped_tests_need():
    """Every system tool a test skips without (a skip reason that says ``apt-get install X``) is named where the
    README gives the test command, so a new user is not left with an unexplained skip."""
    section = README.read_text().split("## Run the tests", 1)[1].split("\n## ", 1)[0].lower()
    needed = {match for path in (ROOT / "tests").rglob("test_*.py")
              for match in re.findall(r"apt-get install ([a-z0-9-]+)", path.read_text())}
    assert needed, "no test skips for a system tool any more: drop this test"
    assert {tool for tool in needed if tool not in section} == set()


def test_the_site_builds_in_strict_mode(tmp_path):
    """The docs site builds as .ci/run builds it (``mkdocs build --strict``): a docstring that autorefs reads as a
    cross-reference (``confusion[i][j]`` outside backticks) or a broken link fails here, not only in CI."""
    import subprocess  # only this test runs a process
    import sys
    import os

    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert result.returncode == 0, "\n".join(warnings) or result.stderr[-2000:]
