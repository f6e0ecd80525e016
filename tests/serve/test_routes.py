"""The HTTP service, live on loopback: every route, auth on and off, each error code, and
search results equal to the CLI's for the same query."""
from __future__ import annotations

import asyncio
import base64
import json
import shutil

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from mmindex.pipeline.cli import main
from helpers.serving import ingest_sample, start

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'mmindex[serve]')")
QUERY = "a blue triangle"
KEY = "test-key-123"


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_model):
    """Two live services over the same data: one open, one with an API key and a small body limit."""
    base = tmp_path_factory.mktemp("serve")
    data, store = ingest_sample(base, tiny_model)
    run = CliRunner()
    cli = run.invoke(main, ["query", QUERY, "-c", "shapes", "--data-dir", str(store), "--where", "year >= 2020",
                            "--limit", "5", "--json", "--device", "cpu"])
    expected = [json.loads(line) for line in cli.output.splitlines()]
    shutil.copytree(store, base / "store-locked")  # the embedded store has one process at a time
    open_site = start(store, "shapes", tiny_model, "--image-root", str(data), log=base / "open.log")
    locked = start(base / "store-locked", "shapes", tiny_model, "--serve-api-key", KEY, "--max-body-bytes", "100000",
                   "--cors-origin", "https://app.example.com", log=base / "locked.log")
    yield {"url": open_site.url, "locked": locked.url, "expected": expected, "data": data}
    open_site.stop()
    locked.stop()


def post(url, path, body, **kwargs):
    return httpx.post(f"{url}{path}", json=body, timeout=30, **kwargs)


def error_code(response) -> str:
    return response.json()["error"]["code"]


def test_search_equals_the_cli(site):
    answer = post(site["url"], "/search", {"text": QUERY, "filter": "year >= 2020", "limit": 5})
    assert answer.status_code == 200, answer.text
    hits = answer.json()["hits"]
    assert [h["id"] for h in hits] == [e["id"] for e in site["expected"]]
    for hit, cli in zip(hits, site["expected"]):
        assert hit["score"] == pytest.approx(cli["score"], abs=1e-5)
        assert hit["payload"] == cli["payload"] and hit["caption"] == cli["caption"]
        assert hit["payload"]["year"] >= 2020


def test_search_variants(site):
    url = site["url"]
    raw = post(url, "/search", {"text": QUERY, "filter": {"must": [{"key": "color", "match": {"value": "red"}}]},
                                "target": "text", "limit": 4}).json()
    assert raw["target"] == "text" and all(h["payload"]["color"] == "red" for h in raw["hits"])
    both = post(url, "/search", {"text": QUERY, "target": "both", "limit": 6}).json()
    assert len(both["hits"]) == 6 and both["hits"][0]["score"] > both["hits"][-1]["score"]
    page2 = post(url, "/search", {"text": QUERY, "limit": 3, "offset": 3}).json()["hits"]
    first6 = post(url, "/search", {"text": QUERY, "limit": 6}).json()["hits"]
    assert [h["id"] for h in page2] == [h["id"] for h in first6[3:]]
    like = post(url, "/search", {"like": first6[0]["id"], "limit": 3}).json()["hits"]
    assert len(like) == 3 and first6[0]["id"] not in [h["id"] for h in like]  # more like this, never itself
    assert like[0]["score"] < 1.0 - 1e-4
    image_path = site["data"] / first6[0]["source"]["path"]
    by_image = post(url, "/search", {"image": base64.b64encode(image_path.read_bytes()).decode(), "limit": 1}).json()
    assert by_image["hits"][0]["id"] == first6[0]["id"]
    upload = httpx.post(f"{url}/search/upload", files={"image": ("q.jpg", image_path.read_bytes(), "image/jpeg")},
                        data={"limit": "1", "filter": "year >= 1900"}, timeout=30).json()
    assert upload["hits"][0]["id"] == first6[0]["id"]
    assert post(url, "/search", {"text": QUERY, "score_threshold": 0.99}).json()["hits"] == []


def test_embed_returns_normalised_vectors_of_the_model(site, encoder):
    image = (site["data"] / "images").iterdir().__next__().read_bytes()
    answer = post(site["url"], "/embed", {"texts": [QUERY, "a red circle"], "images": [base64.b64encode(image).decode()]})
    body = answer.json()
    assert answer.status_code == 200 and body["dim"] == encoder.dim and len(body["texts"]) == 2
    assert np.allclose(np.linalg.norm(body["texts"], axis=1), 1, atol=1e-4)
    np.testing.assert_allclose(body["texts"][0], encoder.encode_texts([QUERY])[0], atol=1e-4)
    assert len(body["images"]) == 1 and len(body["images"][0]) == encoder.dim


def test_collection_health_metrics_openapi_page_and_thumbnails(site):
    url = site["url"]
    info = httpx.get(f"{url}/collections/shapes").json()
    assert info["points"] == 48 and info["payload_types"]["year"] == "integer" and info["vectors"] == ["image", "text"]
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{url}/readyz").json()
    assert ready["status"] == "ready" and ready["dim"] == info["dim"]
    hit = post(url, "/search", {"text": QUERY, "limit": 1}).json()["hits"][0]
    thumb = httpx.get(f"{url}{hit['thumbnail']}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg" and thumb.content[:2] == b"\xff\xd8"
    metrics = httpx.get(f"{url}/metrics").text
    assert 'mmindex_requests_total{route="/search",status="200"}' in metrics
    assert "mmindex_encode_seconds_bucket" in metrics and "mmindex_search_seconds_count" in metrics
    spec = httpx.get(f"{url}/openapi.json").json()
    assert {"/search", "/search/upload", "/embed", "/collections/{name}", "/healthz", "/readyz",
            "/metrics"} <= set(spec["paths"])
    page = httpx.get(url)
    assert page.status_code == 200 and "mmindex" in page.text and "<form" in page.text


@pytest.mark.parametrize("method, path, body, status, code", [
    ("post", "/search", {"text": "x", "filter": "year >>= 3"}, 400, "bad_filter"),
    ("post", "/search", {"text": "x", "filter": "nosuchfield = 1"}, 400, "bad_filter"),
    ("post", "/search", {"text": "x", "filter": {"must": "nonsense"}}, 400, "bad_filter"),
    # Raw filters the schema or the stores cannot honour: 400, never a 500.
    ("post", "/search", {"text": "x", "filter": {"must": [{"key": "year", "match": {"value": 1.5}}]}}, 400,
     "bad_filter"),
    ("post", "/search", {"text": "x", "filter": {"must": [{"key": "year", "range": {"gte": "soon"}}]}}, 400,
     "bad_filter"),
    ("post", "/search", {"text": "x", "filter": {"must": [{"key": "year", "match": {"value": None}}]}}, 400,
     "bad_filter"),
    ("post", "/search", {"text": "x", "filter": {"must": [{"unknown_clause": 1}]}}, 400, "bad_filter"),
    ("post", "/search", {"text": "x", "filter": {"must": [{"has_id": ["not-a-uuid"]}]}}, 400, "bad_filter"),
    ("post", "/search", {"text": "x", "filter": {"should": [], "mist": []}}, 400, "bad_filter"),
    ("post", "/search", {"text": "x", "filter": "year = 'twenty'"}, 400, "bad_filter"),
    ("post", "/search", {"image": "not base64!"}, 400, "bad_image"),
    ("post", "/search", {"image": base64.b64encode(b"<html>nope</html>").decode()}, 400, "bad_image"),
    ("post", "/search", {"text": "x", "image": base64.b64encode(b"x").decode()}, 400, "bad_request"),
    ("post", "/search", {}, 400, "bad_request"),
    ("post", "/search", {"text": "x", "collection": "nope"}, 404, "unknown_collection"),
    ("post", "/search", {"text": "x", "limit": 0}, 422, "invalid_request"),
    ("post", "/search", {"text": "x", "target": "audio"}, 422, "invalid_request"),
    ("post", "/search", {"like": "00000000-0000-0000-0000-000000000007"}, 404, "not_found"),
    ("post", "/search", {"like": [{"id": "not-an-id"}]}, 404, "not_found"),
    ("post", "/embed", {}, 400, "bad_request"),
    ("get", "/collections/nope", None, 404, "unknown_collection"),
    ("post", "/search", {"text": "x", "collection": "../etc"}, 404, "unknown_collection"),
    ("get", "/thumbnails/..%2F..%2Fetc%2Fpasswd", None, 404, "not_found"),
    ("get", "/thumbnails/00000000-0000-0000-0000-000000000000", None, 404, "not_found"),
    ("get", "/nowhere", None, 404, "not_found"),
    ("get", "/search", None, 405, "method_not_allowed"),
])
def test_error_codes(site, method, path, body, status, code):
    response = (httpx.post(f"{site['url']}{path}", json=body, timeout=30) if method == "post"
                else httpx.get(f"{site['url']}{path}", timeout=30))
    assert response.status_code == status, response.text
    assert error_code(response) == code and response.json()["error"]["message"]


def test_api_key_body_limit_and_cors(site):
    url = site["locked"]
    assert httpx.get(f"{url}/healthz").status_code == 200 and httpx.get(f"{url}/readyz").status_code == 200
    for path in ("/metrics", "/collections/shapes", "/openapi.json"):
        response = httpx.get(f"{url}{path}")
        assert response.status_code == 401 and error_code(response) == "unauthorized"
    assert error_code(post(url, "/search", {"text": QUERY}, headers={"X-API-Key": "wrong"})) == "unauthorized"
    assert post(url, "/search", {"text": QUERY}, headers={"X-API-Key": KEY}).status_code == 200
    assert post(url, "/search", {"text": QUERY}, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    big = post(url, "/search", {"text": "x" * 200_000}, headers={"X-API-Key": KEY})
    assert big.status_code == 413 and error_code(big) == "body_too_large"
    preflight = httpx.options(f"{url}/search", headers={"Origin": "https://app.example.com",
                                                        "Access-Control-Request-Method": "POST"})
    assert preflight.headers.get("access-control-allow-origin") == "https://app.example.com"
    other = httpx.options(f"{url}/search", headers={"Origin": "https://evil.example",
                                                    "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in other.headers


def test_concurrent_queries_share_forward_passes(site):
    async def burst():
        async with httpx.AsyncClient(base_url=site["url"], timeout=30) as client:
            answers = await asyncio.gather(*[client.post("/search", json={"text": f"a shape number {i}", "limit": 1})
                                             for i in range(24)])
        return answers

    answers = asyncio.run(burst())
    assert all(a.status_code == 200 for a in answers)
    metrics = httpx.get(f"{site['url']}/metrics").text
    sizes = {line.split("le=\"")[1].split("\"")[0]: float(line.rsplit(" ", 1)[1])
             for line in metrics.splitlines() if line.startswith("mmindex_encode_batch_size_bucket")}
    batches = float(next(line.rsplit(" ", 1)[1] for line in metrics.splitlines()
                         if line.startswith("mmindex_encode_batch_size_count")))
    assert sizes["1.0"] < batches  # some forward passes carried more than one query
