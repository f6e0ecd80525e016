"""The issue's example of ties, end to end: 30 of 40 catalogue rows share one photo and the caption
"No description"; pages of 10 through the CLI (``--offset``) and HTTP hold each of the 40 points once, for every
target, with ``--exact`` or not."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmindex.pipeline.ingest.sample import write_sample


@pytest.fixture
def catalogue(tmp_path, run, tiny_model):
    path = write_sample(tmp_path / "data", rows=40, seed=5, width=32, height=32)[0]
    rows = pq.read_table(path).to_pylist()
    for row in rows[10:]:
        row["image"], row["caption"] = rows[10]["image"], "No description"
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), path)
    (tmp_path / "photo.jpg").write_bytes(rows[10]["image"])
    result = run("ingest", tmp_path / "data", "-c", "cat", "--model", tiny_model, "-q")
    assert result.exit_code == 0, result.output
    return tmp_path, {row["id"] for row in rows}


@pytest.mark.parametrize("target", ["image", "text", "both"])
@pytest.mark.parametrize("exact", [False, True])
def test_cli_pages_hold_each_point_once(run, catalogue, target, exact):
    folder, ids = catalogue
    seen = []
    for offset in (0, 10, 20, 30):
        args = ["query", "No description", "-c", "cat", "--target", target, "--limit", "10", "--offset", offset,
                "--json", *(["--exact"] if exact else [])]
        result = run(*args)
        assert result.exit_code == 0, result.output
        hits = [json.loads(line) for line in result.stdout.splitlines()]
        assert [(-h["score"], h["id"]) for h in hits] == sorted((-h["score"], h["id"]) for h in hits)
        seen.extend(hit["payload"]["id"] for hit in hits)
    assert sorted(seen) == sorted(ids)


def test_cli_image_query_pages_hold_each_point_once(run, catalogue):
    folder, ids = catalogue
    seen = []
    for offset in (0, 10, 20, 30):
        result = run("query", "--image", folder / "photo.jpg", "-c", "cat", "-k", "10", "--offset", offset, "--json")
        assert result.exit_code == 0, result.output
        seen.extend(json.loads(line)["payload"]["id"] for line in result.stdout.splitlines())
    assert sorted(seen) == sorted(ids)


def test_http_pages_hold_each_point_once(catalogue):
    pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'mmindex[serve]')")
    from fastapi.testclient import TestClient

    from mmindex.pipeline.config import StoreSettings
    from mmindex.pipeline.serve.app import create_app
    from mmindex.pipeline.serve.settings import ServeSettings

    folder, ids = catalogue
    app = create_app(ServeSettings(store=StoreSettings(collection="cat", data_dir=str(folder / "mmindex_data")),
                                   device="cpu"))
    with TestClient(app) as client:
        for target in ("image", "text", "both"):
            seen = []
            for offset in (0, 10, 20, 30):
                answer = client.post("/search", json={"text": "No description", "target": target, "limit": 10,
                                                      "offset": offset})
                assert answer.status_code == 200, answer.text
                seen.extend(hit["payload"]["id"] for hit in answer.json()["hits"])
            assert sorted(seen) == sorted(ids), target
