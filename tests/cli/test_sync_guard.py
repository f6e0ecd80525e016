"""`mmindex ingest --sync` refuses a mass delete in one line (how many points, the limit, the override flag) with the
exit code of an input error; --max-delete is typed each time; a report that cannot be written is a warning only."""
from __future__ import annotations

import json
import os
import threading

import pyarrow.parquet as pq
import pytest

from mmindex.connectors.qdrant_edge import QdrantEdgeStore
from mmindex.pipeline.ingest.sample import write_sample


@pytest.fixture
def synced(cli, tmp_path, tiny_model):
    """60 rows in 3 files, synced into collection 'g'; returns the common arguments."""
    write_sample(tmp_path / "d", rows=60, seed=41, files=3, width=32, height=32)
    args = ["ingest", tmp_path / "d", "-c", "g", "--data-dir", tmp_path / "store", "--model", tiny_model,
            "--device", "cpu", "--no-optimize", "-q", "--sync"]
    assert cli(*args).exit_code == 0
    return args


def count(tmp_path):
    store = QdrantEdgeStore("g", data_dir=tmp_path / "store")
    try:
        return store.count()
    finally:
        store.close()


def empty(folder):
    for path in folder.glob("*.parquet"):
        pq.write_table(pq.read_table(path).slice(0, 0), path)


def test_an_emptied_source_is_refused_in_one_line_and_deleted_only_when_told(cli, synced, tmp_path):
    empty(tmp_path / "d")
    refused = cli(*synced, "--json")
    assert refused.exit_code == 1 and count(tmp_path) == 60
    errors = [line for line in refused.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in refused.output
    assert "would delete 60 of the 60 points" in errors[0] and "--max-delete 10% allows (6)" in errors[0]
    assert "--max-delete all" in errors[0]
    as_json = json.loads(refused.stdout)
    assert as_json["exit_code"] == 1 and as_json["delete_refused"] == as_json["problem"] and as_json["deleted"] == 0
    told = cli(*synced, "--max-delete", "all")
    assert told.exit_code == 0 and count(tmp_path) == 0


def test_the_override_is_typed_never_taken_from_the_environment_or_a_file(cli, synced, tmp_path, monkeypatch):
    empty(tmp_path / "d")
    monkeypatch.setenv("MMINDEX_MAX_DELETE", "all")
    assert cli(*synced).exit_code == 1 and count(tmp_path) == 60
    config = tmp_path / "settings.toml"  # not ./mmindex.toml, which every later command here would read
    config.write_text('[ingest]\nmax_delete = "all"\n')
    from_file = cli("--config", config, *synced)
    assert from_file.exit_code == 1 and "no setting(s) max_delete" in from_file.output and count(tmp_path) == 60


@pytest.mark.parametrize("value", ["ten", "-1", "150%", "0.5"])
def test_a_bad_max_delete_is_a_usage_error(cli, tmp_path, value):
    result = cli("ingest", tmp_path, "-c", "g", "--sync", "--max-delete", value)
    assert result.exit_code == 2 and "--max-delete" in result.output and "Traceback" not in result.output


def test_print_config_shows_the_limit(cli, tmp_path):
    shown = json.loads(cli("ingest", tmp_path, "--sync", "--max-delete", "25", "--print-config").stdout)
    assert shown["max_delete"] == "25"
    assert json.loads(cli("ingest", tmp_path, "--print-config").stdout)["max_delete"] == "10%"


def test_a_report_to_a_pipe_nobody_reads_is_a_warning(cli, synced, tmp_path):
    """It used to wait for a reader for ever (here: until the rescue reader below opened it)."""
    pipe = tmp_path / "report.pipe"
    os.mkfifo(pipe)
    got = []

    def rescue():  # unblocks the old behaviour after 10 s, so that a failing test fails instead of hanging
        finished.wait(10)
        if not finished.is_set():
            with open(pipe) as handle:
                got.append(handle.read())

    finished = threading.Event()
    reader = threading.Thread(target=rescue, daemon=True)
    reader.start()
    result = cli(*synced, "--report", pipe)
    finished.set()
    assert result.exit_code == 0 and not got
    assert "warning: cannot write the report" in result.output and "nothing reads from it" in result.output


def test_a_report_path_that_became_a_folder_is_a_warning(tmp_path, tiny_model):
    """After every row was written, a report that cannot be written must not turn the run into an error."""
    from mmindex import IngestOptions
    from mmindex.pipeline.config import StoreSettings
    from mmindex.pipeline.ingest.job import IngestJob, run_ingest_job
    from mmindex.pipeline.models.identity import ModelChoice

    write_sample(tmp_path / "d", rows=6, seed=42, width=32, height=32)
    (tmp_path / "report.json").mkdir()
    job = IngestJob([str(tmp_path / "d")], StoreSettings(collection="r", data_dir=str(tmp_path / "store")),
                    ModelChoice(str(tiny_model)), IngestOptions(optimize=False), device="cpu",
                    report=str(tmp_path / "report.json"))
    result = run_ingest_job(job)
    assert result.exit_code == 0 and result.summary.upserted == 6
    assert any("cannot write the report" in w and "is a folder" in w for w in result.summary.warnings)
