"""Fixtures of the classify tests: the session's sample ingested by the tiny model into a fresh collection of either
store (the embedded Qdrant Edge, or qdrant-client's in-memory server), and a labels file writer."""
from __future__ import annotations

import pytest

from mmindex import IngestOptions, ingest
from helpers.classify import open_store

@pytest.fixture(params=["edge", "memory"])
def kind(request):
    return request.param


@pytest.fixture
def collection(kind, tmp_path, encoder, sample_dir):
    """The 60-row sample in a fresh collection 'shapes' of the store ``kind``, ingested by the tiny model."""
    store = open_store(kind, "shapes", tmp_path)
    ingest([str(sample_dir)], store, encoder, IngestOptions(source_name="sample", pipelined=False))
    yield store
    store.close()


@pytest.fixture
def write_labels(tmp_path):
    def write(lines, name="labels.txt"):
        path = tmp_path / name
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    return write
