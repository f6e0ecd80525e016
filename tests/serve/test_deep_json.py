"""A JSON body nested deeply anywhere — in the filter (as an object or as text), in any other field, in a field that
does not exist — is a 4xx, never a 500; a deep filter's answer names the depth limit."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'mmindex[serve]')")

CONDITION = '{"key": "year", "match": {"value": 1}}'
# One level of nesting, as text: (opening, closing), and what the innermost part is.
LEVELS = {
    "list": ("[", "]", "1"),
    "object": ('{"x": ', "}", "1"),
    "must": ('{"must": [', "]}", CONDITION),
    "must_not lists": ('{"must_not": [[', "]]}", CONDITION),
    "nested": ('{"nested": {"key": "a", "filter": ', "}}", CONDITION),
}
PLACES = {  # where the nested value goes in a body: (route, body text around it)
    "filter object": ("/search", '{"text": "a", "filter": %s}'),
    "filter in a match": ("/search", '{"text": "a", "filter": {"must": [{"key": "year", "match": {"any": %s}}]}}'),
    "text": ("/search", '{"text": %s}'),
    "image": ("/search", '{"image": %s}'),
    "limit": ("/search", '{"text": "a", "limit": %s}'),
    "unknown field": ("/search", '{"text": "a", "extra": %s}'),
    "embed texts": ("/embed", '{"texts": %s}'),
    "embed images": ("/embed", '{"texts": ["a"], "images": [%s]}'),
    "filter as text": ("/search", '{"text": "a", "filter": %s}'),
}


def nested(kind: str, depth: int) -> str:
    opening, closing, inner = LEVELS[kind]
    return opening * depth + inner + closing * depth


@given(kind=st.sampled_from(sorted(LEVELS)), place=st.sampled_from(sorted(PLACES)),
       depth=st.integers(1, 3_000) | st.sampled_from([150, 999, 1_000, 1_001, 20_000]))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_deeply_nested_body_is_never_a_500(app_client, kind, place, depth):
    route, around = PLACES[place]
    value = nested(kind, depth)
    if place == "filter as text":
        value = json.dumps(value)
    body = around % value
    response = app_client.post(route, content=body.encode(), headers={"content-type": "application/json"})
    assert response.status_code < 500, (place, kind, depth, response.text[:300])
    assert response.json()["error"]["code"] if response.status_code >= 400 else response.json()


@pytest.mark.parametrize("as_text", [False, True])
def test_the_issue_example_is_a_400_naming_the_depth_limit(app_client, as_text):
    """A raw filter nested ~150 levels (1.8 KB, under the size limit) was a 500 RecursionError."""
    value = nested("must_not lists", 150)
    assert len(value) < 4_000
    response = app_client.post("/search", json={"text": "a", "filter": value if as_text else json.loads(value)})
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_filter", response.text
    assert "at most 8 levels" in response.json()["error"]["message"]


def test_a_score_threshold_with_target_both_is_the_librarys_400(app_client):
    from mmindex.errors import UsageError
    from mmindex.pipeline.query.search import check_target

    with pytest.raises(UsageError) as library:
        check_target("both", 0.5)
    response = app_client.post("/search", json={"text": "a", "target": "both", "score_threshold": 0.5})
    assert response.status_code == 400 and response.json()["error"] == {"code": "bad_request",
                                                                       "message": str(library.value)}
