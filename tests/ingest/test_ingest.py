"""The ingest job end to end, with a real tiny CLIP, real Parquet and real stores."""
from __future__ import annotations

import json
import os
import stat

import pyarrow.parquet as pq
import pytest

from mmindex import IngestOptions, ingest, search
from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.qdrant_server import QdrantServerStore
from mmindex.errors import CollectionMismatchError, InputError
from mmindex.pipeline.ingest.images import decode_image
from mmindex.pipeline.ingest.sample import write_sample


@pytest.fixture(params=["edge", "memory"])
def store(request, tmp_path):
    made = (QdrantEdgeStore("photos", data_dir=tmp_path / "store") if request.param == "edge"
            else QdrantServerStore("photos", url=":memory:"))
    yield made
    made.close()


def rows_of(folder):
    return [row for path in sorted(folder.glob("*.parquet")) for row in pq.read_table(path).to_pylist()]


@pytest.mark.parametrize("kind", ["bytes", "struct", "path"])
def test_each_image_column_kind_is_ingested(tmp_path, encoder, kind):
    data = tmp_path / kind
    write_sample(data, rows=12, seed=3, width=40, height=40, image_kind=kind, image_format="png")
    store = QdrantEdgeStore("k", data_dir=tmp_path / "store")
    summary = ingest([str(data)], store, encoder, IngestOptions(batch_size=5))
    assert (summary.read, summary.upserted, summary.rejected) == (12, 12, 0)
    assert store.count() == 12
    first = rows_of(data)[0]
    hit = store.search(__import__("mmindex.connectors", fromlist=["SearchRequest"]).SearchRequest(
        vector=encoder.encode_texts([first["caption"]])[0], using="text", limit=1))[0]
    assert hit.payload["_source"]["file"].endswith("part-00000.parquet")
    assert "image" not in hit.payload  # never the image bytes
    if kind == "path":
        assert hit.payload["_source"]["path"].startswith("images/")
    store.close()


def test_second_ingest_changes_nothing(sample_dir, encoder, store):
    first = ingest([str(sample_dir)], store, encoder)
    assert (first.read, first.embedded, first.upserted, first.unchanged) == (60, 60, 60, 0)
    assert first.adds_up()
    second = ingest([str(sample_dir)], store, encoder)
    assert (second.read, second.embedded, second.upserted, second.unchanged) == (60, 0, 0, 60)
    assert store.count() == 60


def test_changed_caption_is_re_embedded(tmp_path, encoder, store):
    data = tmp_path / "d"
    write_sample(data, rows=6, seed=4, width=32, height=32)
    ingest([str(data)], store, encoder)
    table = pq.read_table(data / "part-00000.parquet").to_pylist()
    table[2]["caption"] = "a completely new caption"
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(table, schema=pq.read_schema(data / "part-00000.parquet")),
                   data / "part-00000.parquet")
    again = ingest([str(data)], store, encoder)
    assert (again.embedded, again.unchanged, store.count()) == (1, 5, 6)


def test_image_query_finds_its_own_row_first(sample_dir, encoder, store):
    ingest([str(sample_dir)], store, encoder)
    rows = rows_of(sample_dir)
    for row in rows[:5]:
        vector = encoder.encode_images([decode_image(row["image"], encoder.image_size)])[0]
        hits = search(store, vector, target="image", limit=3)
        assert hits[0].payload["id"] == row["id"]
        assert hits[0].score == pytest.approx(1.0, abs=1e-3)


def test_caption_query_on_text_vectors_finds_its_row_first(sample_dir, encoder, store):
    ingest([str(sample_dir)], store, encoder)
    rows = rows_of(sample_dir)
    counts = {}
    for row in rows:
        counts[row["caption"]] = counts.get(row["caption"], 0) + 1
    unique = [row for row in rows if counts[row["caption"]] == 1][:5]
    assert unique
    for row in unique:
        hits = search(store, encoder.encode_texts([row["caption"]])[0], target="text", limit=3)
        assert hits[0].payload["id"] == row["id"] and hits[0].caption == row["caption"]


def test_where_filters_apply_to_search(sample_dir, encoder, store):
    ingest([str(sample_dir)], store, encoder, IngestOptions(index_fields=["year", "color", "created"]))
    rows = rows_of(sample_dir)
    vector = encoder.encode_texts(["a red circle"])[0]
    hits = search(store, vector, where="year >= 2020 and color in ('red', 'blue')", limit=100)
    expected = {r["id"] for r in rows if r["year"] >= 2020 and r["color"] in ("red", "blue")}
    assert {h.payload["id"] for h in hits} == expected
    hits = search(store, vector, where="created < '2018-01-01'", limit=100)
    assert {h.payload["id"] for h in hits} == {r["id"] for r in rows if r["created"].year < 2018}


def test_other_model_is_refused_before_any_write(tmp_path, sample_dir, encoder, store):
    from mmindex.pipeline.models.encoder import Encoder
    from mmindex.pipeline.training.scratch import build_scratch_model

    ingest([str(sample_dir)], store, encoder)
    other = Encoder(build_scratch_model(tmp_path / "other", size="tiny", seed=7), device="cpu")
    extra = tmp_path / "extra"
    write_sample(extra, rows=5, seed=99, start_index=10_000)
    with pytest.raises(CollectionMismatchError, match="tiny-clip.*other"):
        ingest([str(extra)], store, other)
    assert store.count() == 60


def test_rows_without_an_id_column_get_content_ids(tmp_path, encoder, store):
    data = tmp_path / "noid"
    write_sample(data, rows=8, seed=5, width=32, height=32)
    summary = ingest([str(data)], store, encoder, IngestOptions(payload_cols=["color", "year"]))
    assert summary.upserted == 8
    again = ingest([str(data)], store, encoder, IngestOptions(payload_cols=["color", "year"]))
    assert again.unchanged == 8 and store.count() == 8


def test_bad_images_are_rejected_and_counted(tmp_path, encoder, store):
    import pyarrow as pa

    good = write_sample(tmp_path / "g", rows=3, seed=6, width=32, height=32)[0]
    rows = pq.read_table(good).to_pylist()
    rows[0]["image"] = b""
    rows[1]["image"] = b"<html>oops</html>"
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(good)), path)
    rejects = tmp_path / "rejects.parquet"
    summary = ingest([str(path)], store, encoder, IngestOptions(rejects_path=str(rejects)))
    assert (summary.read, summary.upserted, summary.rejected) == (3, 1, 2) and summary.adds_up()
    table = pq.read_table(rejects).to_pylist()
    assert [(r["row"], r["stage"]) for r in table] == [(0, "decode"), (1, "decode")]
    assert "0 bytes" in table[0]["reason"] and table[0]["id"] == rows[0]["id"]


def test_unknown_index_field_is_an_input_error(sample_dir, encoder, store):
    with pytest.raises(InputError, match="--index-fields 'nope'"):
        ingest([str(sample_dir)], store, encoder, IngestOptions(index_fields=["nope"]))


def test_relative_image_paths_resolve_through_the_uri_filesystem(tmp_path, encoder, store):
    data = tmp_path / "uri"
    write_sample(data, rows=4, seed=8, width=32, height=32, image_kind="path")
    summary = ingest([f"file://{data}"], store, encoder)
    assert (summary.upserted, summary.rejected) == (4, 0)


def test_rerun_embeds_nothing_and_a_changed_caption_embeds_exactly_its_row(tmp_path, encoder, monkeypatch):
    import pyarrow as pa

    data = tmp_path / "d"
    write_sample(data, rows=20, seed=8, width=32, height=32)
    store = QdrantEdgeStore("count", data_dir=tmp_path / "store")
    embedded = []  # (modality, rows) per forward pass
    real_forward = encoder.forward

    def counting(features):
        vectors = real_forward(features)
        embedded.append((features.get("modality", "?"), len(vectors)))
        return vectors

    monkeypatch.setattr(encoder, "forward", counting)
    rows = lambda: {m: sum(n for mod, n in embedded if mod == m) for m in ("image", "text")}  # noqa: E731
    ingest([str(data)], store, encoder, IngestOptions(batch_size=8))
    assert rows() == {"image": 20, "text": 20}

    embedded.clear()
    again = ingest([str(data)], store, encoder, IngestOptions(batch_size=8))
    assert embedded == [] and (again.unchanged, again.embedded) == (20, 0)

    path = data / "part-00000.parquet"
    table = pq.read_table(path).to_pylist()
    table[13]["caption"] = "a caption nobody has seen"
    pq.write_table(pa.Table.from_pylist(table, schema=pq.read_schema(path)), path)
    embedded.clear()
    changed = ingest([str(data)], store, encoder, IngestOptions(batch_size=8))
    assert rows() == {"image": 1, "text": 1}
    assert (changed.embedded, changed.unchanged) == (1, 19)
    store.close()


def test_report_and_rejects_go_through_links_and_pipes_never_replace_them(tmp_path):
    """A symlink stays a link (its target is replaced); a named pipe is written into, not replaced."""
    import threading

    from mmindex import IngestSummary
    from mmindex.pipeline.ingest.images import Rejection
    from mmindex.pipeline.ingest.summary import write_rejects, write_report

    summary = IngestSummary(collection="c", read=1, rejected=1)
    real = tmp_path / "reports" / "run.json"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "latest.json"
    link.symlink_to(real)
    write_report(summary, str(link))
    assert link.is_symlink() and json.loads(real.read_text())["collection"] == "c"

    rejects_target = tmp_path / "rejects-target.parquet"
    rejects_link = tmp_path / "rejects.parquet"
    rejects_link.symlink_to(rejects_target)  # dangling until the first write
    write_rejects([Rejection("f.parquet", 3, "k", "read", "bad")], str(rejects_link))
    assert rejects_link.is_symlink() and rejects_target.is_file()

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = {}
    reader = threading.Thread(target=lambda: received.setdefault("text", fifo.read_text()))
    reader.start()
    write_report(summary, str(fifo))
    reader.join(timeout=10)
    assert json.loads(received["text"])["collection"] == "c"
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # still a pipe

    with pytest.raises(InputError, match="is a folder"):
        write_report(summary, str(tmp_path))


def test_a_refused_run_keeps_the_last_runs_rejects_file(tmp_path, encoder, sample_dir):
    rejects = tmp_path / "rejects.parquet"
    rejects.write_bytes(b"the last run's rejects")
    store = QdrantEdgeStore("refused", data_dir=tmp_path / "store")
    store.ensure_collection(__import__("mmindex.connectors", fromlist=["CollectionSpec"]).CollectionSpec("other", 3))
    with pytest.raises(CollectionMismatchError):
        ingest([str(sample_dir)], store, encoder, IngestOptions(rejects_path=str(rejects)))
    store.close()
    assert rejects.read_bytes() == b"the last run's rejects"
