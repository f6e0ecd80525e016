"""`mmindex alias`: set, list, delete, query through an alias, and switches that readers never see half-done."""
from __future__ import annotations

import json
import os
import threading
import time
import uuid

import numpy as np
import pytest
from click.testing import CliRunner

from mmindex.connectors.base import CollectionSpec, PointRecord, SearchRequest
from mmindex.connectors.qdrant_edge import ALIASES_FILE, QdrantEdgeStore
from mmindex.connectors.qdrant_server import QdrantServerStore
from mmindex.pipeline.cli import main

DIM = 8
SPEC = CollectionSpec("m", DIM, {"v": "integer"})


def fill(store, version: int, n: int = 20) -> None:
    """``n`` points whose payload says which collection they are in."""
    rng = np.random.default_rng(version)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store.ensure_collection(SPEC)
    store.upsert([PointRecord(str(uuid.uuid5(uuid.NAMESPACE_URL, f"{version}-{i}")), {"image": v}, {"v": version})
                  for i, v in enumerate(vectors)])
    store.finish()


@pytest.fixture
def data_dir(tmp_path):
    """Collections v1 ({"v": 1}) and v2 ({"v": 2}) in one embedded store, closed again."""
    for version in (1, 2):
        store = QdrantEdgeStore(f"v{version}", data_dir=tmp_path / "data")
        fill(store, version)
        store.close()
    return tmp_path / "data"


@pytest.fixture
def run(cli):
    return cli


def test_set_list_delete(run, data_dir):
    first = run("alias", "set", "live", "v1", "--data-dir", data_dir)
    assert first.exit_code == 0 and first.stdout.strip() == "alias live → v1 (new)"
    switch = run("alias", "set", "live", "v2", "--data-dir", data_dir)
    assert switch.exit_code == 0 and switch.stdout.strip() == "alias live → v2 (was v1)"
    run("alias", "set", "old", "v1", "--data-dir", data_dir)
    listed = run("alias", "list", "--data-dir", data_dir)
    assert listed.stdout.splitlines() == ["live → v2", "old → v1"]
    assert json.loads(run("alias", "list", "--data-dir", data_dir, "--json").stdout) == {"live": "v2", "old": "v1"}
    info = run("info", "-c", "live", "--data-dir", data_dir)
    assert "alias of     v2" in info.stdout and "points       20" in info.stdout
    assert json.loads(run("info", "-c", "live", "--data-dir", data_dir, "--json").stdout)["alias_of"] == "v2"
    deleted = run("alias", "delete", "old", "--data-dir", data_dir)
    assert deleted.exit_code == 0 and deleted.stdout.strip() == "deleted alias old (it pointed to v1)"
    assert json.loads(run("alias", "list", "--data-dir", data_dir, "--json").stdout) == {"live": "v2"}
    assert QdrantEdgeStore("v1", data_dir=data_dir).count() == 20  # the collection stays
    assert "no aliases" in run("alias", "list", "--data-dir", data_dir / "empty").stdout


@pytest.mark.parametrize("args, message", [
    (("set", "v2", "v1"), "'v2' is a collection"),
    (("set", "live", "missing"), "collection 'missing' does not exist"),
    (("set", "again", "live"), "(it is an alias; point the new alias at a collection)"),
    (("set", "live", "live"), "cannot point to itself"),
    (("set", "../x", "v1"), "invalid collection name '../x'"),
    (("delete", "nothing"), "no alias 'nothing'"),
])
def test_refusals_are_one_line(run, data_dir, args, message):
    assert run("alias", "set", "live", "v1", "--data-dir", data_dir).exit_code == 0
    result = run("alias", *args, "--data-dir", data_dir)
    assert result.exit_code == 1 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert json.loads(run("alias", "list", "--data-dir", data_dir, "--json").stdout) == {"live": "v1"}


def test_query_through_an_alias_answers_from_its_collection(run, tiny_model, sample_dir):
    ingest = run("ingest", sample_dir, "-c", "shapes-v1", "--model", tiny_model, "-q")
    assert ingest.exit_code == 0, ingest.output
    assert run("alias", "set", "shapes", "shapes-v1").exit_code == 0

    def answers(collection):
        result = run("query", "a red circle", "-c", collection, "--json", "--device", "cpu", "--limit", 5)
        assert result.exit_code == 0, result.output
        return [(hit["id"], hit["score"]) for hit in map(json.loads, result.stdout.splitlines())]

    assert len(answers("shapes")) == 5 and answers("shapes") == answers("shapes-v1")


def search_while_switching(reader_stores, switch, seconds: float = 1.0) -> list[set[int]]:
    """Search from one thread per reader while ``switch(i)`` moves the alias; each answer's set of ``v``."""
    query = SearchRequest(vector=np.ones(DIM, dtype=np.float32) / np.sqrt(DIM), limit=5)
    answers: list[set[int]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def search(store):
        try:
            while not stop.is_set():
                answers.append({hit.payload["v"] for hit in store.search(query)})
        except BaseException as error:  # noqa: BLE001 - any failure is the test's finding
            errors.append(error)

    threads = [threading.Thread(target=search, args=(store,)) for store in reader_stores]
    for thread in threads:
        thread.start()
    deadline, switches = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        switch(switches)
        switches += 1
        time.sleep(0.002)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert errors == [] and switches > 50
    return answers


def test_switching_an_edge_alias_under_searching_readers(data_dir):
    admin = QdrantEdgeStore("v1", data_dir=data_dir)
    admin.set_alias("live", "v1")
    reader = QdrantEdgeStore("live", data_dir=data_dir)  # one store, two threads: as `mmindex serve` uses it
    answers = search_while_switching([reader, reader], lambda i: admin.set_alias("live", f"v{i % 2 + 1}"))
    assert answers and all(answer in ({1}, {2}) for answer in answers)  # never empty, never mixed
    assert {2} in answers and {1} in answers  # the readers followed the switches, both ways
    admin.set_alias("live", "v2")
    assert {hit.payload["v"] for hit in reader.search(SearchRequest(vector=np.ones(DIM), limit=3))} == {2}
    reader.close()


def test_switching_a_server_alias_under_searching_readers():
    admin = QdrantServerStore("v1", url=":memory:")
    fill(admin, 1)
    fill(QdrantServerStore("v2", url=":memory:", client=admin.client), 2)
    admin.set_alias("live", "v1")
    reader = QdrantServerStore("live", url=":memory:", client=admin.client)
    answers = search_while_switching([reader], lambda i: admin.set_alias("live", f"v{i % 2 + 1}"))
    assert answers and all(answer in ({1}, {2}) for answer in answers)
    assert {1} in answers and {2} in answers
    admin.close()


def test_an_edge_reader_follows_a_switch_that_kept_the_file_time(data_dir):
    """Two switches within one tick of the file system's clock leave aliases.json with the same mtime
    (whole seconds on some file systems): the reader must still see the second one."""
    admin = QdrantEdgeStore("v1", data_dir=data_dir)
    admin.set_alias("live", "v1")
    path = data_dir / ALIASES_FILE
    reader = QdrantEdgeStore("live", data_dir=data_dir)
    query = SearchRequest(vector=np.ones(DIM), limit=3)
    for target, version in (("v2", 2), ("v1", 1), ("v2", 2)):  # back to a collection it read before, too
        before = path.stat().st_mtime_ns
        assert {hit.payload["v"] for hit in reader.search(query)} == {3 - version}
        admin.set_alias("live", target)
        os.utime(path, ns=(before, before))
        assert {hit.payload["v"] for hit in reader.search(query)} == {version}
    reader.close()


def test_serve_follows_an_alias_switched_to_a_collection_of_another_model(tmp_path, tiny_model, sample_dir):
    """The README's model upgrade: build photos-v2 with another model beside photos-v1, switch the
    alias, and the running service answers from v2 with v2's model (loaded on the first query)."""
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    import httpx

    from mmindex.pipeline.ingest.sample import write_sample
    from mmindex.pipeline.training.scratch import build_scratch_model
    from serving import start

    data, store = tmp_path / "data", tmp_path / "store"
    write_sample(data, rows=12, seed=31, width=32, height=32)
    texts = [line for line in ("a red circle", "a blue square", "a green triangle")]
    upgraded = build_scratch_model(tmp_path / "clip-v2", size="tiny", texts=texts, seed=7)
    runner = CliRunner()
    for collection, model in (("photos-v1", tiny_model), ("photos-v2", upgraded)):
        result = runner.invoke(main, ["ingest", str(data), "-c", collection, "--data-dir", str(store), "--model",
                                      model, "--source", collection, "--device", "cpu", "-q"])
        assert result.exit_code == 0, result.output
    assert runner.invoke(main, ["alias", "set", "photos", "photos-v1", "--data-dir", str(store)]).exit_code == 0
    expected = {}
    for collection in ("photos-v1", "photos-v2"):
        cli = runner.invoke(main, ["query", "a red circle", "-c", collection, "--data-dir", str(store), "--json",
                                   "--limit", "3", "--device", "cpu"])
        expected[collection] = [json.loads(line)["id"] for line in cli.output.splitlines()]
    site = start(store, "photos", None, log=tmp_path / "serve.log")
    try:
        def ask():
            answer = httpx.post(f"{site.url}/search", json={"text": "a red circle", "limit": 3}, timeout=60).json()
            return [h["id"] for h in answer["hits"]], {h["source"]["name"] for h in answer["hits"]}

        assert ask() == (expected["photos-v1"], {"photos-v1"})
        before = httpx.get(f"{site.url}/readyz", timeout=10).json()["model"]
        switched = runner.invoke(main, ["alias", "set", "photos", "photos-v2", "--data-dir", str(store)])
        assert switched.exit_code == 0 and "was photos-v1" in switched.output
        assert ask() == (expected["photos-v2"], {"photos-v2"})
        after = httpx.get(f"{site.url}/readyz", timeout=10).json()["model"]
        assert (before, after) == ("tiny-clip", "clip-v2")
    finally:
        site.stop()


def test_a_collection_and_its_alias_open_in_one_process(data_dir):
    """serve may reach a collection by its name and by an alias: one shard, shared, not a lock error."""
    direct = QdrantEdgeStore("v1", data_dir=data_dir)
    direct.set_alias("live", "v1")
    by_alias = QdrantEdgeStore("live", data_dir=data_dir)
    probe = SearchRequest(vector=np.ones(DIM, np.float32).tolist(), limit=3)
    assert direct.search(probe) and by_alias.search(probe)
    by_alias.close()
    assert direct.count() == 20  # the shard stays open for the store that still holds it
    direct.close()


def test_a_dangling_alias_says_where_it_points(run, data_dir):
    import shutil

    assert run("alias", "set", "gone", "v2", "--data-dir", data_dir).exit_code == 0
    shutil.rmtree(data_dir / "v2")
    listed = run("alias", "list", "--data-dir", data_dir)
    assert "gone → v2  (missing: no such collection)" in listed.output
    query = run("query", "x", "-c", "gone", "--data-dir", data_dir)
    assert query.exit_code == 1 and "alias 'gone' points to collection 'v2', which does not exist" in query.output
