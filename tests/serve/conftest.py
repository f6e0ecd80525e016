"""Fixtures of the service tests: one live `mmindex serve` over ingested sample rows."""
from __future__ import annotations

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
