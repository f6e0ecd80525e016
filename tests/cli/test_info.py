"""`mmindex info`: JSON and the model by name."""
from __future__ import annotations

import json


def test_info_json(run, ingested, tiny_model):
    result = run("info", "-c", "shapes", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["points"] == 60 and info["model"] == "tiny-clip" and info["vectors"] == ["image", "text"]
    assert info["model_path"] == tiny_model and info["model_fingerprint"].startswith("sha256:")
    assert info["id_rule"] == {"rule": "column", "column": "id"}
    assert info["indexed_fields"] == {"color": "keyword", "year": "integer"}


def test_info_shows_the_model_by_name(run, ingested, tiny_model):
    line = next(l for l in run("info", "-c", "shapes").stdout.splitlines() if l.startswith("model"))
    assert line.split()[1] == "tiny-clip" and f"loaded from {tiny_model}" in line and "(sha256:" in line
