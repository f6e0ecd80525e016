"""The search surface over HTTP: every option of ``mmindex query`` through ``/search`` and ``/search/upload`` gives
exactly the hits the Python API (``run_queries``) gives for the same inputs, on the Edge store and on the server
store (qdrant-client's ``:memory:``), and every bad input is a 4xx with a code, in the library's words.

The differential test draws option combinations with hypothesis — valid ones and ones the library refuses — and
holds HTTP to the API: the same ids in the same order (scores within 1e-4, groups equal), or the same refusal
(400 ``bad_request`` carrying the UsageError's message).
"""
from __future__ import annotations

import base64
import uuid

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mmindex.errors import FilterError, UsageError
from mmindex.pipeline.ingest.sample import write_sample

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'mmindex[serve]')")

QUERY = "a blue triangle"
ROWS = 48


@pytest.fixture(scope="module")
def surface(tmp_path_factory, tiny_model, encoder):
    """The same 48 sample rows ingested into an Edge store and into the ``:memory:`` server store a service holds;
    an in-process app over each: {"edge": (client, store), "memory": (client, store)}, and the data folder."""
    from fastapi.testclient import TestClient

    from mmindex.connectors.qdrant_edge import QdrantEdgeStore
    from mmindex.pipeline.config import StoreSettings
    from mmindex.pipeline.ingest.run import ingest
    from mmindex.pipeline.serve.app import create_app
    from mmindex.pipeline.serve.service import Service
    from mmindex.pipeline.serve.settings import ServeSettings

    base = tmp_path_factory.mktemp("surface")
    data = base / "data"
    write_sample(data, rows=ROWS, seed=3, width=40, height=32, image_kind="path")
    edge = QdrantEdgeStore("shapes", data_dir=base / "store")
    ingest([str(data)], edge, encoder)
    edge.close()
    kinds = {"edge": StoreSettings(collection="shapes", data_dir=str(base / "store")),
             "memory": StoreSettings(collection="shapes", url=":memory:")}
    served, clients = {}, []
    for kind, store_settings in kinds.items():
        settings_ = ServeSettings(store=store_settings, model=tiny_model, device="cpu")
        service = Service(settings_)
        store = service.lookup("shapes")[0]
        if kind == "memory":  # the service's own in-memory client: ingest into it
            ingest([str(data)], store, encoder)
        client = TestClient(create_app(settings_, service), raise_server_exceptions=False)
        clients.append(client.__enter__())
        served[kind] = (client, store)
    yield served, data
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(params=["edge", "memory"])
def on(request, surface):
    """(client, store, data) of one store kind."""
    served, data = surface
    client, store = served[request.param]
    return client, store, data


def api_hits(store, **request):
    """The Python API's answer (``run_queries``) for one query: [(id, score, group)]."""
    from mmindex import ModelChoice, QueryRequest, Runtime, run_queries

    answers = run_queries(store, QueryRequest(**request), ModelChoice(), Runtime(device="cpu"))
    (_, hits), = answers.answers
    return [(h.id, h.score, h.group) for h in hits]


def http_hits(client, body, path="/search", **kwargs):
    response = client.post(path, json=body, **kwargs) if path == "/search" else client.post(path, **kwargs)
    assert response.status_code == 200, response.text
    answer = response.json()
    return [(h["id"], h["score"], h.get("group")) for h in answer["hits"]], answer


def assert_same(http, api):
    assert [h[0] for h in http] == [h[0] for h in api]
    assert [h[2] for h in http] == [h[2] for h in api]
    for (_, got, _), (_, want, _) in zip(http, api):
        assert got == pytest.approx(want, abs=1e-4)


def first_ids(client, count=3):
    return [h["id"] for h in client.post("/search", json={"text": QUERY, "limit": count}).json()["hits"]]


def image_file(data, store, point_id) -> str:
    payload = store.retrieve([point_id])[0].payload
    return str(data / payload["_source"]["path"])


def b64(path) -> str:
    return base64.b64encode(open(path, "rb").read()).decode()


# -- each option, HTTP against the API -----------------------------------------------------------------------------

@pytest.mark.parametrize("body, request_", [
    ({"mode": "keyword"}, {"mode": "keyword"}),
    ({"mode": "hybrid"}, {"mode": "hybrid"}),
    ({"mode": "hybrid", "fusion": "dbsf", "target": "both"}, {"mode": "hybrid", "fusion": "dbsf", "target": "both"}),
    ({"target": "both", "fusion": "dbsf"}, {"target": "both", "fusion": "dbsf"}),
    ({"not": "a red circle"}, {"not_texts": ["a red circle"]}),
    ({"not": ["a red circle", "a green square"], "strategy": "sum_scores"},
     {"not_texts": ["a red circle", "a green square"], "strategy": "sum_scores"}),
    ({"like": ["a yellow star"], "unlike": ["a red circle"], "strategy": "best_score"},
     {"like": ["a yellow star"], "unlike": ["a red circle"], "strategy": "best_score"}),
    ({"diversity": 0.5, "pool": 30}, {"diversity": 0.5, "pool": 30}),
    ({"diversity": 0.0}, {"diversity": 0.0}),
    ({"group_by": "color", "group_size": 2}, {"group_by": "color", "group_size": 2}),
    ({"group_by": "shape", "limit": 3, "offset": 1}, {"group_by": "shape", "limit": 3, "offset": 1}),
    ({"boost": "score + 0.001 * year"}, {"boost": "score + 0.001 * year"}),
    ({"cutoff": "auto"}, {"cutoff": "auto"}),
    ({"filter": "year >= 2000", "mode": "hybrid", "limit": 4, "offset": 2},
     {"where": "year >= 2000", "mode": "hybrid", "limit": 4, "offset": 2}),
    ({"filter": "color in (red, blue)", "target": "text", "diversity": 0.3},
     {"where": "color in (red, blue)", "target": "text", "diversity": 0.3}),
])
def test_each_option_gives_the_apis_hits(on, body, request_):
    client, store, _ = on
    body = {"text": QUERY, "limit": 6, **body}
    request_ = {"texts": [QUERY], "limit": 6, **request_}
    http, answer = http_hits(client, body)
    assert http, "a case that finds nothing compares nothing"
    assert_same(http, api_hits(store, **request_))
    if body.get("group_by"):
        values = [store.retrieve([h[0]])[0].payload[body["group_by"]] for h in http]
        assert [h[2] for h in http] == values and len(set(values)) >= 2
        assert all(values.count(v) <= body.get("group_size", 1) for v in values)
    if "year" in str(body.get("filter")):
        assert all(store.retrieve([h[0]])[0].payload["year"] >= 2000 for h in http)


def test_more_like_this_never_returns_the_point_itself(on):
    client, store, _ = on
    anchor = first_ids(client, 1)[0]
    for like in (anchor, [anchor]):  # the old single id, and the list
        http, answer = http_hits(client, {"like": like, "limit": 5})
        assert anchor not in [h[0] for h in http] and len(http) == 5
        assert_same(http, api_hits(store, like=[anchor], limit=5))
        assert answer["score_kind"] == "cosine"
    text_target, _ = http_hits(client, {"like": [anchor], "target": "text", "limit": 5})
    assert anchor not in [h[0] for h in text_target]
    assert_same(text_target, api_hits(store, like=[anchor], target="text", limit=5))


def test_examples_mix_ids_texts_and_images(on):
    client, store, data = on
    first, second, third = first_ids(client)
    picture = image_file(data, store, third)
    body = {"text": QUERY, "like": [first, "a yellow star", {"image": b64(picture)}], "unlike": [{"id": second}],
            "limit": 6}
    http, _ = http_hits(client, body)
    ids = [h[0] for h in http]
    assert first not in ids and second not in ids  # stored examples are excluded, liked or not
    assert_same(http, api_hits(store, texts=[QUERY], like=[first, "a yellow star", picture], unlike=[second],
                               limit=6))


def test_upload_takes_the_same_options(on):
    client, store, data = on
    first, second, third = first_ids(client)
    picture = image_file(data, store, first)
    form = {"limit": "5", "mode": "dense", "like": [second], "not": ["a red circle"], "strategy": "sum_scores",
            "group_by": "color"}
    http, _ = http_hits(client, None, "/search/upload", data=form,
                        files={"image": ("q.jpg", open(picture, "rb").read(), "image/jpeg")})
    assert second not in [h[0] for h in http]
    assert_same(http, api_hits(store, image_paths=[picture], like=[second], not_texts=["a red circle"],
                               strategy="sum_scores", group_by="color", limit=5))


def test_the_answer_names_the_kind_of_score(on):
    client, _, _ = on
    kinds = {"cosine": {}, "fused": {"mode": "hybrid"}, "bm25": {"mode": "keyword"},
             "formula": {"boost": "score + 0.001 * year"}, "recommendation": {"like": ["a star"],
                                                                               "strategy": "best_score"}}
    for kind, options in kinds.items():
        answer = client.post("/search", json={"text": QUERY, "limit": 2, **options}).json()
        assert answer["score_kind"] == kind and answer["mode"] == options.get("mode", "dense"), answer
    # Diversity keeps the similarity to the query, whichever legs chose the candidates: the plain search's scores.
    plain = {h["id"]: h["score"] for h in client.post("/search", json={"text": QUERY, "limit": ROWS}).json()["hits"]}
    for options in ({"diversity": 0.6}, {"diversity": 0.6, "mode": "hybrid"}, {"diversity": 0.6, "target": "both"}):
        answer = client.post("/search", json={"text": QUERY, "limit": 8, **options}).json()
        assert answer["score_kind"] == "cosine"
        assert [h["score"] for h in answer["hits"]] == pytest.approx([plain[h["id"]] for h in answer["hits"]],
                                                                      abs=1e-5)


def test_http_defaults_are_the_librarys():
    """A field HTTP and ``QueryRequest`` share has one default: an option left out means the same in both."""
    import dataclasses

    from mmindex.pipeline.query.queries import QueryRequest
    from mmindex.pipeline.serve.schemas import SearchBody
    from mmindex.pipeline.serve.searching import SearchInputs

    library = {f.name: f.default for f in dataclasses.fields(QueryRequest)  # examples: None here, () there
               if f.default is not dataclasses.MISSING and f.default != ()}
    shared = {name: field.default for name, field in SearchBody.model_fields.items() if name in library}
    assert {"mode", "fusion", "strategy", "diversity", "pool", "boost", "group_by", "group_size", "cutoff", "target",
            "limit", "offset", "score_threshold"} <= set(shared)
    assert shared == {name: library[name] for name in shared}
    inputs = {f.name: f.default for f in dataclasses.fields(SearchInputs) if f.name in library}
    assert inputs == {name: library[name] for name in inputs}


# -- every bad input: a 4xx with a code ----------------------------------------------------------------------------

MISSING = str(uuid.UUID(int=7))


@pytest.mark.parametrize("body, status, code, words", [
    ({"like": [MISSING]}, 404, "not_found", MISSING),
    ({"like": MISSING}, 404, "not_found", MISSING),
    ({"text": QUERY, "unlike": [MISSING]}, 404, "not_found", MISSING),
    ({"like": [{"id": "not-an-id"}]}, 404, "not_found", "not-an-id"),
    ({"like": [{"id": MISSING, "text": "x"}]}, 400, "bad_request", "exactly one of id, text or image"),
    ({"like": [{"image": "not base64!"}]}, 400, "bad_image", "like[0]"),
    ({"text": QUERY, "group_by": "nosuchfield"}, 400, "unknown_field", "nosuchfield"),
    ({"text": QUERY, "group_by": "score"}, 400, "ungroupable_field", "score"),
    ({"text": QUERY, "group_size": 2}, 400, "bad_request", "--group-size needs --group-by"),
    ({"text": QUERY, "group_by": "color", "group_size": 0}, 400, "bad_request", "--group-size"),
    ({"text": QUERY, "group_by": "color", "group_size": 200, "limit": 10}, 400, "window_too_large", "group_size"),
    ({"text": QUERY, "diversity": 1.5}, 400, "bad_request", "--diversity must be a number from 0 to 1"),
    ({"text": QUERY, "diversity": -0.1}, 400, "bad_request", "--diversity must be a number from 0 to 1"),
    ({"text": QUERY, "diversity": "lots"}, 422, "invalid_request", "diversity"),
    ({"text": QUERY, "pool": 30}, 400, "bad_request", "--pool is the candidate pool of --diversity"),
    ({"text": QUERY, "diversity": 0.5, "pool": 0}, 400, "bad_request", "--pool"),
    ({"text": QUERY, "diversity": 0.5, "pool": 5000}, 400, "window_too_large", "pool"),
    ({"text": QUERY, "diversity": 0.5, "pool": 5, "limit": 10}, 400, "window_too_large", "pool"),
    ({"text": QUERY, "diversity": 0.5, "boost": "score"}, 400, "bad_request", "--diversity and --boost"),
    ({"text": QUERY, "boost": "score + * year"}, 400, "bad_boost", "column"),
    ({"text": QUERY, "boost": "score + 0.1 * nosuchfield"}, 400, "bad_boost", "nosuchfield"),
    ({"text": QUERY, "boost": "score + 0.1 * color"}, 400, "bad_boost", "color"),
    ({"text": QUERY, "boost": "score + ln(year - 3000)"}, 400, "bad_boost", "could not be computed"),
    ({"text": QUERY, "cutoff": "auto", "mode": "hybrid"}, 400, "bad_request", "--cutoff"),
    ({"text": QUERY, "cutoff": "sometimes"}, 422, "invalid_request", "cutoff"),
    ({"text": QUERY, "mode": "fuzzy"}, 422, "invalid_request", "mode"),
    ({"text": QUERY, "strategy": "vibes"}, 422, "invalid_request", "strategy"),
    ({"text": QUERY, "like": ["x"] * 17}, 422, "invalid_request", "like"),
    ({"text": QUERY, "like": [""]}, 400, "bad_request", "--like example is empty"),
    ({"text": QUERY, "not": ["  "]}, 400, "bad_request", "--not text is empty"),
    ({"like": ["a red circle"], "mode": "keyword"}, 400, "bad_request", "keyword mode ranks only the words of a TEXT"),
    ({"text": QUERY, "image": "AAAA"}, 400, "bad_request", "not both"),
    ({"not": ["a red circle"]}, 400, "bad_request", "give a text or an image"),
])
def test_bad_inputs_are_4xx_with_a_code(on, body, status, code, words):
    client, _, _ = on
    response = client.post("/search", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and words in error["message"], error


def test_the_library_refuses_what_http_refuses_in_the_same_words(on):
    """Each UsageError HTTP answers is the one ``QueryRequest`` / ``run_queries`` raises for the same inputs."""
    client, store, _ = on
    cases = [({"diversity": 1.5}, {"diversity": 1.5}), ({"pool": 30}, {"pool": 30}),
             ({"group_size": 2}, {"group_size": 2}), ({"cutoff": "auto", "target": "both"},
                                                      {"cutoff": "auto", "target": "both"})]
    for body, request_ in cases:
        with pytest.raises(UsageError) as library:
            api_hits(store, texts=[QUERY], **request_)
        answer = client.post("/search", json={"text": QUERY, **body})
        assert answer.status_code == 400 and answer.json()["error"]["message"] == library.value.message
    with pytest.raises(UsageError) as unknown:
        api_hits(store, like=[MISSING])
    missing = client.post("/search", json={"like": [MISSING]}).json()["error"]
    assert missing == {"code": "not_found", "message": unknown.value.message}
    from mmindex.pipeline.query.rescore import parse_boost

    with pytest.raises(FilterError) as boost:  # the parser's words, the expression named as HTTP names it
        parse_boost("score + * year", store.spec().payload_types, source="boost")
    assert client.post("/search", json={"text": QUERY, "boost": "score + * year"}).json()["error"] == {
        "code": "bad_boost", "message": boost.value.message}


@pytest.mark.parametrize("form, status, code", [
    ({"like": MISSING}, 404, "not_found"),
    ({"diversity": "2"}, 400, "bad_request"),
    ({"group_by": "nosuchfield"}, 400, "unknown_field"),
    ({"boost": "score +"}, 400, "bad_boost"),
    ({"mode": "keyword"}, 400, "bad_request"),  # an image has no words
    ({"mode": "fuzzy"}, 422, "invalid_request"),
])
def test_upload_bad_inputs_are_4xx_with_a_code(on, form, status, code):
    client, store, data = on
    picture = image_file(data, store, first_ids(client, 1)[0])
    response = client.post("/search/upload", data=form, files={"image": ("q.jpg", open(picture, "rb").read(),
                                                                         "image/jpeg")})
    assert response.status_code == status and response.json()["error"]["code"] == code, response.text


# -- the whole kind: drawn combinations, HTTP against the API ------------------------------------------------------

BAD = {  # one input the library refuses, drawn now and then
    "diversity": {"diversity": 1.2}, "pool": {"pool": 40}, "group_size": {"group_size": 0},
    "threshold": {"score_threshold": 0.1}, "cutoff": {"cutoff": "auto"}, "group_field": {"group_by": "nosuchfield"},
    "empty_not": {"not_texts": [" "]},
}


@st.composite
def drawn_options(draw) -> dict:
    """``QueryRequest`` keywords: a mode, target and fusion, negatives and a strategy, one way to reorder (none,
    diversity with or without a pool, groups), a filter and a page; now and then one input the library refuses
    (and the threshold and cutoff, which only plain dense search of one target takes)."""
    options = {"mode": draw(st.sampled_from(["dense", "keyword", "hybrid"])),
               "target": draw(st.sampled_from(["image", "text", "both"])),
               "fusion": draw(st.sampled_from(["rrf", "dbsf"])),
               "strategy": draw(st.sampled_from(["average_vector", "best_score", "sum_scores"])),
               "limit": draw(st.integers(1, 6)), "offset": draw(st.integers(0, 3))}
    if draw(st.booleans()):
        options["not_texts"] = draw(st.lists(st.sampled_from(["a red circle", "a green square"]), min_size=1,
                                             max_size=2))
    if draw(st.booleans()):
        options["unlike"] = draw(st.lists(st.sampled_from(["a small star", "a purple shape"]), min_size=1,
                                          max_size=2))
    reorder = draw(st.sampled_from(["none", "diversity", "groups"]))
    if reorder == "diversity":
        options["diversity"] = draw(st.sampled_from([0.0, 0.4, 1.0]))
        if draw(st.booleans()):
            options["pool"] = draw(st.sampled_from([8, 40]))
    elif reorder == "groups":
        options["group_by"] = draw(st.sampled_from(["color", "shape"]))
        options["group_size"] = draw(st.sampled_from([1, 2]))
    if draw(st.booleans()):
        options["where"] = draw(st.sampled_from(["year >= 2000", "color = 'red' or shape = 'circle'"]))
    bad = draw(st.sampled_from([None] * 8 + sorted(BAD)))
    return {**options, **BAD[bad]} if bad else options


HTTP_NAMES = {"not_texts": "not", "where": "filter"}


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(options=drawn_options())
def test_drawn_options_give_the_apis_hits_or_its_refusal(surface, options):
    served, _ = surface
    for client, store in served.values():
        body = {"text": QUERY, **{HTTP_NAMES.get(k, k): v for k, v in options.items()}}
        try:
            expected = api_hits(store, texts=[QUERY], **options)
        except UsageError as error:
            response = client.post("/search", json=body)
            assert response.status_code == 400 and response.json()["error"]["message"] == error.message
            event("the same refusal")
            continue
        except FilterError as error:  # a pool smaller than the page: the same refusal, HTTP's code
            assert "--pool" in error.message
            assert client.post("/search", json=body).json()["error"]["code"] == "window_too_large"
            event("the same refusal (pool)")
            continue
        http, _ = http_hits(client, body)
        assert_same(http, expected)
        event("same hits" if http else "same hits: none")



# -- the outside review's cases ------------------------------------------------------------------------------------

def test_a_page_past_the_fused_candidates_is_window_too_large(on):
    client, _, _ = on
    for body in ({"text": QUERY, "target": "both", "limit": 10, "offset": 95},
                 {"text": QUERY, "mode": "hybrid", "limit": 10, "offset": 95},
                 {"text": QUERY, "diversity": 0.3, "limit": 10, "offset": 95},
                 {"text": QUERY, "target": "both", "fusion_depth": 5000}):
        response = client.post("/search", json=body)
        assert response.status_code == 400 and response.json()["error"]["code"] == "window_too_large", body
    deeper = client.post("/search", json={"text": QUERY, "target": "both", "limit": 10, "offset": 95,
                                          "fusion_depth": 200})
    assert deeper.status_code == 200, deeper.text


def test_like_takes_an_id_column_value_as_the_cli_does(on):
    client, store, _ = on
    hit = client.post("/search", json={"text": QUERY, "limit": 1}).json()["hits"][0]
    value = hit["payload"]["id"]  # the sample's id column
    for like in (value, [value], {"id": value}, [{"id": value}], f"id:{value}"):
        got, _ = http_hits(client, {"like": like, "limit": 5})
        assert hit["id"] not in [g[0] for g in got], like
        assert_same(got, api_hits(store, like=[value], limit=5))
    missing = client.post("/search", json={"like": {"id": "no-such-row"}, "limit": 5})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_one_explicit_example_object_is_taken_as_a_list_of_one(on):
    client, store, _ = on
    one, _ = http_hits(client, {"text": QUERY, "unlike": {"text": "a red circle"}, "limit": 5})
    listed, _ = http_hits(client, {"text": QUERY, "unlike": [{"text": "a red circle"}], "limit": 5})
    assert one == listed == [(i, pytest.approx(s, abs=1e-4), g) for i, s, g in
                             api_hits(store, texts=[QUERY], unlike=["text:a red circle"], limit=5)]


def test_an_empty_group_by_is_refused(on):
    client, _, _ = on
    response = client.post("/search", json={"text": QUERY, "group_by": ""})
    assert response.status_code == 400 and "--group-by needs a field name" in response.json()["error"]["message"]


def test_a_boost_the_engine_cannot_compute_names_no_server_path(on):
    client, _, _ = on
    response = client.post("/search", json={"text": QUERY, "boost": "ln(score - 5)"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_boost"
    message = response.json()["error"]["message"]
    assert "could not be computed" in message and "/" not in message.replace("ln and log10", "")


@pytest.mark.parametrize("text", ["", "   ", "\u0000", "\u0007\u0007", "\u2028 \u0085"])
def test_a_text_empty_once_cleaned_is_a_400_as_an_empty_one(app_client, text):
    """A query of only control characters embedded as the empty string and answered; it is refused like "" is."""
    response = app_client.post("/search", json={"text": text})
    assert response.status_code == 400, response.text
    if text:  # a text was given: the answer says it cleans to nothing, not that none was given
        assert "empty once cleaned" in response.text, response.text


@pytest.mark.parametrize("text", ["", "   ", "\u0000\u0001", "\t\n"])
def test_embed_refuses_a_text_empty_once_cleaned_naming_its_index(app_client, text):
    """Ingest stores no text vector for such a caption and /search refuses it: /embed does not invent one."""
    response = app_client.post("/embed", json={"texts": ["a red circle", text]})
    assert response.status_code == 400 and "texts[1]" in response.text, response.text
    assert app_client.post("/embed", json={"texts": ["a\u0000red circle"]}).status_code == 200
