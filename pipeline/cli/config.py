"""``mmindex config show``: every option of a command with its value and where it came from."""
from __future__ import annotations

import json

import click

from mmindex.connectors.qdrant_server import insecure_key
from mmindex.pipeline.cli.main import configurable
from mmindex.pipeline.config import mask


@click.group("config")
def config_group():
    """Inspect the settings that flags, MMINDEX_* variables and the config file resolve to."""


@config_group.command("show")
@click.argument("command_name", default="ingest", metavar="[COMMAND]")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def config_show(ctx, command_name, as_json):
    """Print every option of COMMAND (default: ingest) with its value and where it came from.

    Sources: flag, env (MMINDEX_<OPTION>), file (--config / ./mmindex.toml), default.
    Secrets (API keys, tokens) are masked.

    \b
    Examples:
      mmindex config show                         # what `mmindex ingest` would use
      MMINDEX_BATCH_SIZE=256 mmindex --config prod.toml config show ingest --json
    """
    root = ctx.find_root()
    command = configurable().get(command_name)
    if command is None:
        raise click.UsageError(f"no command {command_name!r} (commands: {', '.join(sorted(configurable()))})")
    resolved = command.make_context(command_name, [], parent=root, resilient_parsing=True)
    names = {"COMMANDLINE": "flag", "ENVIRONMENT": "env", "DEFAULT_MAP": "file", "DEFAULT": "default"}
    settings = []
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        source = resolved.get_parameter_source(param.name)
        value = resolved.params.get(param.name)
        envvars = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
        settings.append({"name": param.name, "option": max(param.opts, key=len), "value": mask(param.name, value),
                         "source": names.get(source.name, source.name.lower()) if source else "default",
                         "env": envvars, "command_line_only": bool(getattr(param, "command_line_only", False))})
    config_path = (root.obj or {}).get("config_path")
    warning = insecure_key(resolved.params.get("url"), resolved.params.get("api_key"))
    if as_json:
        click.echo(json.dumps({"command": command_name, "config_file": config_path, "settings": settings,
                               "warnings": [warning] if warning else []}, default=str))
        return
    click.echo(f"mmindex {command_name}: config file {config_path or '(none)'}")
    for item in settings:
        value = item["value"]
        shown = "-" if value is None or value == () else json.dumps(list(value) if isinstance(value, tuple) else value,
                                                                  default=str)
        click.echo(f"  {item['option']:<28} {shown:<36} {item['source']}")
    if warning:
        click.echo(f"warning: {warning}", err=True)
