"""Faults as the CLI reports them: an unreachable server is one clear line; a full disk stops the
embedded store cleanly, and the same command goes on once there is space."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
from click.testing import CliRunner

from mmindex.pipeline.cli import main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_against_an_unreachable_server_is_one_clear_line(sample_dir, tiny_model):
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(main, ["ingest", str(sample_dir), "--url", url, "--model", tiny_model, "--retries",
                                       "2", "--retry-wait", "0", "-q"])
    assert result.exit_code == 1
    assert "failed after 3 attempts" in result.output and "ConnectError" in result.output
    assert "Traceback" not in result.output


def _can_mount() -> str | None:
    if not shutil.which("unshare") or not shutil.which("mount"):
        return "needs unshare and mount (util-linux)"
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt 2>&1"],
                           capture_output=True, text=True)
    return None if probe.returncode == 0 else f"cannot mount a small tmpfs here: {probe.stdout.strip()[:80]}"


def test_a_full_disk_stops_the_embedded_store_cleanly_and_it_stays_loadable(tmp_path, tiny_model):
    reason = _can_mount()
    if reason:
        pytest.skip(reason)
    from mmindex.pipeline.ingest.sample import write_sample

    data = tmp_path / "data"
    write_sample(data, rows=2000, seed=5, files=2, width=32, height=32)
    mount = tmp_path / "small"
    mount.mkdir()
    # Inside a private mount namespace: a 103 MiB tmpfs leaves 3 MiB above the 100 MiB the store keeps
    # free, so it fills part-way. Everything the checks need is copied out before the namespace ends.
    script = f"""
set -u
mount -t tmpfs -o size=103m tmpfs {mount}
cd {os.getcwd()}
{sys.executable} -m mmindex ingest {data} -c full --data-dir {mount}/store --model {tiny_model} \
    --device cpu --batch-size 4 --no-rejects --json -q > {tmp_path}/first.json 2> {tmp_path}/first.err
echo $? > {tmp_path}/first.rc
{sys.executable} -m mmindex info -c full --data-dir {mount}/store --json > {tmp_path}/info.json 2>&1
cp -r {mount}/store {tmp_path}/copied
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run(["unshare", "-rm", "sh", "-c", script], check=True, env=env, timeout=300)
    assert (tmp_path / "first.rc").read_text().strip() == "1", (tmp_path / "first.err").read_text()
    error = (tmp_path / "first.err").read_text()
    assert "the disk is nearly full" in error and "what was written is kept" in error
    summary = json.loads((tmp_path / "first.json").read_text())
    info = json.loads((tmp_path / "info.json").read_text())
    assert summary["status"] == "failed" and summary["adds_up"]
    assert 0 < summary["upserted"] < 2000
    assert info["points"] == summary["upserted"]
    # With space again, the same command goes on from there.
    result = CliRunner().invoke(main, ["ingest", str(data), "-c", "full", "--data-dir", str(tmp_path / "copied"),
                                       "--model", tiny_model, "--device", "cpu", "--json", "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["unchanged"] == summary["upserted"]
