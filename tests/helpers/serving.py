"""A live `mmindex serve` on a free loopback port, for the API, schema and browser tests."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from helpers import ROOT  # noqa: E402



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    url: str
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start(data_dir: Path, collection: str, model: str | None, *extra: str, log: Path) -> Served:
    """``model`` None: the service loads the model the collection records."""
    port = free_port()
    args = [sys.executable, "-m", "mmindex", "serve", "-c", collection, "--data-dir", str(data_dir),
            *(["--model", model] if model else []), "--device", "cpu", "--port", str(port),
            "--log-level", "warning", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    handle = open(log, "w")
    process = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mmindex serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return Served(url, process, log)
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"mmindex serve did not start in 90 s: {log.read_text()[-2000:]}")


def ingest_sample(base: Path, model: str, collections: tuple[str, ...] = ("shapes",), rows: int = 48,
                  seed: int = 3, width: int = 48, height: int = 40, image_kind: str = "path",
                  thumbnails: int = 64) -> tuple[Path, Path]:
    """Sample Parquet under ``base/data``, ingested into each collection under ``base/store``."""
    from click.testing import CliRunner

    from mmindex.pipeline.cli import main
    from mmindex.pipeline.ingest.sample import write_sample

    data, store = base / "data", base / "store"
    write_sample(data, rows=rows, seed=seed, width=width, height=height, image_kind=image_kind)
    for name in collections:
        result = CliRunner().invoke(main, ["ingest", str(data), "-c", name, "--data-dir", str(store), "--model",
                                           model, "--device", "cpu", "--thumbnails", str(thumbnails), "-q"])
        assert result.exit_code == 0, result.output
    return data, store
