"""Duplicates on the HTTP service: ``/duplicates`` (groups of a whole collection with their tier and evidence, paged,
bounded), ``collapse_duplicates`` on ``/search`` and ``/search/upload``, and the page's toggle and duplicates view.

The collection is the labelled duplicates set (tests/helpers/duplicate_data.py) ingested with the tiny model; its
signals are written into the payloads here (from the same bytes, as ingest computes them), so the test does not
depend on which ingest wrote them. "bare" is the same rows with the signals taken out.
"""
from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'mmindex[serve]')")

from mmindex.pipeline.duplicates.signals import SIGNAL_KEYS, signals_of  # noqa: E402
from mmindex.pipeline.ingest.images import decode_image  # noqa: E402
from mmindex.pipeline.ingest.records import point_id_from_key  # noqa: E402

from helpers.duplicate_data import make_duplicate_set, write_parquet  # noqa: E402


@pytest.fixture(scope="module")
def duplicates_site(tmp_path_factory, tiny_model):
    """(store folder, the labelled set): collections "dups" (with signals) and "bare" (without)."""
    from click.testing import CliRunner

    from mmindex.connectors.qdrant_edge import QdrantEdgeStore
    from mmindex.pipeline.cli import main

    base = tmp_path_factory.mktemp("dups")
    data = make_duplicate_set(originals=3, seed=5)
    source = write_parquet(data, base / "data" / "dups.parquet")
    signals = {point_id_from_key(i): signals_of(decode_image(b)).to_payload() for i, b in data.images.items()}
    for name in ("dups", "bare"):
        result = CliRunner().invoke(main, ["ingest", str(source), "-c", name, "--data-dir", str(base / "store"),
                                           "--model", tiny_model, "--device", "cpu", "--thumbnails", "32", "-q"])
        assert result.exit_code == 0, result.output
        store = QdrantEdgeStore(name, data_dir=base / "store")
        points, _ = store.scroll(limit=1000, with_payload=True)
        assert {p.id for p in points} == set(signals)
        kept = [(p.id, {k: v for k, v in p.payload.items() if k not in SIGNAL_KEYS}) for p in points]
        store.overwrite_payloads([(i, {**payload, **signals[i]}) if name == "dups" else (i, payload)
                                  for i, payload in kept])
        store.close()
    return base / "store", data


def client_of(store, **limits):
    from fastapi.testclient import TestClient

    from mmindex.pipeline.config import StoreSettings
    from mmindex.pipeline.serve.app import create_app
    from mmindex.pipeline.serve.settings import Limits, ServeSettings

    settings = ServeSettings(store=StoreSettings(collection="dups", data_dir=str(store)), collections=("bare",),
                             device="cpu", limits=Limits(**limits))
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(duplicates_site):
    with client_of(duplicates_site[0]) as made:
        yield made


def test_duplicates_route_returns_groups_with_tier_evidence_and_thumbnails(client, duplicates_site):
    _, data = duplicates_site
    answer = client.get("/duplicates", params={"limit": 50})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["points"] == len(data.images) and body["without_signals"] == 0 and body["tier"] == "near"
    by_point = {point_id_from_key(i): i for i in data.images}
    for group in body["groups"]:
        names = [by_point[m["id"]] for m in group["members"]]
        assert len({data.group[n] for n in names}) == 1, names  # one original's copies, never two originals
        assert [m["id_value"] for m in group["members"]] == names  # the id column tells the copies apart
        assert group["members"][0]["id"] == group["keeper"] and all(m["thumbnail"] for m in group["members"])
        assert all(p["tier"] in ("exact", "near") and p["hash_distance"] is not None for p in group["pairs"])
    assert body["total_groups"] == len(body["groups"]) == 3  # each original with its copies; similar shots apart
    thumb = client.get(body["groups"][0]["members"][0]["thumbnail"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    page = client.get("/duplicates", params={"limit": 1, "offset": 1}).json()
    assert page["cached"] and [g["group"] for g in page["groups"]] == [body["groups"][1]["group"]]
    exact = client.get("/duplicates", params={"tier": "exact"}).json()
    assert exact["groups"] and all(g["tier"] == "exact" for g in exact["groups"])


@pytest.mark.parametrize("params, status, code", [
    ({"collection": "bare"}, 400, "no_signals"),
    ({"tier": "same"}, 422, "invalid_request"),
    ({"collection": "nope"}, 404, "unknown_collection"),
])
def test_duplicates_route_refusals(client, params, status, code):
    answer = client.get("/duplicates", params=params)
    assert answer.status_code == status and answer.json()["error"]["code"] == code, answer.text
    if code == "no_signals":
        assert "mmindex ingest" in answer.json()["error"]["message"]


def test_duplicates_route_refuses_a_collection_past_its_limit_and_names_the_cli(duplicates_site):
    with client_of(duplicates_site[0], max_duplicates_points=5) as small:
        answer = small.get("/duplicates")
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "collection_too_large"
    assert "mmindex duplicates -c dups" in answer.json()["error"]["message"]


def test_search_collapses_duplicates_and_pages_without_repeats(client, duplicates_site):
    _, data = duplicates_site
    query = {"text": "a photo-like texture", "limit": 2, "collapse_duplicates": True}
    pages = [client.post("/search", json={**query, "offset": offset}).json() for offset in (0, 2, 4)]
    hits = [h for page in pages for h in page["hits"]]
    shown = [h["id"] for h in hits]
    listed = [i for h in hits for i in h["duplicates"]]
    assert len(set(shown)) == len(shown) and not set(shown) & set(listed)  # no hit twice, shown or listed
    assert all(not set(SIGNAL_KEYS) & set(h["payload"]) for h in hits)
    plain = client.post("/search", json={"text": query["text"], "limit": 6}).json()["hits"]
    assert plain[0]["duplicates"] is None and hits[0]["id"] == plain[0]["id"]  # the best copy is the one shown
    whole = client.post("/search", json={**query, "limit": 100}).json()["hits"]
    ranks = {h["id"]: rank for rank, h in enumerate(client.post("/search", json={"text": query["text"],
                                                                                 "limit": 100}).json()["hits"])}
    assert set(ranks) == {point_id_from_key(i) for i in data.images}
    ends = [ranks[h["id"]] for h in whole[1:]] + [len(ranks)]
    for hit, end in zip(whole, ends):  # a hit lists copies ranked between it and the next hit shown after it
        assert all(ranks[hit["id"]] < ranks[i] < end for i in hit["duplicates"]), hit
    assert sum(len(h["duplicates"]) for h in whole) >= 1
    assert len(whole) <= 6 + 3  # 3 originals' copies collapse (a near copy may miss: recall 0.99), 3 similar shots
    image = data.images[next(iter(data.images))]
    upload = client.post("/search/upload", files={"image": ("q.jpg", image, "image/jpeg")},
                         data={"limit": "3", "collapse_duplicates": "true"}).json()
    assert len(upload["hits"]) == 3 and upload["hits"][0]["duplicates"]


def test_search_refuses_collapse_with_group_by(client):
    answer = client.post("/search", json={"text": "x", "collapse_duplicates": True, "group_by": "group"})
    assert answer.status_code == 400 and "--collapse-duplicates and --group-by" in answer.json()["error"]["message"]


def test_member_details_give_the_id_column_value_only_where_ids_come_from_a_column(duplicates_site):
    from mmindex.connectors.base import CollectionSpec, PointRecord
    from mmindex.connectors.qdrant_edge import QdrantEdgeStore
    from mmindex.connectors.qdrant_server import QdrantServerStore
    from mmindex.pipeline.serve.duplicates import member_details

    store = QdrantEdgeStore("dups", data_dir=duplicates_site[0])
    points, _ = store.scroll(limit=2, with_payload=True)
    gone = "00000000-0000-0000-0000-000000000000"  # deleted since the run
    details = member_details(store, [p.id for p in points] + [gone], "dups", None)
    store.close()
    assert {details[p.id]["id_value"] for p in points} == {str(p.payload["id"]) for p in points}
    assert details[gone]["id_value"] is None and details[gone]["id"] == gone
    content = QdrantServerStore("content", url=":memory:")  # ids made from content: no id column recorded
    content.ensure_collection(CollectionSpec("test-model", 2, {}))
    content.upsert([PointRecord(points[0].id, {"image": [1.0, 0.0]}, {"caption": "c", "id": "not-the-id-rule"})])
    assert member_details(content, [points[0].id], "content", None)[points[0].id]["id_value"] is None
    content.close()


def test_the_page_has_the_collapse_toggle_and_the_duplicates_view(client):
    page = client.get("/").text
    for hook in ('id="collapse"', 'id="duplicates-view"', "/duplicates?", "collapse_duplicates",
                 'params.set("collapse"', 'params.set("view"', "member.id_value", "evidenceLine(pair, labels)"):
        assert hook in page, hook
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML"):
        assert sink not in page
