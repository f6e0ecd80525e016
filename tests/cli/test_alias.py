"""`mmindex alias`: set, list, delete, query through an alias, refusals in one line, a dangling alias."""
from __future__ import annotations

import json

import pytest
from helpers.aliases import write_versions

from mmindex.connectors.qdrant_edge import QdrantEdgeStore


@pytest.fixture
def data_dir(tmp_path):
    """Collections v1 ({"v": 1}) and v2 ({"v": 2}) in one embedded store, closed again."""
    return write_versions(tmp_path / "data")


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


def test_a_dangling_alias_says_where_it_points(run, data_dir):
    import shutil

    assert run("alias", "set", "gone", "v2", "--data-dir", data_dir).exit_code == 0
    shutil.rmtree(data_dir / "v2")
    listed = run("alias", "list", "--data-dir", data_dir)
    assert "gone → v2  (missing: no such collection)" in listed.output
    query = run("query", "x", "-c", "gone", "--data-dir", data_dir)
    assert query.exit_code == 1 and "alias 'gone' points to collection 'v2', which does not exist" in query.output


def test_every_command_names_an_alias_whose_collection_is_gone(cli, tmp_path, tiny_model, sample_dir):
    """info, delete and query say the same thing about an alias pointing at a deleted collection."""
    import shutil

    where = ["--data-dir", tmp_path / "store"]
    assert cli("ingest", sample_dir, "-c", "v1", *where, "--model", tiny_model, "-q").exit_code == 0
    assert cli("alias", "set", "live", "v1", *where).exit_code == 0
    shutil.rmtree(tmp_path / "store" / "v1")
    message = "alias 'live' points to collection 'v1', which does not exist"
    for args in (["info", "-c", "live"], ["delete", "-c", "live", "--ids", "a", "--yes"], ["query", "x", "-c", "live"]):
        result = cli(*args, *where)
        assert result.exit_code == 1 and message in result.output, (args, result.output)
