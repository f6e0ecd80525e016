"""The HTTP service facing the internet: every request bounded, only the collections it was
given, no server paths in answers, fused pages that are slices of one ranking, readiness that
means it, and normal queries that stay fast while abusive requests are in flight."""
from __future__ import annotations

import base64
import io
import json
import multiprocessing
import os
import statistics
import threading
import subprocess
import sys
import time

import httpx
import pytest
from click.testing import CliRunner

from mmindex.pipeline.cli import main
from mmindex.pipeline.ingest.sample import write_sample
from helpers.serving import ROOT, ingest_sample, start


pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'mmindex[serve]')")


KEY = "limits-key-1"
AUTH = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_model):
    """A service with a key over "shapes" and "a+b"; "private" exists in the store but is not served."""
    base = tmp_path_factory.mktemp("limits")
    data, store = ingest_sample(base, tiny_model, ("shapes", "a+b", "private"), rows=120, seed=4, width=40,
                                height=40, thumbnails=32)
    served = start(store, "shapes", tiny_model, "--serve-api-key", KEY, "--allow-collection", "a+b",
                   "--image-root", str(data), log=base / "serve.log")
    yield {"url": served.url, "store": store, "data": data, "model": tiny_model, "process": served.process}
    served.stop()


def post(site, path, body, **kwargs):
    return httpx.post(f"{site['url']}{path}", json=body, headers=AUTH, timeout=60, **kwargs)


def code_of(response) -> str:
    return response.json()["error"]["code"]


def png(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def chunked_body(total: int):
    chunk = b"x" * 65536
    for _ in range(total // len(chunk)):
        yield chunk


# -- every request bounded ----------------------------------------------------------------------------

def test_a_chunked_body_over_the_limit_is_413_whatever_it_declares(site):
    response = httpx.post(f"{site['url']}/search", content=chunked_body(64 * 2**20), timeout=60,
                          headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 413 and code_of(response) == "body_too_large"


@pytest.mark.parametrize("path, body, status, code", [
    ("/search", {"text": "x" * 2001}, 422, "invalid_request"),
    ("/search", {"text": "a", "filter": "year > 1 and " * 400}, 400, "filter_too_long"),
    ("/search", {"text": "a", "filter": {"must": [{"must": [{"must": [{"must": [{"must": [{"must": [{"must": [
        {"must": [{"must": [{"key": "year", "match": {"value": 1}}]}]}]}]}]}]}]}]}]}}, 400, "bad_filter"),  # 9 levels
    ("/search", {"text": "a", "filter": {"must": [{"must": [{"must": [{"must": [{"must": [{"must": [
        {"must": [{"must": [{"key": "year", "match": {"value": 1}}]}]}]}]}]}]}]}]}}, 200, None),  # 8: the limit
    ("/search", {"text": "a", "limit": 10, "offset": 995}, 400, "window_too_large"),
    ("/search", {"text": "a", "limit": 1001}, 400, "window_too_large"),
    ("/search", {"text": "a", "target": "both", "limit": 1000, "offset": 59000}, 400, "window_too_large"),
    ("/search", {"text": "a", "filter": "(" * 330 + "year > 1" + ")" * 330}, 400, "bad_filter"),
    ("/search", {"text": "a", "filter": "not " * 500 + "year > 1"}, 400, "bad_filter"),
    ("/search", {"text": "a", "filter": " or ".join(f"year = {y}" for y in range(65))}, 400, "bad_filter"),
    ("/search", {"text": "a", "filter": "((((((((((year > 1))))))))))"}, 200, None),
    ("/search", {"text": "a", "target": "both", "score_threshold": 0.5}, 400, "bad_request"),
    ("/search", {"text": "a", "junk": [0] * 10}, 422, "invalid_request"),
    ("/search", {"text": "a", "filter": {"must": [{"key": "year", "range": {"gt": "soon"}}]}}, 400, "bad_filter"),
    ("/search", {"text": "a", "collection": "private"}, 404, "unknown_collection"),
    ("/search", {"text": "a", "collection": "x" * 300}, 422, "invalid_request"),
    ("/embed", {"texts": ["y" * 3_000_000]}, 400, "text_too_long"),
    ("/embed", {"texts": ["a"] * 65}, 422, "invalid_request"),
    ("/embed", {"images": ["AAAA"] * 17}, 422, "invalid_request"),
])
def test_oversized_and_invalid_requests_are_4xx(site, path, body, status, code):
    response = post(site, path, body)
    assert response.status_code == status, response.text
    assert code is None or code_of(response) == code, response.text


def test_a_huge_image_is_refused_from_its_header(site):
    bomb = png(9400, 9400)
    assert len(bomb) < 200_000
    started = time.perf_counter()
    response = post(site, "/search", {"image": base64.b64encode(bomb).decode()})
    assert response.status_code == 400 and "--max-query-pixels" in response.json()["error"]["message"]
    assert time.perf_counter() - started < 1.0  # no pixel was decoded
    many = post(site, "/embed", {"images": [base64.b64encode(bomb).decode()] * 3})
    assert many.status_code == 400


def test_only_the_given_collections_are_served_and_thumbnails_are_theirs(site):
    answer = post(site, "/search", {"text": "a red circle", "collection": "a+b", "limit": 3}).json()
    assert answer["collection"] == "a+b"
    url = answer["hits"][0]["thumbnail"]
    assert url.endswith("?collection=a%2Bb")
    assert httpx.get(f"{site['url']}{url}", headers=AUTH, timeout=30).status_code == 200
    crafted = httpx.get(f"{site['url']}/thumbnails/{answer['hits'][0]['id']}", params={"collection": "private"},
                        headers=AUTH, timeout=30)
    assert crafted.status_code == 404
    assert httpx.get(f"{site['url']}/collections/private", headers=AUTH, timeout=30).status_code == 404
    # Never opened: another process can still write to it.
    again = subprocess.run([sys.executable, "-m", "mmindex", "ingest", str(site["data"]), "-c", "private",
                            "--data-dir", str(site["store"]), "--model", site["model"], "--device", "cpu", "-q"],
                           cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert again.returncode == 0, again.stderr


def test_answers_and_errors_show_no_server_paths(site):
    secrets = [str(site["store"]), site["model"], str(site["data"])]
    texts = [post(site, "/search", {"text": "a blue square", "limit": 20}).text,
             post(site, "/search", {"text": "a", "target": "both", "limit": 20}).text,
             httpx.get(f"{site['url']}/collections/shapes", headers=AUTH, timeout=30).text,
             httpx.get(f"{site['url']}/readyz", timeout=30).text,
             post(site, "/embed", {"texts": ["a"]}).text,
             post(site, "/search", {"text": "a", "collection": "nope"}).text,
             post(site, "/search", {"text": "a", "filter": "nope = 1"}).text]
    for text in texts:
        assert not any(secret in text for secret in secrets), text[:500]
    info = httpx.get(f"{site['url']}/collections/shapes", headers=AUTH, timeout=30).json()
    assert info["model"] == "tiny-clip" and "location" not in info and "model_path" not in info


@pytest.mark.parametrize("target", ["image", "text"])
def test_pages_of_one_vector_are_slices_of_one_ranking_even_where_scores_tie(site, target):
    whole = post(site, "/search", {"text": "a red circle", "target": target, "limit": 100}).json()["hits"]
    pages = [hit for number in range(10)
             for hit in post(site, "/search", {"text": "a red circle", "target": target, "limit": 10,
                                               "offset": 10 * number}).json()["hits"]]
    assert [h["id"] for h in pages] == [h["id"] for h in whole] and len(whole) == 100


def test_fused_pages_are_slices_of_one_ranking(site):
    whole = post(site, "/search", {"text": "a green star", "target": "both", "limit": 100}).json()["hits"]
    pages = [hit for number in range(10)
             for hit in post(site, "/search", {"text": "a green star", "target": "both", "limit": 10,
                                               "offset": 10 * number}).json()["hits"]]
    assert [h["id"] for h in pages] == [h["id"] for h in whole] and len(whole) == 100
    assert len({h["id"] for h in pages}) == 100


def test_healthz_is_instant_and_needs_no_key(site):
    started = time.perf_counter()
    assert httpx.get(f"{site['url']}/healthz", timeout=5).json() == {"status": "ok"}
    assert time.perf_counter() - started < 0.5


def test_readyz_is_503_while_another_process_holds_the_store(tmp_path, tiny_model):
    data, store = tmp_path / "data", tmp_path / "store"
    write_sample(data, rows=8, seed=5, width=32, height=32)
    assert CliRunner().invoke(main, ["ingest", str(data), "-c", "held", "--data-dir", str(store), "--model",
                                     tiny_model, "--device", "cpu", "-q"]).exit_code == 0
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom mmindex.connectors.qdrant_edge import QdrantEdgeStore\n"
        f"s = QdrantEdgeStore('held', data_dir={str(store)!r}); s.count(); print('held', flush=True)\n"
        "time.sleep(120)\n")], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        site = start(store, "held", tiny_model, log=tmp_path / "serve.log")
        try:
            ready = httpx.get(f"{site.url}/readyz", timeout=30)
            assert ready.status_code == 503 and code_of(ready) == "not_ready"
            search = httpx.post(f"{site.url}/search", json={"text": "a"}, timeout=30)
            assert search.status_code == 503 and str(store) not in search.text
            assert httpx.get(f"{site.url}/healthz", timeout=5).status_code == 200
        finally:
            site.stop()
    finally:
        holder.kill()


def test_a_wider_window_is_the_services_own(tmp_path, tiny_model):
    from helpers.serving import ingest_sample

    _, store = ingest_sample(tmp_path, tiny_model, rows=30, seed=8, width=32, height=32)
    bad = CliRunner().invoke(main, ["serve", "-c", "shapes", "--data-dir", str(store), "--model", tiny_model,
                                    "--allow-collection", "../x", "--device", "cpu"])
    assert bad.exit_code == 1 and "invalid collection name" in bad.output
    site = start(store, "shapes", tiny_model, "--max-window", "5000", log=tmp_path / "serve.log")
    try:
        deep = httpx.post(f"{site.url}/search", json={"text": "a", "offset": 2000, "limit": 10}, timeout=30)
        assert deep.status_code == 200 and deep.json()["hits"] == []
        assert httpx.post(f"{site.url}/search", json={"text": "a", "offset": 4995, "limit": 10},
                          timeout=30).status_code == 400
    finally:
        site.stop()


# -- normal queries stay fast while abusive ones are in flight ----------------------------------------

def abusive_body(name: str):
    """What one abusive request sends to which route: (path, body bytes or a chunk generator)."""
    if name == "chunked body of 64 MiB":
        return "/search", None
    body = {
        "text of 3 M characters to /embed": ("/embed", {"texts": ["y" * 3_000_000]}),
        "64 texts of 2,000 characters": ("/embed", {"texts": ["z " * 1000] * 64}),
        "filter of 2 MiB": ("/search", {"text": "a", "filter": "year > 1 or " * 190_000}),
        "9400x9400 PNG": ("/search", {"image": base64.b64encode(png(9400, 9400)).decode()}),
        "both, offset 59000": ("/search", {"text": "a", "target": "both", "limit": 1000, "offset": 59000}),
        "both, last allowed page": ("/search", {"text": "a", "target": "both", "limit": 10, "offset": 990,
                                                "fusion_depth": 1000}),
    }[name]
    return body[0], json.dumps(body[1]).encode()


ABUSE = ["chunked body of 64 MiB", "text of 3 M characters to /embed", "64 texts of 2,000 characters",
         "filter of 2 MiB", "9400x9400 PNG", "both, offset 59000", "both, last allowed page"]


def abuse_until(name: str, url: str, stop, statuses) -> None:
    """In its own process (so its CPU is not this client's GIL): send one abusive request over and over."""
    path, body = abusive_body(name)
    headers = {**AUTH, "Content-Type": "application/json"}
    with httpx.Client(timeout=60, headers=headers) as client:
        while not stop.is_set():
            content = chunked_body(64 * 2**20) if body is None else body
            statuses.append(client.post(f"{url}{path}", content=content).status_code)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS")) / 1024


def normal_latencies(url: str, count: int) -> list[float]:
    seconds = []
    with httpx.Client(headers=AUTH, timeout=60) as client:
        for index in range(count):
            started = time.perf_counter()
            response = client.post(f"{url}/search", json={"text": f"a red circle {index % 7}", "limit": 10})
            seconds.append(time.perf_counter() - started)
            assert response.status_code == 200
    return seconds


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the server's memory from /proc")
def test_normal_queries_stay_fast_while_abusive_requests_are_in_flight(site):
    """Each abusive request in turn is sent over and over while 40 normal queries run.

    Bound: normal p99 ≤ 5 × idle p99 + 250 ms. On the 2-core CI machine the server, the abuser
    and this client share the cores: measured idle p99 20–70 ms, and under the worst abuse
    (a 64 MiB chunked body, a 3 MB JSON text, 64 long texts) 170–240 ms. Server memory grows
    < 300 MiB over the whole test (measured ~40 MiB), and every abusive request is 4xx except
    the two allowed heavy ones (64 long texts, the last fused page), which succeed.
    """
    url = site["url"]
    normal_latencies(url, 10)  # warm up
    idle_p99 = p99(normal_latencies(url, 60))
    before = rss_mib(site["process"].pid)
    report = {}
    context = multiprocessing.get_context("fork")
    with context.Manager() as manager:
        for name in ABUSE:
            stop, statuses = manager.Event(), manager.list()
            process = context.Process(target=abuse_until, args=(name, url, stop, statuses), daemon=True)
            process.start()
            while not len(statuses):  # the first abusive request has been answered: it is on
                time.sleep(0.05)
            loaded_p99 = p99(normal_latencies(url, 40))
            stop.set()
            process.join(timeout=60)
            report[name] = (round(loaded_p99 * 1000, 1), sorted(set(statuses)))
    grown = rss_mib(site["process"].pid) - before
    print(f"\nidle p99 {idle_p99 * 1000:.1f} ms; under each abuse (p99 ms, statuses): {json.dumps(report)}; "
          f"memory +{grown:.0f} MiB")
    allowed = {"64 texts of 2,000 characters", "both, last allowed page"}
    for name, (loaded_ms, statuses) in report.items():
        assert loaded_ms / 1000 <= 5 * idle_p99 + 0.25, (name, loaded_ms, idle_p99)
        assert statuses and (statuses == [200] if name in allowed else all(400 <= s < 500 for s in statuses)), name
    assert grown < 300


def test_a_slow_store_never_holds_the_event_loop(tmp_path, tiny_model):
    """Every store call runs in the store pool with --store-timeout: while eight searches wait on a
    store that takes 3 s per search, /healthz answers at once and each search gets 503 after 1 s."""
    import uvicorn

    from mmindex.connectors.qdrant_edge import QdrantEdgeStore
    from mmindex.pipeline.config import StoreSettings
    from mmindex.pipeline.serve.settings import Limits, ServeSettings
    from mmindex.pipeline.serve.app import create_app
    from helpers.serving import free_port

    data, store = tmp_path / "data", tmp_path / "store"
    write_sample(data, rows=8, seed=7, width=32, height=32)
    assert CliRunner().invoke(main, ["ingest", str(data), "-c", "slow", "--data-dir", str(store), "--model",
                                     tiny_model, "--device", "cpu", "-q"]).exit_code == 0
    settings = ServeSettings(store=StoreSettings(collection="slow", data_dir=str(store)), device="cpu",
                             limits=Limits(store_timeout=1.0))
    app = create_app(settings)
    real_search = QdrantEdgeStore.search

    def slow_search(self, request):
        time.sleep(3)
        return real_search(self, request)

    QdrantEdgeStore.search = slow_search
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        answers: list[httpx.Response] = []
        searches = [threading.Thread(target=lambda: answers.append(
            httpx.post(f"{url}/search", json={"text": "a red circle"}, timeout=30))) for _ in range(8)]
        for search in searches:
            search.start()
        time.sleep(0.3)
        started = time.perf_counter()
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        assert time.perf_counter() - started < 0.2
        for search in searches:
            search.join()
        assert [r.status_code for r in answers] == [503] * 8
        assert {r.json()["error"]["code"] for r in answers} == {"store_timeout"}
    finally:
        QdrantEdgeStore.search = real_search
        server.should_exit = True
        thread.join(timeout=30)
