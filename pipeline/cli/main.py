"""The ``mmindex`` group: the config file, MMINDEX_* variables and logging, for every command."""
from __future__ import annotations

import importlib
import logging
import os

import click

from mmindex import __version__
from mmindex.errors import MmindexError
from mmindex.pipeline.cli.options import env_for_every_option
from mmindex.pipeline.config import default_map, find_config, read_config

# Each command: the module that holds it and the first line of its help. A command's module (and the library behind
# it) is imported only when that command runs; `mmindex --help` lists the commands from this table without importing
# any (tests/cli/test_help.py checks the lines against the commands' own help).
COMMANDS = {
    "ingest": ("mmindex.pipeline.cli.ingest:ingest",
               "Embed images and captions from Parquet INPUTS and upsert one point per row."),
    "sample": ("mmindex.pipeline.cli.ingest:sample",
               "Write synthetic image–caption Parquet (coloured shapes) to OUTPUT."),
    "query": ("mmindex.pipeline.cli.query:query", "Search a collection with TEXT or an --image, across modalities."),
    "facets": ("mmindex.pipeline.cli.facets:facets_command",
               "Count the points holding each value of payload FIELDs, under a filter."),
    "info": ("mmindex.pipeline.cli.collection:info",
             "Show a collection: points, model, vector size, payload schema and indexes."),
    "delete": ("mmindex.pipeline.cli.collection:delete_command",
               "Delete points from a collection: by id, by filter, or everything one source wrote."),
    "copy": ("mmindex.pipeline.cli.collection:copy_command",
             "Copy a collection to another store: points, vectors, payloads, model record, layout, indexes."),
    "label": ("mmindex.pipeline.cli.classify:label_command",
              "Write zero-shot labels into each point's payload, from its stored image vector."),
    "keywords": ("mmindex.pipeline.cli.keywords:keywords_command",
                 "Give a collection's points their keyword vectors (BM25), from stored captions; no model."),
    "duplicates": ("mmindex.pipeline.cli.duplicates:duplicates_command",
                   "Find groups of duplicate images in a collection, with a suggested keeper for each."),
    "alias": ("mmindex.pipeline.cli.collection:alias_group",
              "Names that point to a collection, switched in one atomic step."),
    "eval": ("mmindex.pipeline.cli.models:evaluate_command",
             "Measure retrieval quality on image–caption pairs in INPUTS."),
    "train": ("mmindex.pipeline.cli.models:train_command",
              "Fine-tune a CLIP contrastively on image–caption pairs in INPUTS."),
    "init-model": ("mmindex.pipeline.cli.models:init_model", "Create an UNTRAINED CLIP model folder at OUTPUT, offline."),
    "serve": ("mmindex.pipeline.cli.serve:serve", "Serve search and embedding over HTTP, with a search page at /."),
    "config": ("mmindex.pipeline.cli.config:config_group",
               "Inspect the settings that flags, MMINDEX_* variables and the config file resolve to."),
}


class LazyGroup(click.Group):
    """A click group that imports a command's module on first use (click's documented lazy-loading pattern) and
    lists the commands from ``lazy`` without importing them; every option of a loaded command can also come from
    MMINDEX_<OPTION> (``env_for_every_option``)."""

    def __init__(self, *args, lazy: dict[str, tuple[str, str]], **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in self.lazy:
            module, attribute = self.lazy[name][0].split(":")
            command = getattr(importlib.import_module(module), attribute)
            env_for_every_option(command)
            self.add_command(command, name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's own layout, with each command's line from ``lazy`` when it is not loaded."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names))
        rows = [(name, (self.commands.get(name) or click.Command(name, help=self.lazy[name][1]))
                 .get_short_help_str(limit)) for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, lazy=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="mmindex", message="%(prog)s, version %(version)s")
@click.option("--config", "config_path", default=None, envvar="MMINDEX_CONFIG", type=click.Path(dir_okay=False),
              help="TOML file of settings (default: ./mmindex.toml if present). Env: MMINDEX_CONFIG.")
@click.pass_context
def main(ctx, config_path):
    """mmindex: index images and captions from Parquet into Qdrant, and search across them.

    \b
    Quick start (offline, from a checkout, with the bundled demo model):
      mmindex sample data --rows 500 --image-kind path
      mmindex ingest data --collection shapes --model demo/shapes-clip
      mmindex query "a blue triangle" --collection shapes --where "year >= 2020"
      mmindex query --image data/images/shape-0000003.jpg -c shapes --target text
      mmindex eval data --model demo/shapes-clip
      mmindex serve -c shapes --image-root data        # a search page on http://127.0.0.1:8080/

    The embedded store (Qdrant Edge, no server) lives under --data-dir; pass --url (or set
    QDRANT_URL) to use a Qdrant server instead.

    Every option can also come from the environment as MMINDEX_<OPTION> (e.g.
    MMINDEX_BATCH_SIZE=128) or from a TOML file (--config, or ./mmindex.toml): flags win over
    the environment, which wins over the file. `mmindex config show` prints what applies.
    MMINDEX_LOG_LEVEL=INFO shows mmindex's own notes on stderr (e.g. why a query did not take the
    fast path).
    """
    level = os.environ.get("MMINDEX_LOG_LEVEL", "").strip().upper()
    if level:
        logging.basicConfig(format="%(name)s: %(message)s")
        logging.getLogger("mmindex").setLevel(level if isinstance(logging.getLevelName(level), int) else "INFO")

    path = find_config(config_path)
    ctx.ensure_object(dict)["config_path"] = path
    if path:
        try:
            ctx.default_map = default_map(read_config(path), configurable(), path)
        except MmindexError as error:
            raise click.ClickException(str(error)) from error


def configurable() -> dict[str, click.Command]:
    """The commands a config file can set options of."""
    commands = {name: main.get_command(None, name) for name in main.list_commands(None)}  # loads every command
    return {name: command for name, command in commands.items() if not isinstance(command, click.Group)}
