"""Fixtures of the service tests: one live `mmindex serve` over ingested sample rows."""
from __future__ import annotations

import threading
import time

import pytest

from mmindex.pipeline.ingest.sample import write_sample


@pytest.fixture(scope="session")
def live_site(tmp_path_factory, tiny_model):
    """One live `mmindex serve` over 48 ingested rows (path images, stored thumbnails)."""
    pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'mmindex[serve]')")
    from click.testing import CliRunner

    from mmindex.pipeline.cli import main
    from helpers.serving import start

    base = tmp_path_factory.mktemp("live")
    data = base / "data"
    write_sample(data, rows=48, seed=3, width=48, height=40, image_kind="path")
    result = CliRunner().invoke(main, ["ingest", str(data), "-c", "shapes", "--data-dir", str(base / "store"),
                                       "--model", tiny_model, "--device", "cpu", "--thumbnails", "64", "-q"])
    assert result.exit_code == 0, result.output
    served = start(base / "store", "shapes", tiny_model, "--image-root", str(data), log=base / "serve.log")
    yield served
    served.stop()


# -- in-process services over two collections of two models ------------------------------------------------------


@pytest.fixture(scope="session")
def second_model(tmp_path_factory):
    """Another tiny CLIP (other weights, same vector size): what a model upgrade moves an alias to."""
    from mmindex.pipeline.training.scratch import build_scratch_model

    texts = ["a red circle", "a blue square", "a green triangle", "a yellow star"]
    return build_scratch_model(tmp_path_factory.mktemp("models") / "clip-v2", size="tiny", texts=texts, seed=7)


@pytest.fixture(scope="session")
def two_collections(tmp_path_factory, tiny_model, second_model):
    """Collections v1 (tiny_model) and v2 (second_model) over the same 16 rows, each point's source named after its
    collection, and the alias photos → v1: (store folder, data folder)."""
    pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'mmindex[serve]')")
    from click.testing import CliRunner

    from mmindex.pipeline.cli import main

    base = tmp_path_factory.mktemp("two")
    data, store = base / "data", base / "store"
    write_sample(data, rows=16, seed=21, width=32, height=32)
    for name, model in (("v1", tiny_model), ("v2", second_model)):
        result = CliRunner().invoke(main, ["ingest", str(data), "-c", name, "--data-dir", str(store), "--model", model,
                                           "--source", name, "--device", "cpu", "--thumbnails", "32", "-q"])
        assert result.exit_code == 0, result.output
    assert CliRunner().invoke(main, ["alias", "set", "photos", "v1", "--data-dir", str(store)]).exit_code == 0
    return store, data


class InProcess:
    """A service run by uvicorn in a thread of this process, with the server settings `mmindex serve` uses."""

    def __init__(self, settings, max_connections: int = 256, header_timeout: float = 10.0, service=None):
        import uvicorn

        from helpers.serving import free_port
        from mmindex.pipeline.serve.app import create_app, server_config

        self.app = create_app(settings, service)
        self.service = self.app.state.service
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(server_config(self.app, "127.0.0.1", self.port, "warning", max_connections,
                                                   header_timeout))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the in-process server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def serve_in_process():
    """``start(settings, **server options)`` → a running ``InProcess`` service, stopped after the module."""
    started: list[InProcess] = []

    def start(settings, **options) -> InProcess:
        started.append(InProcess(settings, **options))
        return started[-1]

    yield start
    for served in started:
        served.stop()


@pytest.fixture(scope="module")
def app_client(two_collections):
    """The app in this process behind Starlette's test client (no sockets), serving v1 of ``two_collections``."""
    from fastapi.testclient import TestClient

    from mmindex.pipeline.config import StoreSettings
    from mmindex.pipeline.serve.app import create_app
    from mmindex.pipeline.serve.settings import ServeSettings

    store, _ = two_collections
    app = create_app(ServeSettings(store=StoreSettings(collection="v1", data_dir=str(store)), device="cpu"))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client
