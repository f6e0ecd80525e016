"""The ingest/query suite against a real Qdrant server or cluster: set QDRANT_URL (and
QDRANT_API_KEY if it needs one). Without it every test here shows as skipped, with the reason."""
from __future__ import annotations

import json
import os
import uuid

import pytest
from click.testing import CliRunner

from mmindex.connectors.base import CollectionOptions
from mmindex.connectors.qdrant_server import QdrantServerStore
from mmindex import IngestOptions, ingest, search
from mmindex.pipeline.cli import main

URL = os.environ.get("QDRANT_URL")
pytestmark = [pytest.mark.server,
              pytest.mark.skipif(not URL, reason="QDRANT_URL not set: no real Qdrant server to test against")]
KEY = os.environ.get("QDRANT_API_KEY")


@pytest.fixture
def name():
    collection = f"mmindex-test-{uuid.uuid4().hex[:10]}"
    yield collection
    store = QdrantServerStore(collection, url=URL, api_key=KEY)
    if store.exists():
        store.client.delete_collection(collection)
    store.close()


def test_ingest_then_query_on_a_real_server(name, sample_dir, encoder):
    options = CollectionOptions(quantization="int8", hnsw_m=8, shard_number=2)
    store = QdrantServerStore(name, url=URL, api_key=KEY, options=options, parallel_writes=4, bulk_load=True)
    summary = ingest([str(sample_dir)], store, encoder, IngestOptions(index_fields=["year", "color"], batch_size=16))
    assert (summary.upserted, summary.rejected) == (60, 0) and store.count() == 60
    config = store.client.get_collection(name).config
    assert config.hnsw_config.m == 8 and config.params.shard_number == 2
    assert config.quantization_config.scalar.type.value == "int8"
    assert config.optimizer_config.indexing_threshold != 0  # restored after the bulk load
    vector = encoder.encode_texts(["a red circle"])[0]
    hits = search(store, vector, target="text", where="year >= 2020 and color = red", limit=5)
    assert hits and all(h.payload["year"] >= 2020 and h.payload["color"] == "red" for h in hits)
    exact = search(store, vector, target="text", where="year >= 2020 and color = red", limit=5, exact=True)
    assert [h.id for h in exact][:1] == [h.id for h in hits][:1]
    again = ingest([str(sample_dir)], store, encoder)
    assert (again.unchanged, again.embedded) == (60, 0)
    store.close()


def test_cli_against_a_real_server(name, sample_dir, tiny_model):
    env = {"QDRANT_URL": URL, **({"QDRANT_API_KEY": KEY} if KEY else {})}
    result = CliRunner().invoke(main, ["ingest", str(sample_dir), "-c", name, "--model", tiny_model, "--device", "cpu",
                                       "--json", "-q"], env=env)
    assert result.exit_code == 0, result.output
    info = json.loads(CliRunner().invoke(main, ["info", "-c", name, "--json"], env=env).output)
    assert info["points"] == 60 and info["store"] == "qdrant-server"
