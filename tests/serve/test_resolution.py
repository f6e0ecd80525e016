"""Which collection and which model a request reaches: resolved once per request, together, even while an alias is
switched between collections of different models; a collection that is missing at start is named; answers show no
server paths."""
from __future__ import annotations

import threading
import time

import httpx
import pytest

from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.pipeline.config import StoreSettings
from mmindex.pipeline.serve.settings import ServeSettings

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'mmindex[serve]')")

QUERY = {"text": "a red circle", "limit": 5}


def switch(store_dir, alias: str, collection: str) -> None:
    QdrantEdgeStore(collection, data_dir=store_dir).set_alias(alias, collection)


@pytest.fixture(scope="module")
def site(two_collections, serve_in_process):
    """The service on the alias photos (→ v1 at start, so v1's model loads), with both models loaded, and each
    collection's answer to QUERY while the alias stands still: {collection: (model, {hit id: score})}."""
    store, _ = two_collections
    served = serve_in_process(ServeSettings(store=StoreSettings(collection="photos", data_dir=str(store)),
                                            device="cpu"))
    baseline = answers_standing_still(served.url, store, "photos", ("v2", "v1"), 16)
    assert baseline["v1"][0] != baseline["v2"][0]  # two models: a query vector of the wrong one scores differently
    return {"url": served.url, "store": store, "baseline": baseline, "service": served.service}


def answers_standing_still(url: str, store_dir, alias: str, collections, limit: int) -> dict:
    """{collection: (model, {hit id: score})}: each collection's answer to QUERY with ``alias`` pointed at it."""
    baseline = {}
    for collection in collections:
        switch(store_dir, alias, collection)
        answer = httpx.post(f"{url}/search", json={**QUERY, "limit": limit}, timeout=60).json()
        baseline[collection] = (answer["model"], {hit["id"]: hit["score"] for hit in answer["hits"]})
    return baseline


def run_for(seconds: float, stop: threading.Event, *targets) -> None:
    """Run each of ``targets`` in its own thread for ``seconds``, then set ``stop`` and wait for them."""
    threads = [threading.Thread(target=target) for target in targets]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)


def consistent(answer: dict, baseline) -> str | None:
    """Why ``answer`` is not what its collection and model give (None: it is)."""
    collection = answer.get("alias_of")
    if collection not in baseline:
        return f"alias_of is {collection!r}"
    model, scores = baseline[collection]
    if answer["model"] != model:
        return f"{collection} answered with model {answer['model']}"
    if not answer["hits"]:
        return "no hits"
    for hit in answer["hits"]:
        if hit["source"].get("name") != collection:
            return f"a hit of {hit['source'].get('name')} in an answer from {collection}"
        if abs(hit["score"] - scores[hit["id"]]) > 1e-3:
            return f"hit {hit['id']} scored {hit['score']:.5f}, {scores[hit['id']]:.5f} with {collection}'s model"
    return None


def test_an_alias_switched_back_and_forth_never_pairs_one_model_with_the_other_collection(site):
    """The alias flips between v1 and v2 (two models) every few milliseconds while four clients search through it:
    every answer names the collection and model it used, its hits all come from that collection, and each score is
    the one that collection's own model gives (a query encoded by the other model scores differently)."""
    stop, answers, flips = threading.Event(), [], [0]

    def flip():
        while not stop.is_set():
            switch(site["store"], "photos", "v2" if flips[0] % 2 == 0 else "v1")
            flips[0] += 1
            time.sleep(0.003)

    def ask():
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                response = client.post(f"{site['url']}/search", json=QUERY)
                answers.append(response.json() if response.status_code == 200 else response.text)

    run_for(1.2, stop, flip, *[ask] * 4)
    switch(site["store"], "photos", "v1")
    wrong = [(answer, why) for answer in answers
             if (why := consistent(answer, site["baseline"]) if isinstance(answer, dict) else answer)]
    assert not wrong, f"{len(wrong)} of {len(answers)} answers: {wrong[:3]}"
    seen = {answer["alias_of"] for answer in answers}
    assert seen == {"v1", "v2"} and flips[0] > 20, (seen, flips[0])


def test_a_search_answer_names_its_collection_and_model(site):
    answer = httpx.post(f"{site['url']}/search", json=QUERY, timeout=60).json()
    assert (answer["collection"], answer["alias_of"], answer["model"]) == ("photos", "v1", site["baseline"]["v1"][0])
    plain = httpx.post(f"{site['url']}/search", json={**QUERY, "collection": "photos"}, timeout=60).json()
    assert consistent(plain, site["baseline"]) is None
    ready = httpx.get(f"{site['url']}/readyz", timeout=60).json()
    assert (ready["collection"], ready["alias_of"], ready["model"]) == ("photos", "v1", site["baseline"]["v1"][0])


def test_collection_info_shows_no_server_path(site, tiny_model, second_model):
    """/collections/{name} shows named fields only: no location, model or text model path, nor the sources' inputs,
    and no value anywhere in it that is a path of the server."""
    info = httpx.get(f"{site['url']}/collections/photos", timeout=60).json()
    assert info["name"] == "photos" and info["alias_of"] == "v1" and info["points"] == 16
    text = str(info)
    for secret in (str(site["store"]), tiny_model, second_model, "/tmp", "text_model_path", "model_path", "location"):
        assert secret not in text, secret


def test_public_info_keeps_no_path_whatever_the_fields_hold():
    """Whatever ``mmindex info`` records, in fields known today or added later, no absolute path or URL is shown."""
    from mmindex.pipeline.serve.routes import public_info

    secret = "/srv/secret/models/clip"
    info = {"name": "photos", "model": secret, "text_model": "C:\\models\\text", "location": secret,
            "text_model_path": secret, "model_path": secret, "new_field": secret, "options": {"cache": secret},
            "id_rule": {"rule": "column", "column": "id", "from": "s3://bucket/x"}, "points": 3,
            "sources": {"a": {"inputs": [secret]}}}
    shown = public_info(info)
    assert "secret" not in str(shown) and "bucket" not in str(shown) and "C:" not in str(shown)
    assert shown["model"] == "clip" and shown["text_model"] == "text" and shown["points"] == 3
    assert set(shown) <= {"name", "model", "text_model", "options", "id_rule", "points"}


def test_embed_uses_the_model_of_the_collection_the_alias_points_to(site):
    switch(site["store"], "photos", "v2")
    try:
        answer = httpx.post(f"{site['url']}/embed", json={"texts": ["a red circle"]}, timeout=60).json()
        assert answer["model"] == site["baseline"]["v2"][0]
    finally:
        switch(site["store"], "photos", "v1")
    assert httpx.post(f"{site['url']}/embed", json={"texts": ["a"]}, timeout=60).json()["model"] == \
        site["baseline"]["v1"][0]


def test_an_alias_pointed_at_a_missing_collection_is_named(site):
    """(`alias set` refuses a missing collection; one deleted after the switch looks the same.)"""
    switch(site["store"], "photos", "v1")
    aliases = site["store"] / "aliases.json"
    saved = aliases.read_text()
    try:
        aliases.write_text('{"photos": "gone"}')
        answer = httpx.post(f"{site['url']}/search", json=QUERY, timeout=60)
        assert answer.status_code == 404 and "'gone'" in answer.text and str(site["store"]) not in answer.text
        ready = httpx.get(f"{site['url']}/readyz", timeout=60)
        assert ready.status_code == 503 and "'gone'" in ready.text
    finally:
        aliases.write_text(saved)


# -- a collection missing at start ----------------------------------------------------------------------------------

def test_a_missing_collection_without_a_model_is_refused_at_start_naming_it(tmp_path):
    from mmindex.errors import StoreError
    from mmindex.pipeline.serve.service import Service

    with pytest.raises(StoreError, match=r"collection 'nope' does not exist .*give --model"):
        Service(ServeSettings(store=StoreSettings(collection="nope", data_dir=str(tmp_path)), device="cpu"))


def test_a_missing_collection_with_a_model_starts_and_says_so(tmp_path, tiny_model, serve_in_process, caplog):
    settings = ServeSettings(store=StoreSettings(collection="later", data_dir=str(tmp_path)), model=tiny_model,
                             device="cpu")
    with caplog.at_level("WARNING", logger="mmindex.serve"):
        served = serve_in_process(settings)
    assert "collection 'later' does not exist" in caplog.text and "/readyz answers 503" in caplog.text
    ready = httpx.get(f"{served.url}/readyz", timeout=30)
    assert ready.status_code == 503 and "collection 'later' does not exist" in ready.json()["error"]["message"]
    search = httpx.post(f"{served.url}/search", json=QUERY, timeout=30)
    assert search.status_code == 404 and "'later'" in search.json()["error"]["message"]
    assert str(tmp_path) not in ready.text + search.text
    assert httpx.post(f"{served.url}/embed", json={"texts": ["a"]}, timeout=30).status_code == 200


# -- the recent features under abuse -------------------------------------------------------------------------------

@pytest.mark.slow
def test_ingest_delete_and_alias_switches_while_the_service_answers_through_the_alias(two_collections, second_model,
                                                                                      tmp_path, serve_in_process):
    """~20 searches a second through the alias `live` for 4 s while, in the same process, another thread ingests into
    v3 (second_model), deletes some of its points, re-ingests them and switches the alias between v1 and v3: every
    answer is 200 with hits, all from the collection it names, scored by that collection's own model."""
    from mmindex.connectors.qdrant_edge import QdrantEdgeStore
    from mmindex.pipeline.collection.delete import delete
    from mmindex.pipeline.ingest.options import IngestOptions
    from mmindex.pipeline.ingest.run import ingest
    from mmindex.pipeline.ingest.sample import write_sample
    from mmindex.pipeline.models.encoder import Encoder

    store_dir, _ = two_collections
    data = tmp_path / "more"
    write_sample(data, rows=24, seed=41, width=32, height=32)
    encoder = Encoder(second_model, device="cpu")
    writer = QdrantEdgeStore("v3", data_dir=store_dir)
    options = IngestOptions(source_name="v3", thumbnails=32)
    ingest([str(data)], writer, encoder, options)
    switch(store_dir, "live", "v1")
    served = serve_in_process(ServeSettings(store=StoreSettings(collection="live", data_dir=str(store_dir)),
                                            device="cpu"))
    baseline = answers_standing_still(served.url, store_dir, "live", ("v3", "v1"), 24)
    stop, answers, churns = threading.Event(), [], [0]

    def churn():
        points = list(baseline["v3"][1])
        while not stop.is_set():
            switch(store_dir, "live", "v3")
            delete(writer, point_ids=points[churns[0] % 20:churns[0] % 20 + 3])
            switch(store_dir, "live", "v1")
            ingest([str(data)], writer, encoder, options)  # the deleted points come back
            churns[0] += 1

    def ask():
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                response = client.post(f"{served.url}/search", json=QUERY)
                answers.append(response.json() if response.status_code == 200 else response.text)
                time.sleep(0.1)  # three clients: ~20 searches a second

    run_for(4, stop, churn, *[ask] * 3)
    writer.close()
    wrong = [(answer, why) for answer in answers
             if (why := consistent(answer, baseline) if isinstance(answer, dict) else answer)]
    print(f"\n{len(answers)} answers in 4 s, {churns[0]} rounds of delete, re-ingest and two switches")
    assert not wrong, f"{len(wrong)} of {len(answers)} answers: {wrong[:3]}"
    assert len(answers) >= 50 and churns[0] >= 2 and {a["alias_of"] for a in answers} == {"v1", "v3"}
