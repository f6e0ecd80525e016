"""The pipelined ingest: same points as the single-threaded reference, bounded, fault-aware."""
from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.connectors.queries import SparseVector
from mmindex.errors import StoreError
from mmindex.pipeline.ingest.options import IngestOptions
from mmindex.pipeline.ingest.run import ingest
from mmindex.pipeline.ingest.sample import write_sample
from mmindex.pipeline.ingest.stages import Embedded, Job, Pipeline


@pytest.fixture(scope="module")
def messy_dir(tmp_path_factory):
    """Three files; a few broken images, captionless rows and a repeated id among good rows."""
    folder = tmp_path_factory.mktemp("messy")
    paths = write_sample(folder, rows=75, seed=21, files=3, width=48, height=40)
    rows = pq.read_table(paths[1]).to_pylist()
    schema = pq.read_schema(paths[1])
    rows[0]["image"] = b"\x89PNG broken"
    rows[3]["caption"] = None
    rows[4]["caption"] = ""
    rows[7]["id"] = rows[2]["id"]  # duplicate id: the later row wins
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), paths[1])
    return folder


def dump(store):
    points = {}
    for record in store.retrieve(all_ids(store), with_vectors=True):
        points[record.id] = record
    return points


def all_ids(store):
    from qdrant_edge import ScrollRequest

    records, _ = store._open().scroll(ScrollRequest(limit=10_000, with_payload=False))
    return [str(r.id) for r in records]


def run(folder, encoder, tmp_path, name, **options):
    store = QdrantEdgeStore(name, data_dir=tmp_path)
    summary = ingest([str(folder)], store, encoder, IngestOptions(**options))
    return store, summary


def assert_same_points(a, b):
    left, right = dump(a), dump(b)
    assert left.keys() == right.keys()
    for point_id, point in left.items():
        other = right[point_id]
        assert point.payload == other.payload
        assert point.vectors.keys() == other.vectors.keys()
        for name in point.vectors:
            if isinstance(point.vectors[name], SparseVector):  # the keyword vector: the same tokens and weights
                assert point.vectors[name] == other.vectors[name]
                continue
            np.testing.assert_allclose(point.vectors[name], other.vectors[name], atol=2e-5)


def test_pipelined_equals_the_single_threaded_reference(tmp_path, messy_dir, encoder):
    reference, ref_summary = run(messy_dir, encoder, tmp_path, "ref", pipelined=False, batch_size=9)
    piped, piped_summary = run(messy_dir, encoder, tmp_path, "piped", workers=3, batch_size=7)
    for field in ("read", "embedded", "upserted", "unchanged", "rejected", "duplicate_ids"):
        assert getattr(ref_summary, field) == getattr(piped_summary, field), field
    assert (piped_summary.read, piped_summary.rejected, piped_summary.duplicate_ids) == (75, 1, 1)
    assert piped_summary.adds_up()
    assert_same_points(reference, piped)
    by_id = dump(piped)
    assert sum("text" not in p.vectors for p in by_id.values()) == 2  # the captionless rows
    reference.close(), piped.close()


def test_several_model_replicas_write_the_same_points(tmp_path, messy_dir, encoder):
    reference, _ = run(messy_dir, encoder, tmp_path, "ref", pipelined=False)
    replicas, summary = run(messy_dir, encoder, tmp_path, "two", workers=2, batch_size=5, devices=["cpu", "cpu"])
    assert summary.upserted == 74
    assert_same_points(reference, replicas)
    reference.close(), replicas.close()


def test_out_of_memory_halves_the_batch_and_retries(encoder, monkeypatch):
    texts = [f"caption number {i}" for i in range(16)]
    expected = encoder.forward(encoder.preprocess(texts))
    real_forward = type(encoder)._forward
    sizes = []

    def forward_with_small_memory(self, features):
        size = features["input_ids"].shape[0]
        sizes.append(size)
        if size > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(self, features)

    monkeypatch.setattr(type(encoder), "_forward", forward_with_small_memory)
    monkeypatch.setattr(encoder, "max_forward", None)
    monkeypatch.setattr(encoder, "oom_retries", 0)
    got = encoder.forward(encoder.preprocess(texts))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert encoder.max_forward == 4 and encoder.oom_retries == 2
    assert sizes[:3] == [16, 8, 4] and max(sizes[3:]) == 4
    # Later batches start at the size that fitted.
    sizes.clear()
    encoder.forward(encoder.preprocess(texts[:12]))
    assert sizes == [4, 4, 4]


def test_out_of_memory_on_a_single_row_is_raised(encoder, monkeypatch):
    def always_out_of_memory(self, features):
        raise torch.OutOfMemoryError("simulated")

    monkeypatch.setattr(type(encoder), "_forward", always_out_of_memory)
    monkeypatch.setattr(encoder, "max_forward", None)
    with pytest.raises(torch.OutOfMemoryError):
        encoder.forward(encoder.preprocess(["a", "b"]))
    encoder.max_forward = None


def test_queues_are_bounded_when_the_writer_stalls(encoder):
    release = threading.Event()
    written = []

    def slow_write(embedded: Embedded):
        release.wait(timeout=30)
        written.append(embedded.seq)

    pipeline = Pipeline([encoder], workers=2, write=slow_write, max_pixels=10**8)
    submitted = []

    def feed():
        for seq in range(40):
            pipeline.submit(Job(seq, [], 1))
            submitted.append(seq)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    time.sleep(1.0)
    # Held back: the embed queue, one job in each model thread, the write queue, one in the writer.
    bound = pipeline.depth + len(pipeline.encoders) + pipeline.write_queue.maxsize + 1
    assert len(submitted) <= bound < 40
    release.set()
    feeder.join(timeout=30)
    pipeline.close()
    assert written == list(range(40))
    assert pipeline.high_water["embed"] <= pipeline.depth


def test_a_failing_store_stops_the_run_with_its_error(tmp_path, messy_dir, encoder, monkeypatch):
    store = QdrantEdgeStore("broken", data_dir=tmp_path)
    calls = []

    def failing_upsert(points):
        calls.append(len(points))
        if len(calls) == 2:
            raise StoreError("disk full (simulated)")

    monkeypatch.setattr(store, "upsert", failing_upsert)
    started = time.monotonic()
    with pytest.raises(StoreError, match="disk full"):
        ingest([str(messy_dir)], store, encoder, IngestOptions(workers=2, batch_size=5))
    assert time.monotonic() - started < 30 and len(calls) == 2
    store.close()


def test_text_preprocessing_is_safe_from_many_threads(encoder):
    """A fast tokenizer's truncation/padding state is shared: concurrent calls must not mix batches."""
    import threading

    texts = [("word " * n).strip() for n in (1, 3, 40, 7, 90, 2, 15, 60)]
    errors = []

    def work():
        try:
            for i in range(60):
                batch = texts[i % 4:] + texts[: i % 4]
                features = encoder.preprocess(batch)
                assert features["input_ids"].shape[0] == len(batch)
                encoder.captions_too_long(texts[i % 3:])
        except Exception as error:  # noqa: BLE001 - collected for the assertion below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert encoder.captions_too_long(["word " * 200, "a red circle", "é" * 10]) == [True, False, False]


@pytest.mark.parametrize("pipelined", [True, False], ids=["pipeline", "reference"])
def test_a_poison_row_is_isolated_and_rejected_at_stage_embed(tmp_path, encoder, monkeypatch, pipelined):
    """A forward pass that raises on one row (here: any uniform image) is split down to that row;
    the run writes every other row and rejects that one with stage `embed`, on every run."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from mmindex import IngestOptions, ingest
    from mmindex.connectors.qdrant_edge import QdrantEdgeStore
    from mmindex.pipeline.ingest.sample import write_sample

    data = tmp_path / "d"
    write_sample(data, rows=20, seed=9, width=32, height=32)
    path = data / "part-00000.parquet"
    rows = pq.read_table(path).to_pylist()
    gray = io.BytesIO()
    Image.new("RGB", (32, 32), (128, 128, 128)).save(gray, format="PNG")
    rows[5]["image"] = gray.getvalue()
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), path)
    model_class = type(encoder.model)
    real = model_class.forward

    def poisoned(self, features, *args, **kwargs):
        pixels = features.get("pixel_values")
        if pixels is not None and bool((pixels.flatten(2).std(dim=2) < 1e-6).all(dim=1).any()):
            raise RuntimeError("a poison row")
        return real(self, features, *args, **kwargs)

    monkeypatch.setattr(model_class, "forward", poisoned)
    for run in range(2):
        store = QdrantEdgeStore("p", data_dir=tmp_path / "store")
        summary = ingest([str(data)], store, encoder, IngestOptions(batch_size=8, workers=1, optimize=False,
                                                                    pipelined=pipelined))
        assert (summary.read, summary.rejected) == (20, 1) and summary.adds_up()
        rejection = summary.rejections[0]
        assert (rejection.row, rejection.stage) == (5, "embed") and "a poison row" in rejection.reason
        assert store.count() == 19
        assert summary.upserted == (19 if run == 0 else 0) and summary.unchanged == (0 if run == 0 else 19)
        store.close()


@pytest.mark.parametrize("pipelined", [True, False], ids=["pipeline", "reference"])
def test_a_caption_that_fails_by_its_length_takes_no_batch_mate_with_it(tmp_path, encoder, monkeypatch, pipelined):
    """A forward pass that fails on one long caption: its batch-mates are tokenized again without it (a slice of
    the padded batch would keep the long caption's length and fail too), so only that row is rejected."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmindex import IngestOptions, ingest
    from mmindex.connectors.qdrant_edge import QdrantEdgeStore
    from mmindex.pipeline.ingest.sample import write_sample

    data = tmp_path / "d"
    write_sample(data, rows=16, seed=4, width=32, height=32)
    path = data / "part-00000.parquet"
    rows = pq.read_table(path).to_pylist()
    others = max(encoder.text_backend.token_counts([r["caption"] for r in rows]))
    words = 1
    while encoder.text_backend.token_counts([" ".join(["red"] * words)])[0] <= others:
        words += 1
    rows[3]["caption"] = " ".join(["red"] * words)  # the longest caption, and within the model's limit
    assert encoder.text_backend.token_counts([rows[3]["caption"]])[0] <= encoder.max_text_tokens
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), path)
    model_class = type(encoder.model)
    real = model_class.forward

    def fails_on_long_batches(self, features, *args, **kwargs):
        ids = features.get("input_ids")
        if ids is not None and ids.shape[1] > others:
            raise RuntimeError("sequence too long for this kernel")
        return real(self, features, *args, **kwargs)

    monkeypatch.setattr(model_class, "forward", fails_on_long_batches)
    store = QdrantEdgeStore("p", data_dir=tmp_path / "store")
    summary = ingest([str(data)], store, encoder, IngestOptions(batch_size=8, workers=1, optimize=False,
                                                                pipelined=pipelined))
    assert (summary.read, summary.rejected) == (16, 1) and summary.adds_up()
    assert summary.rejections[0].row == 3 and summary.rejections[0].stage == "embed"
    assert store.count() == 15
    store.close()
