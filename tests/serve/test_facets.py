"""`/facets` (GET and POST): counts equal to the data's own under the filter, the same answer however the filter is
spelled, an alias's target named, and every bad input a 4xx with a stable code, never a 500."""
from __future__ import annotations

from collections import Counter

import pyarrow.dataset as ds
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'mmindex[serve]')")


@pytest.fixture(scope="module")
def facets_site(tmp_path_factory, tiny_model):
    """The app behind Starlette's test client over 24 ingested sample rows (collection 'shapes', alias 'current'),
    and the rows themselves."""
    from click.testing import CliRunner
    from fastapi.testclient import TestClient

    from helpers.serving import ingest_sample
    from mmindex.pipeline.cli import main
    from mmindex.pipeline.config import StoreSettings
    from mmindex.pipeline.serve.app import create_app
    from mmindex.pipeline.serve.settings import ServeSettings

    data, store = ingest_sample(tmp_path_factory.mktemp("facets"), tiny_model, rows=24, image_kind="bytes",
                                thumbnails=0)
    assert CliRunner().invoke(main, ["alias", "set", "current", "shapes", "--data-dir", str(store)]).exit_code == 0
    settings = ServeSettings(store=StoreSettings(collection="shapes", data_dir=str(store)), device="cpu",
                             collections=("current",))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, ds.dataset(str(data)).to_table().to_pylist()


def expected(rows, field: str, keep=lambda row: True) -> list[dict]:
    """Python's counts: each distinct value a row holds (every element of a list) counts once for it."""
    counts = Counter(value for row in rows if keep(row)
                     for value in set(row[field] if isinstance(row[field], list) else [row[field]]) - {None})
    return [{"value": v, "count": c} for v, c in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def strip(answer: dict) -> dict:
    """An answer without which request created an index."""
    return {**answer, "facets": [{k: v for k, v in f.items() if k != "index_created"} for f in answer["facets"]]}


def test_get_counts_each_field_under_the_filter(facets_site):
    client, rows = facets_site
    answer = client.get("/facets", params={"field": ["color", "year", "tags"], "filter": "year >= 2020",
                                              "limit": 100})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["collection"] == "shapes" and body["alias_of"] is None
    assert [f["field"] for f in body["facets"]] == ["color", "year", "tags"]
    for facet in body["facets"]:
        assert facet["values"] == expected(rows, facet["field"], lambda row: row["year"] >= 2020)
        assert facet["more"] is False and isinstance(facet["index_created"], bool)


def test_post_with_a_raw_filter_where_and_limit_answers_as_get_does(facets_site):
    client, rows = facets_site
    raw = {"must": [{"key": "year", "range": {"gte": 2020}}]}
    posted = client.post("/facets", json={"fields": ["shape"], "filter": raw, "where": "color != red", "limit": 2})
    got = client.get("/facets", params={"field": "shape", "where": "year >= 2020 and color != red", "limit": 2})
    assert posted.status_code == got.status_code == 200, posted.text
    assert posted.json()["facets"][0]["index_created"] and not got.json()["facets"][0]["index_created"]  # once
    assert strip(posted.json()) == strip(got.json())
    facet = posted.json()["facets"][0]
    full = expected(rows, "shape", lambda row: row["year"] >= 2020 and row["color"] != "red")
    assert facet["values"] == full[:2] and facet["more"] == (len(full) > 2)


def test_an_alias_answers_for_the_collection_it_points_to(facets_site):
    client, rows = facets_site
    answer = client.get("/facets", params={"field": "color", "collection": "current", "limit": 100}).json()
    assert answer["collection"] == "current" and answer["alias_of"] == "shapes"
    assert answer["facets"][0]["values"] == expected(rows, "color")


@pytest.mark.parametrize("method, params, status, code", [
    ("get", {"field": "colour"}, 400, "unknown_field"),
    ("get", {"field": "score"}, 400, "unfacetable_field"),
    ("get", {"field": "created"}, 400, "unfacetable_field"),
    ("get", {"field": "tags[0]"}, 400, "unfacetable_field"),
    ("get", {"field": "color", "filter": "colr = red"}, 400, "bad_filter"),
    ("get", {"field": "color", "where": "year >"}, 400, "bad_filter"),
    ("get", {"field": "color", "filter": "{\"must\": 3}"}, 400, "bad_filter"),
    ("get", {"field": "color", "filter": "[" * 3000}, 400, "bad_filter"),
    ("get", {"field": "color", "filter": "x" * 5000}, 422, "invalid_request"),
    ("get", {"field": ""}, 400, "bad_request"),
    ("get", {"field": "c" * 300}, 400, "bad_request"),
    ("get", {"field": [f"f{i}" for i in range(17)]}, 400, "bad_request"),
    ("get", {}, 422, "invalid_request"),
    ("get", {"field": "color", "limit": 0}, 422, "invalid_request"),
    ("get", {"field": "color", "limit": 5000}, 422, "invalid_request"),
    ("get", {"field": "color", "limit": "many"}, 422, "invalid_request"),
    ("get", {"field": "color", "collection": "elsewhere"}, 404, "unknown_collection"),
    ("post", {"fields": []}, 422, "invalid_request"),
    ("post", {"fields": ["color"], "filter": {"must": [{"key": "year", "range": {"gte": "x"}}]}}, 400, "bad_filter"),
    ("post", {"fields": ["color"], "filter": "y" * 5000}, 400, "filter_too_long"),
    ("post", {"fields": ["color"], "extra": 1}, 422, "invalid_request"),
])
def test_bad_inputs_are_4xx_with_a_code(facets_site, method, params, status, code):
    client, _ = facets_site
    answer = client.get("/facets", params=params) if method == "get" else client.post("/facets", json=params)
    assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), answer.text


@given(field=st.text(max_size=40), text=st.one_of(st.none(), st.text(max_size=60)))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_no_field_or_filter_text_is_answered_with_a_500(facets_site, field, text):
    client, _ = facets_site
    params = {"field": field} | ({"filter": text} if text is not None else {})
    answer = client.get("/facets", params=params)
    assert answer.status_code in (200, 400, 422), (params, answer.text)
