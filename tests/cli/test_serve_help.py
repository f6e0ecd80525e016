"""``mmindex serve --help`` names every route the service answers: checked against the router itself, so a route
added later without its help entry fails here."""
from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from mmindex.pipeline.cli import main


def test_serve_help_lists_every_route():
    pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'mmindex[serve]')")
    from mmindex.pipeline.serve.routes import router

    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    routes = [(method, route.path) for route in router.routes if getattr(route, "include_in_schema", False)
              for method in sorted(route.methods - {"HEAD"})]
    assert ("GET", "/duplicates") in routes and ("POST", "/facets") in routes
    for method, path in routes:  # a path parameter ({name}) is written in capitals (NAME)
        pattern = re.escape(f"{method} ") + re.sub(r"\\\{[^}]*\\\}", "[A-Z]+", re.escape(path)) + r"[,;. ]"
        assert re.search(pattern, text), f"{method} {path} is missing from serve --help"
