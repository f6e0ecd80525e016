"""Shared fixtures: a tiny real CLIP model and real sample Parquet, built once per session."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# ONNX exports and query bundles (pipeline/models/onnx_model.py, quick.py) of the test models: one folder per run.
os.environ["MMINDEX_CACHE"] = __import__("tempfile").mkdtemp(prefix="mmindex-test-cache-")

import pytest  # noqa: E402

from mmindex.pipeline.ingest.sample import write_sample  # noqa: E402


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory):
    """60 rows over two files, images as raw bytes."""
    folder = tmp_path_factory.mktemp("sample-bytes")
    write_sample(folder, rows=60, seed=1, files=2, width=64, height=48)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, sample_dir):
    """A tiny untrained CLIP (random weights) saved as a sentence-transformers folder."""
    from mmindex.pipeline.training.scratch import build_scratch_model
    from mmindex.pipeline.ingest.source import open_source

    source = open_source([str(sample_dir)])
    texts = [t for b in source.batches(1000) for t in b.batch.column(2).to_pylist()]
    folder = tmp_path_factory.mktemp("models") / "tiny-clip"
    return build_scratch_model(folder, size="tiny", texts=texts)


@pytest.fixture(scope="session")
def encoder(tiny_model):
    from mmindex.pipeline.models.encoder import Encoder

    return Encoder(tiny_model, device="cpu", batch_size=16)


@pytest.fixture(scope="session")
def live_site(tmp_path_factory, tiny_model):
    """One live `mmindex serve` over 48 ingested rows (path images, stored thumbnails)."""
    pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'mmindex[serve]')")
    from click.testing import CliRunner

    from mmindex.pipeline.cli import main
    from serving import start

    base = tmp_path_factory.mktemp("live")
    data = base / "data"
    write_sample(data, rows=48, seed=3, width=48, height=40, image_kind="path")
    result = CliRunner().invoke(main, ["ingest", str(data), "-c", "shapes", "--data-dir", str(base / "store"),
                                       "--model", tiny_model, "--device", "cpu", "--thumbnails", "64", "-q"])
    assert result.exit_code == 0, result.output
    served = start(base / "store", "shapes", tiny_model, "--image-root", str(data), log=base / "serve.log")
    yield served
    served.stop()


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """Run the `mmindex` CLI in-process, in a fresh working folder, with no server configured.

    Arguments may be paths; an uncaught exception fails the test (it would be a traceback).
    """
    from click.testing import CliRunner

    from mmindex.pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    for name in ("QDRANT_URL", "QDRANT_API_KEY", "MMINDEX_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
