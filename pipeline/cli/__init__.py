"""The ``mmindex`` command: one module per command family, each a thin skin over one library function.

The group (``main.py``) reads the config file and the environment; the families register here. Library errors
reach the user as one line and an exit code (``options.friendly_errors``), never a traceback.
"""
from __future__ import annotations

from mmindex.pipeline.cli import collection, config, ingest, models, query, serve
from mmindex.pipeline.cli.main import main
from mmindex.pipeline.cli.options import env_for_every_option

for command in (ingest.ingest, query.query, collection.info, collection.delete_command, models.evaluate_command,
                models.train_command, ingest.sample, models.init_model, serve.serve, config.config_group,
                collection.copy_command, collection.alias_group):
    main.add_command(command)
env_for_every_option(collection.alias_group)
env_for_every_option(main)

__all__ = ["main"]

if __name__ == "__main__":
    main()
