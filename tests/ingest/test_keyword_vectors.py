"""Ingest writes each point's keyword vector (caption + --text-fields), records the rule at the first write, keeps
it up to date on payload-only changes, and refuses fields other than the recorded ones — on both stores."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.keyword_data import create_old_style
from mmindex import IngestOptions, ingest
from mmindex.connectors.base import SearchRequest
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.qdrant_server import QdrantServerStore
from mmindex.connectors.queries import KEYWORDS, Nearest
from mmindex.errors import CollectionMismatchError, UsageError
from mmindex.pipeline.ingest.sample import write_sample
from mmindex.pipeline.query.keywords import SETTINGS_KEY, keyword_document, keyword_query, recorded_settings


@pytest.fixture(params=["edge", "memory"])
def store(request, tmp_path):
    made = (QdrantEdgeStore("kw", data_dir=tmp_path / "store") if request.param == "edge"
            else QdrantServerStore("kw", url=":memory:"))
    yield made
    made.close()


def write_rows(folder, titles, captions=None, makers=None):
    """Six sample rows with a ``title`` column (and a ``meta`` struct with a ``maker``), captions replaced if given."""
    write_sample(folder, rows=len(titles), seed=5, width=32, height=32)
    path = next(folder.glob("*.parquet"))
    table = pq.read_table(path)
    if captions is not None:
        table = table.set_column(table.schema.get_field_index("caption"), "caption", pa.array(captions, pa.string()))
    table = table.append_column("title", pa.array(titles, pa.string()))
    makers = makers or ["Okafor"] * len(titles)
    table = table.append_column("meta", pa.array([{"maker": m} for m in makers]))
    pq.write_table(table, path)
    return folder


def stored(store) -> dict:
    points, _ = store.scroll(limit=1000, with_vectors=True)
    return {p.id: p for p in points}


def check_vectors(store) -> dict:
    """Every point holds exactly the keyword vector its payload makes under the recorded rule (none without text)."""
    settings = recorded_settings(store.metadata())
    points = stored(store)
    for point in points.values():
        expected = keyword_document(point.payload.get("caption"), point.payload, settings.keys, settings)
        assert (point.vectors or {}).get(KEYWORDS) == expected, point.payload
    return points


TITLES = ["Okafor XJ-9000", "Sato bracket", None, "knurled hinge", "Novak ZT-1200", "the"]


def test_every_point_ingest_writes_carries_its_keyword_vector(tmp_path, encoder, store):
    data = write_rows(tmp_path / "d", TITLES, captions=["a red circle", None, None, "a blue star", "", "of the"])
    summary = ingest([str(data)], store, encoder, IngestOptions(text_fields=["title", "meta.maker"]))
    assert summary.upserted == 6
    assert store.metadata()[SETTINGS_KEY]["fields"] == ["title", "meta.maker"]
    points = check_vectors(store)
    assert sum(KEYWORDS in p.vectors for p in points.values()) == 6  # meta.maker gives every row text
    hits = store.search(SearchRequest(query=Nearest(keyword_query("XJ-9000", store.metadata()), KEYWORDS)))
    assert [h.payload["title"] for h in hits] == ["Okafor XJ-9000"]


def test_a_text_field_edited_in_place_updates_the_keyword_vector(tmp_path, encoder, store):
    captions = ["a red circle", None, None, "a blue star", "a cross", "a ring"]
    ingest([str(write_rows(tmp_path / "d", TITLES, captions))], store, encoder,
           IngestOptions(text_fields=["title"], source_name="s"))
    edited = ["Okafor XJ-9001", "Sato bracket", "Lindqvist gimbal", "knurled hinge", "Novak ZT-1200", "the"]
    edited[1] = None  # row 1: no caption, and now no title: its keyword vector goes
    second = ingest([str(write_rows(tmp_path / "d", edited, captions))], store, encoder,
                    IngestOptions(source_name="s"))  # the recorded fields
    assert (second.embedded, second.payload_updated) == (0, 3)
    points = check_vectors(store)
    assert sum(KEYWORDS in p.vectors for p in points.values()) == 5
    meta = store.metadata()
    found = store.search(SearchRequest(query=Nearest(keyword_query("gimbal XJ-9001", meta), KEYWORDS)))
    assert sorted(h.payload["title"] for h in found) == ["Lindqvist gimbal", "Okafor XJ-9001"]
    assert store.search(SearchRequest(query=Nearest(keyword_query("XJ-9000", meta), KEYWORDS), limit=1))[0] \
        .payload["title"] == "Okafor XJ-9001"  # only "xj" is left of it


def test_other_text_fields_are_refused_before_anything_is_written(tmp_path, encoder, store):
    data = write_rows(tmp_path / "d", TITLES)
    ingest([str(data)], store, encoder, IngestOptions(text_fields=["title"]))
    with pytest.raises(CollectionMismatchError, match="mmindex keywords -c kw --text-fields tags"):
        ingest([str(write_rows(tmp_path / "e", ["x"] * 6))], store, encoder, IngestOptions(text_fields=["tags"]))
    assert store.count() == 6 and store.metadata()[SETTINGS_KEY]["fields"] == ["title"]


@pytest.mark.parametrize("field, message", [("year", "'year' holds integer values, not text"),
                                            ("nope", "unknown field nope"), ("meta", "--text-fields")])
def test_a_text_field_that_is_not_text_is_refused_before_the_collection_is_made(tmp_path, encoder, store, field,
                                                                                 message):
    with pytest.raises(UsageError, match=message):
        ingest([str(write_rows(tmp_path / "d", TITLES))], store, encoder, IngestOptions(text_fields=[field]))
    assert not store.exists()


def test_a_collection_made_before_keyword_search_takes_no_keyword_vector(tmp_path, encoder, store):
    create_old_style(store, encoder.spec())
    data = write_rows(tmp_path / "d", TITLES)
    summary = ingest([str(data)], store, encoder)
    assert "sparse_vectors" not in store.metadata() and SETTINGS_KEY not in store.metadata()
    assert not any(KEYWORDS in (p.vectors or {}) for p in stored(store).values())
    assert any("mmindex keywords -c kw" in note for note in summary.notes)
    with pytest.raises(UsageError, match="made before keyword search.*mmindex keywords -c kw --text-fields title"):
        ingest([str(data)], store, encoder, IngestOptions(text_fields=["title"]))
