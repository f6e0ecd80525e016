"""kill -9 at random (seeded) moments of `ingest --sync` (its delete phase above all), `copy` and `alias set`, each
run as `python -m mmindex.pipeline.cli …`: after running the same command again, the end state equals an uninterrupted
run's (ids, payloads; for a copy the vectors and the record too). Slow (a few dozen subprocesses); the fast variants
crash in-process at every step boundary (tests/ingest/test_sync_guard.py, tests/collection/test_copy.py)."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import ROOT
from helpers.copying import SPEC, assert_same_points, assert_same_record, expected, photos_collection, sample_points
from helpers.stores import stored_payloads

from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.pipeline.ingest.sample import write_sample

pytestmark = pytest.mark.slow

# Loaded by every Python started with this folder on PYTHONPATH: slows the steps a kill should land in, so that
# random moments fall inside them. The command itself is the real one.
HOOK = '''
import os, sys, time
slow = float(os.environ.get("KILL9_SLOW", "0"))
if slow:
    from mmindex.connectors.qdrant_edge import QdrantEdgeStore
    import mmindex.pipeline.ingest.sync as sync
    sync.DELETE_BATCH = 2

    def slowed(name):
        real = getattr(QdrantEdgeStore, name)

        def step(self, *args, **kwargs):
            print("STEP", name, file=sys.stderr, flush=True)
            time.sleep(slow)
            return real(self, *args, **kwargs)

        setattr(QdrantEdgeStore, name, step)

    for name in ("delete", "upsert", "finish", "_save_aliases"):
        slowed(name)
'''


@pytest.fixture
def hook(tmp_path):
    folder = tmp_path / "hook"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(HOOK)
    return folder


class Command:
    """``python -m mmindex.pipeline.cli ARGS`` as a subprocess, its stderr read as it comes."""

    def __init__(self, args, hook, slow=0.0):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
               "KILL9_SLOW": str(slow)}
        self.started = time.monotonic()
        self.process = subprocess.Popen([sys.executable, "-m", "mmindex.pipeline.cli", *map(str, args)], cwd=ROOT,
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.stderr = b""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in iter(self.process.stderr.readline, b""):
            self.stderr += line

    def wait(self, timeout=300):
        code = self.process.wait(timeout)
        self.reader.join(5)
        return code, self.process.stdout.read().decode()

    def kill_at(self, seconds, after=b""):
        """SIGKILL ``seconds`` after ``after`` shows on stderr (after the start when empty); False if it ended first."""
        deadline = time.monotonic() + 300
        while after and after not in self.stderr and self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(seconds)
        if self.process.poll() is not None:
            return False
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        return True


def run(args, hook, slow=0.0):
    code, stdout = Command(args, hook, slow).wait()
    assert code == 0, stdout
    return stdout


state = stored_payloads


def test_ingest_sync_killed_at_random_moments_converges(tmp_path, hook, tiny_model):
    data = tmp_path / "d"
    write_sample(data, rows=60, seed=51, width=32, height=32)
    ingest = ["ingest", data, "-c", "k", "--model", tiny_model, "--device", "cpu", "--no-optimize", "-q", "--sync",
              "--batch-size", "8"]
    run([*ingest, "--data-dir", tmp_path / "before"], hook)
    path = data / "part-00000.parquet"
    rows = pq.read_table(path).to_pylist()
    for row in rows[:4]:
        row["caption"] += " (edited)"  # embedded again: the run writes before it deletes
    pq.write_table(pa.Table.from_pylist(rows[:54], schema=pq.read_schema(path)), path)  # 6 of 60 gone: 10%
    shutil.copytree(tmp_path / "before", tmp_path / "whole")
    started = time.monotonic()
    run([*ingest, "--data-dir", tmp_path / "whole"], hook, slow=0.5)
    took = time.monotonic() - started
    want = state(tmp_path / "whole", "k")
    assert len(want) == 54
    rng = random.Random(9)
    moments = [(rng.uniform(0, took), b"") for _ in range(2)] + [(rng.uniform(0, 1.6), b"STEP delete")
                                                                   for _ in range(3)]
    left = []  # points after each kill: 60 before the deletes, 54 after them
    for number, (seconds, after) in enumerate(moments):
        where = tmp_path / f"killed{number}"
        shutil.copytree(tmp_path / "before", where)
        assert Command([*ingest, "--data-dir", where], hook, slow=0.5).kill_at(seconds, after) or not after
        left.append(len(state(where, "k")))
        again = json.loads(run([*ingest, "--data-dir", where, "--json"], hook))
        assert again["delete_refused"] is None and again["exit_code"] == 0
        assert state(where, "k") == want, (seconds, after)
    assert any(54 < n < 60 for n in left), left  # at least one kill landed between two deletes


def test_copy_killed_at_random_moments_resumes_to_the_same_copy(tmp_path, hook):
    photos_collection(tmp_path / "src").close()
    copy = ["copy", "-c", "photos", "--data-dir", tmp_path / "src", "--page-size", "8", "-q", "--json"]
    started = time.monotonic()
    run([*copy, "--to-data-dir", tmp_path / "whole"], hook, slow=0.2)
    took = time.monotonic() - started
    rng = random.Random(10)
    for number, seconds in enumerate([rng.uniform(0, took) for _ in range(5)] + [took - 0.3]):
        target = tmp_path / f"killed{number}"
        Command([*copy, "--to-data-dir", target], hook, slow=0.2).kill_at(seconds)
        summary = json.loads(run([*copy, "--to-data-dir", target], hook))
        assert summary["target_points"] == summary["source_points"] == 70
        store = QdrantEdgeStore("photos", data_dir=target)
        assert_same_points(store, expected(sample_points()))
        assert_same_record(store)
        store.close()
        assert json.loads(run([*copy, "--to-data-dir", target], hook))["already_complete"]


def test_alias_set_killed_at_random_moments_leaves_one_or_the_other(tmp_path, hook):
    data_dir = tmp_path / "store"
    for name in ("c1", "c2"):
        store = QdrantEdgeStore(name, data_dir=data_dir)
        store.ensure_collection(SPEC)
        store.close()
    run(["alias", "set", "live", "c1", "--data-dir", data_dir], hook)
    run(["alias", "set", "other", "c1", "--data-dir", data_dir], hook)
    command = ["alias", "set", "live", "c2", "--data-dir", data_dir]
    rng = random.Random(11)
    for seconds in [rng.uniform(0, 0.6) for _ in range(4)]:
        run(["alias", "set", "live", "c1", "--data-dir", data_dir], hook)
        Command(command, hook, slow=0.5).kill_at(seconds, b"STEP _save_aliases")
        between = json.loads((data_dir / "aliases.json").read_text())
        assert between in ({"live": "c1", "other": "c1"}, {"live": "c2", "other": "c1"})
        run(command, hook)
        assert json.loads((data_dir / "aliases.json").read_text()) == {"live": "c2", "other": "c1"}
