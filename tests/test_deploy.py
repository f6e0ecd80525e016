"""deploy/ cannot rot: every manifest parses, and every mmindex command line in it passes the
CLI's own parser and option checks (`--dry-run`), with the shipped config file."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mmindex.pipeline.cli import main

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
CONFIG_IN_IMAGE = "/etc/mmindex/mmindex.toml"


def yaml_documents():
    for path in sorted(DEPLOY.rglob("*.y*ml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield path, document


def walk(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def command_lines() -> list[tuple[str, list[str]]]:
    """(where, argv after `mmindex`) for every mmindex invocation under deploy/."""
    found = []
    for path, document in yaml_documents():
        name = path.relative_to(DEPLOY)
        for node in walk(document):
            image = str(node.get("image", "")) if isinstance(node.get("image"), str) else ""
            if "mmindex" in image or "build" in node:
                if "command" in node and isinstance(node["command"], list) and node["command"][:1] != ["/bin/sh"]:
                    found.append((f"{name}:{node.get('name', 'command')}", [str(a) for a in node["command"]]))
                if "args" in node:
                    found.append((f"{name}:{node.get('name', 'args')}", [str(a) for a in node["args"]]))
            if isinstance(node.get("entrypoint"), str) and node["entrypoint"].strip().startswith("mmindex"):
                found.append((f"{name}:entrypoint", shlex.split(node["entrypoint"])[1:]))
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["mmindex"\]', dockerfile, re.M)
    found.append(("Dockerfile:CMD", json.loads(re.search(r"^CMD (.*)$", dockerfile, re.M).group(1))))
    for line in (DEPLOY / "cron" / "mmindex.cron").read_text().splitlines():
        if line and not line.startswith("#") and "=" not in line.split()[0]:
            tokens = shlex.split(line.split(">>")[0])[6:]
            start = min(i for i, t in enumerate(tokens) if t == "mmindex" or t.endswith("/bin/mmindex"))
            found.append(("cron", tokens[start + 1:]))
    for path in (DEPLOY / "systemd").glob("*.service"):
        for line in path.read_text().splitlines():
            if line.startswith("ExecStart="):
                found.append((path.name, shlex.split(line.removeprefix("ExecStart="))[1:]))
    return found


def test_every_manifest_parses_and_names_its_kind():
    kinds = set()
    for path, document in yaml_documents():
        if "apiVersion" in document:
            assert document.get("kind") and document.get("metadata", {}).get("name"), path
            kinds.add(document["kind"])
    assert {"CronJob", "Job", "Deployment", "Service", "RayJob", "ConfigMap", "Secret"} <= kinds
    cron = next(d for _, d in yaml_documents() if d.get("kind") == "CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    backfill = next(d for _, d in yaml_documents() if d.get("kind") == "Job")
    assert backfill["spec"]["completionMode"] == "Indexed"


def test_command_lines_were_found_everywhere():
    places = {where.split(":")[0] for where, _ in command_lines()}
    for expected in ("docker-compose.yml", "k8s/cronjob.yaml", "k8s/backfill-indexed-job.yaml", "k8s/query.yaml",
                     "ray/rayjob.yaml", "Dockerfile", "cron", "mmindex-ingest.service"):
        assert expected in places, (expected, places)


@pytest.fixture
def shipped_config(tmp_path):
    """The ConfigMap's mmindex.toml, where the manifests mount it."""
    configmap = next(d for _, d in yaml_documents() if d.get("kind") == "ConfigMap")
    path = tmp_path / "mmindex.toml"
    path.write_text(configmap["data"]["mmindex.toml"])
    return str(path)


@pytest.mark.parametrize("where, argv", command_lines(), ids=[w for w, _ in command_lines()])
def test_each_command_line_passes_the_cli(where, argv, shipped_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [shipped_config if a == CONFIG_IN_IMAGE else a for a in argv]
    if argv == ["--help"]:
        assert CliRunner().invoke(main, argv).exit_code == 0
        return
    env = {"JOB_COMPLETION_INDEX": "0", "QDRANT_API_KEY": "k"}
    result = CliRunner().invoke(main, [*argv, "--print-config"], env=env)
    assert result.exit_code == 0, f"{where}: mmindex {' '.join(argv)}\n{result.output}"
    plan = json.loads(result.output.strip().splitlines()[-1])
    assert plan["command"] in ("ingest", "serve")
    assert plan["store"]["api_key"] in (None, "***")


def test_the_shipped_config_is_valid_for_every_command(shipped_config):
    for command in ("ingest", "query", "serve"):
        result = CliRunner().invoke(main, ["--config", shipped_config, "config", "show", command, "--json"])
        assert result.exit_code == 0, result.output
