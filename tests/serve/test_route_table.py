"""The guard takes its route labels from the router (pipeline/serve/guard.py RouteTable), so a new route needs no list."""
from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'mmindex[serve]')")

from mmindex.pipeline.serve import routes  # noqa: E402
from mmindex.pipeline.serve.guard import RouteTable  # noqa: E402


def test_every_route_of_the_router_has_its_own_label():
    table = RouteTable.of(routes.router.routes)
    for route in routes.router.routes:
        concrete = route.path.replace("{name}", "photos").replace("{point_id}", "1234")
        assert table.label(concrete) != "other", route.path
    assert table.label("/collections/photos") == "/collections/{id}"
    assert table.label("/secret/../etc/passwd") == "other"  # never the caller's own text


def test_only_the_post_routes_have_their_body_read():
    table = RouteTable.of(routes.router.routes)
    posts = {route.path for route in routes.router.routes if "POST" in route.methods}
    assert table.body == posts == {"/search", "/search/upload", "/embed", "/facets"}
