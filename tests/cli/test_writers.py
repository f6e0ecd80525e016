"""Two writers on one embedded collection: the second `mmindex ingest` is refused before its model loads, naming the
process that holds the collection (a Qdrant server takes several writers: tests/connectors/test_real_server.py)."""
from __future__ import annotations

import os
import subprocess
import sys

from helpers import ROOT

from mmindex.pipeline.ingest.sample import write_sample

HOLD = ("import sys, time\n"
        "from mmindex.connectors.qdrant_edge import QdrantEdgeStore\n"
        "store = QdrantEdgeStore('w', data_dir=sys.argv[1])\n"
        "store.count()\n"
        "print('holding', flush=True)\n"
        "time.sleep(60)\n")


def test_a_second_writer_is_refused_naming_the_first(cli, tmp_path, tiny_model):
    data, store = tmp_path / "d", tmp_path / "store"
    write_sample(data, rows=6, seed=43, width=32, height=32)
    args = ["ingest", data, "-c", "w", "--data-dir", store, "--model", tiny_model, "--device", "cpu", "--no-optimize"]
    assert cli(*args, "-q").exit_code == 0
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(store)], stdout=subprocess.PIPE, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline() == b"holding\n"
        second = cli(*args)
        assert second.exit_code == 1 and "Traceback" not in second.output
        assert f"is open in another process (pid {holder.pid}: " in second.output and "qdrant_edge" in second.output
        assert "loading model" not in second.output  # refused before the model loads (minutes for a large one)
    finally:
        holder.kill()
        holder.wait()
