"""Progress reports: whole lines in logs (never a carriage return), a bar only in a terminal."""
from __future__ import annotations

import io
import json
import os
import pty
import re
import subprocess
import sys
import time

import pytest

from mmindex.pipeline.cli.progress import LineProgress, _TerminalProgress, format_seconds, open_progress

LINE = re.compile(r"ingest: (\d+)/(\d+) rows \(\d+\.\d%\), [\d,.]+ rows/s, (\d+) rejected, elapsed \w+(, ETA \w+)?")


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_line_every_interval_then_a_last_one():
    stream, clock = io.StringIO(), Clock()
    progress = LineProgress("ingest", "rows", 1000, interval=10, stream=stream, clock=clock, ticker=False)
    for _ in range(9):  # 9 s: no line yet
        clock.now += 1
        progress.update(10, rejected=1)
    assert stream.getvalue() == ""
    clock.now += 1
    progress.update(10, rejected=2)  # 10 s, 100 rows
    assert stream.getvalue() == "ingest: 100/1,000 rows (10.0%), 10.0 rows/s, 2 rejected, elapsed 10s, ETA 1m30s\n"
    progress.write("building the vector index …")
    clock.now += 5
    progress.update(50, rejected=3)  # 15 s: no line yet
    progress.close()
    progress.close()  # once only
    lines = stream.getvalue().splitlines()
    assert lines[1] == "building the vector index …"
    # The last line is a result, not a forecast: no ETA, even for a run that stopped early.
    assert lines[2] == "ingest: 150/1,000 rows (15.0%), 10.0 rows/s, 3 rejected, elapsed 15s"
    assert len(lines) == 3 and "\r" not in stream.getvalue()


def test_no_repeated_last_line():
    stream, clock = io.StringIO(), Clock()
    progress = LineProgress("ingest", "rows", 10, interval=0, stream=stream, clock=clock, ticker=False)
    clock.now += 1
    progress.update(10, rejected=0)
    progress.close()
    assert stream.getvalue() == "ingest: 10/10 rows (100.0%), 10.0 rows/s, 0 rejected, elapsed 1s\n"


def test_a_stalled_run_still_reports_every_interval():
    """Lines come from a timer, not only from finished batches."""
    stream = io.StringIO()
    progress = LineProgress("ingest", "rows", 100, interval=0.2, stream=stream)
    progress.update(5)
    time.sleep(0.9)  # no work finished meanwhile
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 3 and all(line.startswith("ingest: 5/100 rows") for line in lines), lines


def test_unknown_total_and_postfix():
    stream, clock = io.StringIO(), Clock()
    with LineProgress("train", "steps", interval=0, stream=stream, clock=clock) as progress:
        clock.now += 2
        progress.set_postfix(loss="0.512")
        progress.update(4)
    assert stream.getvalue().splitlines() == ["train: 4 steps, 2.0 steps/s, elapsed 2s, loss=0.512"]


def test_a_closed_stream_ends_the_timed_lines_quietly():
    stream = io.StringIO()
    progress = LineProgress("ingest", "rows", 10, interval=0.05, stream=stream)
    stream.close()
    time.sleep(0.2)  # the timer's write fails: no exception escapes its thread
    assert progress.stopped.is_set()
    progress.close()


def test_quiet_writes_nothing():
    stream = io.StringIO()
    progress = open_progress("ingest", "rows", 10, quiet=True, interval=0, stream=stream)
    progress.update(5)
    progress.write("note")
    progress.close()
    assert stream.getvalue() == ""


def test_a_terminal_gets_a_bar_and_anything_else_lines(tmp_path):
    with open_progress("ingest", "rows", 5, stream=io.StringIO()) as progress:
        assert isinstance(progress, LineProgress)
    with open(tmp_path / "log", "w") as handle, open_progress("ingest", "rows", 5, stream=handle) as progress:
        assert isinstance(progress, LineProgress)
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as terminal:
            bar = open_progress("ingest", "rows", 5, stream=terminal)
            assert isinstance(bar, _TerminalProgress)
            bar.close()
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (42.4, "42s"), (75, "1m15s"), (3725, "1h02m05s")])
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text


def test_ingest_logs_to_a_file_have_lines_not_redraws(tmp_path, tiny_model, sample_dir):
    """What cron, systemd and Kubernetes see: stderr is a file."""
    log = tmp_path / "stderr.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "wb") as handle:
        result = subprocess.run([sys.executable, "-m", "mmindex", "ingest", str(sample_dir), "-c", "logs",
                                 "--data-dir", str(tmp_path / "store"), "--model", tiny_model, "--device", "cpu",
                                 "--batch-size", "16", "--progress-interval", "0", "--json"],
                                stdout=subprocess.PIPE, stderr=handle, env=env, cwd=tmp_path)
    text = log.read_bytes().decode()
    assert result.returncode == 0, text
    assert "\r" not in text
    lines = text.splitlines()
    progress = [LINE.fullmatch(line) for line in lines if line.startswith("ingest: ")]
    assert progress and all(progress), lines
    counts = [int(match.group(1)) for match in progress]
    assert counts == sorted(counts) and counts[-1] == int(progress[-1].group(2)) == 60
    # The rows' last line, then the note on a line of its own.
    assert lines.index("building the vector index …") == lines.index(next(l for l in lines if " 60/60 rows" in l)) + 1
    assert json.loads(result.stdout)["upserted"] == 60
