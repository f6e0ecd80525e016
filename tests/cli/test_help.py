"""Help and version: examples in the help, one-line option descriptions, sectioned help that places
every option once."""
from __future__ import annotations

import inspect

import click
from click.testing import CliRunner

from mmindex.pipeline.cli import main
from mmindex.pipeline.cli.format import SectionedCommand


def test_help_teaches_with_examples(run):
    for command in ("ingest", "query", "info", "sample", "init-model"):
        result = run(command, "--help")
        assert result.exit_code == 0
    assert "Examples:" in run("query", "--help").stdout
    assert "Quick start" in run("--help").stdout


def test_version():
    from mmindex import __version__

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"mmindex, version {__version__}"


def _commands(group):
    """Every command of ``group``, loading the lazy ones (``main.commands`` holds only those already used)."""
    context = click.Context(group)
    return [(name, group.get_command(context, name)) for name in group.list_commands(context)]


def _options(group, prefix=("mmindex",)):
    for name, command in _commands(group):
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


def test_the_options_walk_sees_every_command():
    """The checks above cover every command, not only those an earlier test happened to load."""
    walked = {command for command, _, _ in _options(main)}
    assert {"mmindex ingest", "mmindex query", "mmindex serve", "mmindex alias set", "mmindex config show"} <= walked
    assert len(walked) == 18


def test_the_command_list_in_help_is_each_command_s_own_first_line(run):
    """`mmindex --help` lists commands from main.COMMANDS without importing them; each line is the command's own."""
    from mmindex.pipeline.cli.main import COMMANDS

    for name, command in _commands(main):
        first = " ".join(inspect.cleandoc(command.help).split("\n\n")[0].split())
        assert COMMANDS[name][1] == first, name
    assert set(COMMANDS) == {name for name, _ in _commands(main)}
