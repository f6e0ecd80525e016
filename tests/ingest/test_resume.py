"""Killed runs: SIGKILL at several points, then a rerun, ends with exactly the uninterrupted result;
SIGTERM/SIGINT stop gracefully with a summary that adds up."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import ROOT

from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.pipeline.ingest.records import point_id_from_key
from mmindex.pipeline.ingest.sample import write_sample

ROWS = 4000
PROGRESS = re.compile(rb"ingest: ([\d,]+)/" + f"{ROWS:,}".encode())  # a progress line (stderr is a pipe)


@pytest.fixture(scope="module")
def big_sample(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume-data")
    write_sample(folder, rows=ROWS, seed=11, files=4, width=48, height=40)
    return folder


class Run:
    """An ``mmindex ingest`` subprocess whose stderr (progress bar, messages) is watched."""

    def __init__(self, data, data_dir, model, *extra):
        args = [sys.executable, "-m", "mmindex", "ingest", str(data), "-c", "resume", "--data-dir",
                str(data_dir), "--model", model, "--device", "cpu", "--batch-size", "8", "--workers", "2",
                "--json", "--progress-interval", "0", *extra]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                        cwd=ROOT)
        self.stderr = b""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while True:
            chunk = os.read(self.process.stderr.fileno(), 4096)
            if not chunk:
                return
            self.stderr += chunk

    def progress(self) -> int:
        found = PROGRESS.findall(self.stderr)
        return int(found[-1].replace(b",", b"")) if found else 0

    def signal_when(self, condition, signum=signal.SIGKILL, timeout=120) -> bool:
        """Send ``signum`` once ``condition(self)`` holds; False if the run ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if condition(self):
                self.process.send_signal(signum)
                return True
            time.sleep(0.01)
        raise AssertionError(f"condition not reached in {timeout}s; stderr: {self.stderr[-2000:]!r}")

    def finish(self, timeout=180) -> tuple[int, str]:
        # Not communicate(): it would read stderr too, racing the reader thread for its chunks.
        out = self.process.stdout.read()
        self.process.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return self.process.returncode, out.decode()


def points_of(data_dir, ids):
    store = QdrantEdgeStore("resume", data_dir=data_dir)
    try:
        points = {p.id: p for p in store.retrieve(ids, with_vectors=True)}
        return store.count(), points
    finally:
        store.close()


def test_sigkill_at_several_points_then_rerun_equals_an_uninterrupted_run(tmp_path, tiny_model, big_sample):
    reference = Run(big_sample, tmp_path / "reference", tiny_model)
    code, out = reference.finish()
    assert code == 0, reference.stderr[-2000:]

    killed_dir = tmp_path / "killed"
    kills = []
    for point in (400, 1800):
        run = Run(big_sample, killed_dir, tiny_model)
        kills.append(run.signal_when(lambda r, p=point: r.progress() >= p))
        code, _ = run.finish()
        assert code == -signal.SIGKILL
    # Once more while the index is being built at the end.
    run = Run(big_sample, killed_dir, tiny_model)
    during_optimize = run.signal_when(lambda r: b"building the vector index" in r.stderr)
    run.finish()
    assert kills == [True, True], "the runs ended before they could be killed mid-way"

    final = Run(big_sample, killed_dir, tiny_model)
    code, out = final.finish()
    assert code == 0, final.stderr[-2000:]
    summary = json.loads(out)
    assert summary["adds_up"] and summary["read"] == ROWS
    if not during_optimize:
        assert summary["unchanged"] == ROWS  # the third run completed
    else:
        assert summary["embedded"] < ROWS - 400  # resumed, not started from zero

    keys = [k for f in sorted(big_sample.glob("*.parquet")) for k in pq.read_table(f, columns=["id"])["id"].to_pylist()]
    ids = [point_id_from_key(k) for k in keys]
    count_ref, ref = points_of(tmp_path / "reference", ids)
    count_killed, got = points_of(killed_dir, ids)
    assert count_ref == count_killed == ROWS  # nothing missing, nothing twice
    assert set(ref) == set(got) == set(ids)
    for point_id in ids:
        assert got[point_id].payload == ref[point_id].payload
        for name in ("image", "text"):
            np.testing.assert_allclose(got[point_id].vectors[name], ref[point_id].vectors[name], atol=1e-5)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_finish_in_flight_work_and_exit_non_zero(tmp_path, tiny_model, big_sample, signum, code):
    run = Run(big_sample, tmp_path / "store", tiny_model, "--report", str(tmp_path / "run.json"))
    assert run.signal_when(lambda r: r.progress() >= 800, signum)
    sent = time.monotonic()
    returncode, out = run.finish(timeout=60)
    assert time.monotonic() - sent < 15
    assert returncode == code, run.stderr[-2000:]
    summary = json.loads(out)
    assert summary["status"] == "interrupted" and summary["adds_up"]
    assert 800 <= summary["upserted"] < ROWS
    assert summary["read"] == summary["upserted"] + summary["not_processed"]
    assert b"finishing the batches in flight" in run.stderr
    assert json.loads((tmp_path / "run.json").read_text())["exit_code"] == code

    again = Run(big_sample, tmp_path / "store", tiny_model)
    returncode, out = again.finish()
    resumed = json.loads(out)
    assert returncode == 0 and resumed["unchanged"] == summary["upserted"]
    assert resumed["upserted"] == ROWS - summary["upserted"]
