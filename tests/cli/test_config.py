"""Settings: flags > MMINDEX_* env > config file > defaults; `config show` masks secrets."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mmindex.pipeline.cli import main


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("QDRANT_URL", "QDRANT_API_KEY", "MMINDEX_CONFIG"):
        monkeypatch.delenv(name, raising=False)

    def invoke(*args, env=None):
        return CliRunner().invoke(main, list(args), env=env or {}, catch_exceptions=False)

    return invoke


def shown(result) -> dict:
    assert result.exit_code == 0, result.output
    return {s["name"]: s for s in json.loads(result.output)["settings"]}


def test_precedence_flag_over_env_over_file_over_default(run, tmp_path):
    (tmp_path / "mmindex.toml").write_text(
        '[store]\ncollection = "from-file"\nurl = "https://qdrant.example.com"\n'
        '[ingest]\nbatch_size = 32\nworkers = 3\nindex_fields = ["year", "lang"]\nmax-reject-rate = 0.2\n'
    )
    settings = shown(run("config", "show", "ingest", "--json", env={"MMINDEX_WORKERS": "5"}))
    assert (settings["batch_size"]["value"], settings["batch_size"]["source"]) == (32, "file")
    assert (settings["workers"]["value"], settings["workers"]["source"]) == (5, "env")  # env beats file
    assert settings["collection"]["value"] == "from-file" and settings["max_reject_rate"]["value"] == 0.2
    assert list(settings["index_fields"]["value"]) == ["year", "lang"]
    assert (settings["timeout"]["value"], settings["timeout"]["source"]) == (60, "default")

    # A flag beats both: the dry run prints what ingest would use.
    result = run("ingest", "data/", "--print-config", "--workers", "7", "-c", "flag", env={"MMINDEX_WORKERS": "5"})
    plan = json.loads(result.output)
    assert (plan["workers"], plan["batch_size"], plan["store"]["collection"]) == (7, 32, "flag")
    assert plan["store"]["url"] == "https://qdrant.example.com" and plan["config_file"] == "mmindex.toml"


def test_query_section_and_shared_store_settings(run, tmp_path):
    path = tmp_path / "prod.toml"
    path.write_text('collection = "photos"\n[query]\nlimit = 25\n')
    settings = shown(run("--config", str(path), "config", "show", "query", "--json"))
    assert settings["limit"]["value"] == 25 and settings["collection"]["value"] == "photos"


def test_secrets_are_masked_and_plain_http_keys_warned(run):
    env = {"QDRANT_API_KEY": "s3cr3t-value", "QDRANT_URL": "http://qdrant.internal:6333"}
    result = run("config", "show", "ingest", "--json", env=env)
    data = json.loads(result.output)
    settings = {s["name"]: s for s in data["settings"]}
    assert settings["api_key"]["value"] == "***" and "s3cr3t" not in result.output
    assert "over plain http://" in data["warnings"][0]
    human = run("config", "show", env=env)
    assert "s3cr3t" not in human.output and "***" in human.output
    dry = run("ingest", "x", "--print-config", env=env)
    assert "s3cr3t" not in dry.output
    local = run("config", "show", "--json", env={**env, "QDRANT_URL": "http://localhost:6333"})
    assert json.loads(local.output)["warnings"] == []


@pytest.mark.parametrize("text, message", [
    ("[ingset]\nbatch_size = 3\n", "unknown section [ingset]"),
    ("[ingest]\nbatchsize = 3\n", "[ingest] has no setting(s) batchsize"),
    ("nonsense = 1\n", "unknown setting(s) nonsense"),
    ("[ingest\n", "cannot be read"),
])
def test_config_mistakes_are_clear(run, tmp_path, text, message):
    (tmp_path / "mmindex.toml").write_text(text)
    result = CliRunner().invoke(main, ["config", "show"])
    assert result.exit_code == 1 and message in result.output


def test_every_option_has_an_environment_variable(run):
    settings = json.loads(run("config", "show", "ingest", "--json").output)["settings"]
    for item in settings:
        if item["command_line_only"]:  # what deletes points is typed each time (--max-delete): no variable, no file
            assert item["env"] == [] and item["name"] == "max_delete", item
            continue
        assert f"MMINDEX_{item['name'].upper()}" in item["env"], item


def test_what_delete_deletes_is_never_taken_from_the_environment_or_the_file(cli, tmp_path, sample_dir, tiny_model,
                                                                             monkeypatch):
    """A `where` meant for queries in mmindex.toml, or MMINDEX_YES, must not turn `mmindex delete` into a deletion."""
    where = ["-c", "keep", "--data-dir", tmp_path / "store"]
    assert cli("ingest", sample_dir, *where, "--model", tiny_model, "-q").exit_code == 0
    (tmp_path / "mmindex.toml").write_text('where = "year < 2100"\n')
    monkeypatch.setenv("MMINDEX_YES", "1")
    monkeypatch.setenv("MMINDEX_IDS", "shape-0000001")
    refused = cli("delete", *where)
    assert refused.exit_code == 2 and "name the points to delete" in refused.output
    (tmp_path / "mmindex.toml").write_text('[delete]\nwhere = "year < 2100"\n')
    assert "[delete] has no setting(s) where" in cli("delete", *where).output
    (tmp_path / "mmindex.toml").unlink()
    assert '"points": 60' in cli("info", *where, "--json").output


def test_every_option_answers_to_its_flag_s_name(cli, monkeypatch):
    """MMINDEX_<FLAG>: --json is MMINDEX_JSON (its setting's name, as_json, works too)."""
    import click

    from mmindex.pipeline.cli import main

    query = main.get_command(click.Context(main), "query")
    envvars = {param.name: param.envvar for param in query.params}
    assert envvars["as_json"] == ["MMINDEX_JSON", "MMINDEX_AS_JSON"]
    assert envvars["image_paths"] == ["MMINDEX_IMAGE", "MMINDEX_IMAGE_PATHS"]
    assert envvars["limit"] == ["MMINDEX_LIMIT"]
    monkeypatch.setenv("MMINDEX_JSON", "1")
    assert cli("alias", "list", "--data-dir", "store").output.strip() == "{}"  # JSON, as the flag would ask
