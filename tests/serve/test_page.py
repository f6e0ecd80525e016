"""The search page's contract without a browser: the elements and script hooks it is built on, no way for data to
become markup, and every route and request the page makes answered by the service as the page expects.
(tests/serve/test_browser.py drives the same page in Chromium.)"""
from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'mmindex[serve]')")

PAGE_SIZE = 24  # the page's PAGE_SIZE


class Elements(HTMLParser):
    """Each element's attributes by id, the options of each select, and the script's text."""

    def __init__(self):
        super().__init__()
        self.by_id: dict[str, dict] = {}
        self.options: dict[str, list[str]] = {}
        self.script = ""
        self._select = None
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.by_id[attrs["id"]] = {"tag": tag, **attrs}
        if tag == "select":
            self._select = attrs.get("id")
            self.options[self._select] = []
        elif tag == "option" and self._select:
            self.options[self._select].append(attrs["value"])
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.script += data


@pytest.fixture(scope="module")
def page(app_client):
    response = app_client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    parsed = Elements()
    parsed.feed(response.text)
    return parsed


def test_the_page_has_its_controls(page):
    for name in ("q", "file", "drop", "filter", "target", "mode", "diversity", "facets", "examples", "status",
                 "results", "prev", "next", "form"):
        assert name in page.by_id, name
    assert page.options["mode"] == ["dense", "keyword", "hybrid"]
    assert page.options["target"] == ["image", "text", "both"]
    assert page.by_id["diversity"]["type"] == "checkbox"


def test_the_script_keeps_the_search_in_the_url_and_never_writes_markup(page):
    script = page.script
    assert "history.pushState(" in script and 'addEventListener("popstate"' in script
    for name in ("q", "filter", "mode", "target", "page", "diversity", "like", "unlike"):  # what the URL holds
        assert re.search(rf'params\.(set|append)\("{name}"', script), name
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
    # the score is labelled in its own element, the payload's fields under their own label
    assert '"similarity"' in script and '"fields"' in script
    assert 'element("button", "like", "more like this")' in script
    assert 'element("button", "unlike", "less like this")' in script


def test_every_route_the_page_calls_exists(page):
    from mmindex.pipeline.serve import routes

    paths = {route.path for route in routes.router.routes}
    called = set(re.findall(r'(?:call|fetch)\(\s*[`"](/[a-z/]*)', page.script))
    called |= set(re.findall(r'\["(/search[a-z/]*)"', page.script))  # searchRequest's [path, options]
    assert {"/readyz", "/collections/", "/facets", "/search", "/search/upload"} <= called
    for path in called:
        assert path in paths or any(p.startswith(path) and "{" in p for p in paths), path


def test_the_requests_the_page_makes_are_answered(app_client):
    """What the page sends for a state with every control set (page 2, a filter, hybrid, varied, examples) and what
    it reads back: the answer's score kind, mode and hits; the facets under the filter; the collection's fields."""
    ready = app_client.get("/readyz").json()
    info = app_client.get(f"/collections/{ready['collection']}").json()
    assert info["payload_types"]["color"] == "keyword" and "indexed_fields" in info
    first = app_client.post("/search", json={"text": "a red circle", "target": "image", "mode": "dense",
                                             "limit": PAGE_SIZE, "offset": 0}).json()
    liked, unliked = first["hits"][0]["id"], first["hits"][1]["id"]
    body = {"text": "a red circle", "target": "both", "mode": "hybrid", "limit": 4, "offset": 4,
            "filter": "(year >= 1900) and color = 'red'", "diversity": 0.5, "like": [liked], "unlike": [unliked]}
    answer = app_client.post("/search", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["score_kind"] == "cosine" and answer.json()["mode"] == "hybrid"  # MMR keeps similarity
    assert {liked, unliked}.isdisjoint(h["id"] for h in answer.json()["hits"])
    more = app_client.post("/search", json={"target": "image", "mode": "dense", "limit": PAGE_SIZE, "offset": 0,
                                            "like": [liked]}).json()
    assert more["hits"] and liked not in [h["id"] for h in more["hits"]]
    facets = app_client.get("/facets", params=[("field", "color"), ("field", "shape"), ("limit", "6"),
                                               ("filter", "year >= 1900")])
    assert facets.status_code == 200, facets.text
    counts = {f["field"]: f["values"] for f in facets.json()["facets"]}
    assert set(counts) == {"color", "shape"} and all(v["count"] >= 1 for v in counts["color"])
    picture = app_client.get(first["hits"][0]["thumbnail"]).content
    form = {"target": "image", "mode": "dense", "limit": str(PAGE_SIZE), "offset": "0", "diversity": "0.5",
            "unlike": [unliked]}
    upload = app_client.post("/search/upload", data=form, files={"image": ("q.jpg", picture, "image/jpeg")})
    assert upload.status_code == 200 and unliked not in [h["id"] for h in upload.json()["hits"]], upload.text
    bad = app_client.post("/search", json={**body, "filter": "year >>= 3"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_filter"  # what the page shows
