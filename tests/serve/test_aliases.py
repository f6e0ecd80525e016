"""A running `mmindex serve` follows an alias switched to a collection of another model (docs/sync.md's
model upgrade)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mmindex.pipeline.cli import main


def test_serve_follows_an_alias_switched_to_a_collection_of_another_model(tmp_path, tiny_model, sample_dir):
    """The model upgrade of docs/sync.md: build photos-v2 with another model beside photos-v1, switch the
    alias, and the running service answers from v2 with v2's model (loaded on the first query)."""
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    import httpx

    from mmindex.pipeline.ingest.sample import write_sample
    from mmindex.pipeline.training.scratch import build_scratch_model
    from helpers.serving import start

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
