"""The ``mmindex`` command: one module per command family, each a thin skin over one library function.

``main.py`` is the group (config file, environment, logging) and the index of commands (``COMMANDS``): which module
holds each, imported when that command runs. Library errors reach the user as one line and an exit code
(``options.friendly_errors``), never a traceback.
"""
from __future__ import annotations

from mmindex.pipeline.cli.main import main

__all__ = ["main"]
