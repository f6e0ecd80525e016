"""Queries as a library call (pipeline/query/queries.py): what `mmindex query` checks, the Python API checks too."""
from __future__ import annotations

import pytest

from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.errors import InputError, StoreError, UsageError
from mmindex.pipeline.ingest.run import ingest
from mmindex.pipeline.query.queries import QueryRequest, run_queries
from mmindex.pipeline.query.search import search


@pytest.fixture(scope="module")
def store(tmp_path_factory, sample_dir, encoder):
    opened = QdrantEdgeStore("q", data_dir=tmp_path_factory.mktemp("queries"))
    assert ingest([str(sample_dir)], opened, encoder).upserted == 60
    yield opened
    opened.close()


@pytest.mark.parametrize("request_args, message", [
    (dict(texts=["a"], offset=-1), "offset must be"), (dict(texts=["a"], limit=0), "limit must be"),
    (dict(texts=["a"], limit=-1), "limit must be"), (dict(), "give a TEXT"), (dict(texts=[" "]), "is empty"),
    # empty once cleaned as every embedded text is (control characters as spaces, ends stripped)
    (dict(texts=["\u0000"]), "is empty"), (dict(texts=["\x07\x07"]), "is empty"), (dict(texts=["\u2028 \x85"]), "is empty"),
    (dict(like=["\x00"]), "is empty"), (dict(texts=["a"], unlike=["\x1f"]), "is empty"),
    (dict(texts=["a"], oversampling=float("nan")), "oversampling"), (dict(texts=["a"], oversampling=float("inf")), "oversampling"),
    (dict(texts=["a"], oversampling=0.5), "oversampling"),
])
def test_a_request_that_cannot_be_is_refused_as_the_cli_refuses_it(request_args, message):
    with pytest.raises(UsageError, match=message):
        QueryRequest(**request_args)


def test_search_refuses_a_page_before_the_first_rank(store, encoder):
    vector = encoder.encode_texts(["a red circle"])[0]
    for limit, offset in ((2, -5), (-1, 0), (0, 0)):
        with pytest.raises(UsageError):
            search(store, vector, limit=limit, offset=offset)


def test_one_text_as_a_plain_string_is_one_query(store):
    answers = run_queries(store, QueryRequest(texts="a red circle", limit=3))
    assert [query for query, _ in answers.answers] == [("text", "a red circle")]
    assert len(answers.answers[0][1]) == 3


@pytest.mark.parametrize("path", ["missing.jpg", "."])
def test_an_image_file_that_cannot_be_read_is_named(store, tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=f"{path}: cannot read the image file"):
        run_queries(store, QueryRequest(image_paths=[path]))


def test_a_missing_collection_is_named_with_where_it_was_looked_for(tmp_path):
    missing = QdrantEdgeStore("nothing", data_dir=tmp_path)
    try:
        with pytest.raises(StoreError, match=f"collection 'nothing' does not exist under {tmp_path}"):
            run_queries(missing, QueryRequest(texts=["x"]), place=f"under {tmp_path}")
    finally:
        missing.close()
