"""Store faults: transient server errors are retried until every row lands; each kind of server answer
fails clearly (the CLI's side, unreachable servers and a full disk: tests/cli/test_faults.py)."""
from __future__ import annotations

import http.server
import json
import threading

import httpx
import pytest
from qdrant_client import QdrantClient
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from mmindex.connectors.qdrant_server import QdrantServerStore, RetryPolicy
from mmindex import ingest
from mmindex.errors import StoreError


def transient_errors():
    """The errors qdrant-client raises for the faults a server or network produces."""
    return [
        UnexpectedResponse(503, "Service Unavailable", b'{"status":"overloaded"}', httpx.Headers()),
        UnexpectedResponse(429, "Too Many Requests", b"", httpx.Headers({"Retry-After": "0.2"})),
        ResponseHandlingException(httpx.ConnectError("[Errno 111] Connection refused")),
        ResponseHandlingException(httpx.ReadTimeout("timed out")),
        UnexpectedResponse(502, "Bad Gateway", b"", httpx.Headers()),
    ]


class Flaky:
    """A real local client whose calls fail: the first ``fail_first`` of each method, or every upsert after
    the ``die_after``-th."""

    def __init__(self, client, fail_first=2, die_after=None, methods=("upsert", "retrieve", "collection_exists")):
        self.client, self.fail_first, self.die_after, self.methods = client, fail_first, die_after, methods
        self.calls: dict[str, int] = {}
        self.failed = 0
        self.errors = transient_errors()

    def __getattr__(self, name):
        method = getattr(self.client, name)
        if name not in self.methods:
            return method

        def call(*args, **kwargs):
            n = self.calls[name] = self.calls.get(name, 0) + 1
            if n <= self.fail_first or (self.die_after is not None and name == "upsert" and n > self.die_after):
                self.failed += 1
                raise self.errors[self.failed % len(self.errors)]
            return method(*args, **kwargs)

        return call


def test_transient_failures_are_retried_and_every_row_lands(sample_dir, encoder):
    delays = []
    flaky = Flaky(QdrantClient(":memory:"), fail_first=3)
    store = QdrantServerStore("flaky", client=flaky, retry=RetryPolicy(retries=5, wait=0.01, sleep=delays.append))
    summary = ingest([str(sample_dir)], store, encoder)
    assert flaky.failed == 9  # three failures each for collection_exists, retrieve, upsert
    assert (summary.upserted, summary.rejected, summary.status) == (60, 0, "ok")
    assert store.count() == 60
    assert len(delays) == 9 and all(0 <= d <= 30 for d in delays)
    assert any(d >= 0.2 for d in delays)  # the 429's Retry-After was honoured


def test_a_server_that_stays_down_fails_with_what_was_written(sample_dir, encoder):
    from mmindex import IngestOptions

    flaky = Flaky(QdrantClient(":memory:"), fail_first=0, die_after=3)
    store = QdrantServerStore("dies", client=flaky, retry=RetryPolicy(retries=2, wait=0.01, sleep=lambda s: None))
    with pytest.raises(StoreError, match=r"upsert on .* failed after 3 attempts") as caught:
        ingest([str(sample_dir)], store, encoder, IngestOptions(batch_size=8))
    summary = caught.value.summary
    assert summary.status == "failed" and summary.adds_up()
    assert summary.upserted == 3 * 8
    assert store.count() == summary.upserted  # what the summary says was written is what is there


def test_retry_delays_back_off_exponentially_with_jitter():
    policy = RetryPolicy(retries=6, wait=0.5, max_wait=4)
    for retry in range(6):
        ceiling = min(4, 0.5 * 2**retry)
        samples = [policy.delay(retry) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in samples)
        assert max(samples) > ceiling * 0.7  # spread over the range, not fixed
    assert policy.delay(0, hint=10) == 4  # Retry-After is capped too


class Answer(http.server.BaseHTTPRequestHandler):
    """A local HTTP server that answers every request with one status."""

    status = 503
    requests = 0

    def _answer(self):
        if self.path.startswith("/collections"):  # not qdrant-client's background version probe (GET /)
            type(self).requests += 1
        body = json.dumps({"status": {"error": "nope"}}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def answering():
    servers = []

    def start(status):
        handler = type("Handler", (Answer,), {"status": status, "requests": 0})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", handler

    yield start
    for server in servers:
        server.shutdown()


def quiet_store(url, handler, **options):
    """A server store on ``url``, without qdrant-client's start-up warnings about the server version."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = QdrantServerStore("c", url=url, **options)
    handler.requests = 0
    return store


@pytest.mark.parametrize("status, message, requests", [
    (401, r"refused the credentials \(HTTP 401.*check --api-key / QDRANT_API_KEY", 1),  # a wrong key: at once
    (403, r"refused the credentials \(HTTP 403", 1),
    (503, r"failed after 4 attempts over .*HTTP 503", 4),  # overloaded: retried, then reported
    (429, r"failed after 4 attempts over .*HTTP 429", 4),
    (400, r"failed: HTTP 400", 1),  # a client error is not retried
])
def test_each_kind_of_server_answer(answering, status, message, requests):
    url, handler = answering(status)
    store = quiet_store(url, handler, api_key="k" if status in (401, 403) else None,
                        retry=RetryPolicy(retries=3, wait=0.01))
    with pytest.raises(StoreError, match=message):
        store.exists()
    assert handler.requests == requests
