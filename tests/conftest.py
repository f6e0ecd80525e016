"""Shared fixtures: a tiny real CLIP model and real sample Parquet, built once per session, and the fixtures
tests in more than one folder use (fixtures of one folder live in that folder's conftest.py).

Layout: tests/ mirrors the package (ingest/, models/, query/, collection/, serve/, training/, cli/,
connectors/); cross-cutting tests stay here. Library tests and CLI tests of the same behaviour are apart:
tests/collection/test_delete.py and tests/cli/test_delete.py. Plain helpers (no fixtures) are modules of
tests/helpers/, imported as ``from helpers.serving import start``.

How the modules are imported (pyproject.toml, [tool.pytest.ini_options]): ``--import-mode=importlib`` in
addopts, so test files in different folders may share a basename (collection/test_delete.py and
cli/test_delete.py) with no __init__.py anywhere and nothing of tests/ inserted into sys.path per file;
and ``pythonpath = ["tests"]``, which puts tests/ on sys.path once, so ``helpers`` is importable from any
folder (and from subprocesses started with the same sys.path). One consequence of importlib mode: a test
module cannot import another test module; what two test modules share goes in a conftest.py (fixtures) or
in tests/helpers/ (plain code).
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# ONNX exports and query bundles (pipeline/models/onnx_model.py, quick.py) of the test models: one folder per run.
os.environ["MMINDEX_CACHE"] = __import__("tempfile").mkdtemp(prefix="mmindex-test-cache-")

import pytest  # noqa: E402

from mmindex.pipeline.ingest.sample import write_sample  # noqa: E402
from helpers.hazards import write_hazards  # noqa: E402


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


@pytest.fixture(scope="session")
def hazards(tmp_path_factory):
    return write_hazards(tmp_path_factory.mktemp("hazards"))


@pytest.fixture
def poisoned(encoder, monkeypatch):
    """Every text with the token 'purple' makes the model raise (as a token id past the embedding table does)."""
    ids = encoder.text_backend.tokenizer("purple", add_special_tokens=False)["input_ids"]
    assert len(ids) == 1
    model_class = type(encoder.model)
    real = model_class.forward

    def forward(self, features, *args, **kwargs):
        tokens = features.get("input_ids")
        if tokens is not None and bool((tokens == ids[0]).any()):
            raise IndexError("index out of range in self")
        return real(self, features, *args, **kwargs)

    monkeypatch.setattr(model_class, "forward", forward)
    return encoder


@pytest.fixture(scope="session")
def train_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train")
    write_sample(folder, rows=320, seed=11, width=48, height=48, caption_style="mixed")
    return folder
