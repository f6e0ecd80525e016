"""Schemathesis against /openapi.json: generated requests to every operation, no server errors."""
from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

EXAMPLES = 25  # per operation: bounded, so the suite stays quick


def operations(url, headers=None):
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", **({"headers": headers} if headers else {}))
    return [result.ok() for result in schema.get_all_operations()]


def test_every_operation_survives_generated_requests(live_site):
    checked = []
    for operation in operations(live_site.url):
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def run(case):
            case.call_and_validate(base_url=live_site.url, checks=[not_a_server_error], timeout=30)

        run()
        checked.append(f"{operation.method.upper()} {operation.path}")
    assert {"POST /search", "POST /search/upload", "POST /embed", "GET /collections/{name}"} <= set(checked)


@pytest.fixture(scope="module")
def keyed_site(tmp_path_factory, tiny_model):
    from helpers.serving import ingest_sample, start

    base = tmp_path_factory.mktemp("schema-keyed")
    _, store = ingest_sample(base, tiny_model, rows=40, seed=6, width=40, height=40, image_kind="bytes", thumbnails=32)
    served = start(store, "shapes", tiny_model, "--serve-api-key", "schema-key", log=base / "serve.log")
    yield served
    served.stop()


def test_every_operation_with_the_key_survives_300_generated_requests(keyed_site):
    """300 examples per operation with the serve key on, no 5xx (about 35 s on 2 cores)."""
    examples = int(__import__("os").environ.get("MMINDEX_SCHEMA_EXAMPLES", "300"))
    checked, statuses = [], {}
    for operation in operations(keyed_site.url, headers={"X-API-Key": "schema-key"}):
        @given(case=operation.as_strategy())
        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def run(case):
            case.headers = {**(case.headers or {}), "X-API-Key": "schema-key"}
            response = case.call(base_url=keyed_site.url, timeout=30)
            statuses.setdefault(label, []).append(response.status_code)
            case.validate_response(response, checks=[not_a_server_error])

        label = f"{operation.method.upper()} {operation.path}"
        run()
        checked.append(label)
    assert {"POST /search", "POST /search/upload", "POST /embed", "GET /collections/{name}"} <= set(checked)
    # The key reached the routes: nothing was turned away, and generated requests got answers.
    assert not any(401 in codes for codes in statuses.values())
    assert any(200 <= code < 300 for code in statuses["POST /embed"] + statuses["GET /healthz"])
