"""Schemathesis against /openapi.json: generated requests to every operation, no server errors."""
from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

EXAMPLES = 25  # per operation: bounded, so the suite stays quick


def operations(url):
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
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
