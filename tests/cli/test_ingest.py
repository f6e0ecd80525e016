"""`mmindex ingest` through click's CliRunner on real files: summaries, reruns, refusals, and the
options it checks before loading anything."""
from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest
from helpers.hazards import EXPECTED, MAX_PAYLOAD, MAX_PIXELS


def test_ingest_prints_a_json_summary_that_adds_up(ingested):
    assert ingested["read"] == 60 and ingested["upserted"] == 60
    assert ingested["read"] == ingested["upserted"] + ingested["unchanged"] + ingested["rejected"]


def test_ingest_again_uses_the_collection_model_and_skips_everything(run, ingested, sample_dir):
    result = run("ingest", sample_dir, "-c", "shapes", "--json", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["unchanged"], summary["embedded"]) == (60, 0)


def test_human_summary_and_notes(run, tiny_model, sample_dir):
    result = run("ingest", sample_dir, "-c", "x", "--model", tiny_model)
    assert result.exit_code == 0, result.output
    assert "note: caption column: 'caption' (detected" in result.stderr
    assert "embedded 60  upserted 60  unchanged (skipped) 0  rejected 0" in result.stdout


def test_ingest_with_another_model_is_refused(run, ingested, sample_dir, tmp_path):
    run("init-model", tmp_path / "other", "--seed", "3")
    result = run("ingest", sample_dir, "-c", "shapes", "--model", tmp_path / "other", "--quiet")
    assert result.exit_code == 1 and "holds vectors of model" in result.stderr
    assert json.loads(run("info", "-c", "shapes", "--json").stdout)["points"] == 60


def test_cli_writes_rejects_and_report_and_fails_on_the_reject_rate(tmp_path, tiny_model, hazards):
    from click.testing import CliRunner

    from mmindex.pipeline.cli import main

    path, root = hazards
    data_dir = tmp_path / "store"
    args = ["ingest", str(path), "-c", "hz", "--data-dir", str(data_dir), "--model", tiny_model, "--device", "cpu",
            "--image-root", str(root), "--max-pixels", str(MAX_PIXELS), "--max-payload-bytes", str(MAX_PAYLOAD),
            "--report", str(tmp_path / "run.json"), "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 3, result.output
    assert "more than --max-reject-rate 5.0%" in result.output
    rejects = pq.read_table(data_dir / "hz" / "rejects.parquet").to_pylist()
    expected_rejected = sum(1 for e in EXPECTED.values() if e[0] == "rejected")
    assert len(rejects) == expected_rejected
    assert {r["stage"] for r in rejects} == {"read", "decode"} and all(r["reason"] for r in rejects)
    report = json.loads((tmp_path / "run.json").read_text())
    assert report["exit_code"] == 3 and report["adds_up"] and report["rejected"] == expected_rejected
    assert report["rejected_by_stage"]["decode"] == sum(1 for e in EXPECTED.values() if e[1:2] == ("decode",))
    assert report["rejects_file"].endswith("rejects.parquet")

    relaxed = CliRunner().invoke(main, args + ["--max-reject-rate", "1", "--json", "--no-rejects"])
    assert relaxed.exit_code == 0, relaxed.output
    assert json.loads(relaxed.output)["unchanged"] > 0


def test_cli_refuses_gpu_decode_before_loading_the_model(cli, sample_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --decode gpu is not refused for lack of it")
    result = cli("ingest", sample_dir, "-c", "g", "--model", "/no/such/model", "--device", "auto", "--decode", "gpu")
    assert result.exit_code == 1
    assert "--decode gpu cannot run: the model would run on cpu" in result.output
    assert "mmindex[gpu]" in result.output and "no such folder" not in result.output
    result = cli("ingest", sample_dir, "--decode", "gpu", "--no-pipeline", "--model", "/no/such/model")
    assert result.exit_code != 0 and "--no-pipeline is the Pillow reference path" in result.output


def test_a_device_list_that_is_not_one_is_a_usage_error(cli, sample_dir, tiny_model, tmp_path):
    """Devices are separated by commas; "cpu+cpu" is refused (exit 2) before the store opens or the model loads."""
    result = cli("ingest", sample_dir, "-c", "d", "--data-dir", tmp_path / "store", "--model", tiny_model,
                 "--devices", "cpu+cpu")
    assert result.exit_code == 2 and "--devices: 'cpu+cpu' is not a device" in result.output
    assert not (tmp_path / "store").exists()


def test_a_device_that_is_none_is_a_usage_error_before_anything_loads(cli, sample_dir, tiny_model, tmp_path):
    result = cli("ingest", sample_dir, "-c", "d", "--data-dir", tmp_path / "store", "--model", tiny_model,
                 "--device", "bogus")
    assert result.exit_code == 2 and "--device: 'bogus' is not a device" in result.output
    assert not (tmp_path / "store").exists()


def test_a_report_in_a_missing_folder_is_refused_before_the_run(cli, sample_dir, tiny_model, tmp_path):
    result = cli("ingest", sample_dir, "-c", "d", "--data-dir", tmp_path / "store", "--model", tiny_model,
                 "--report", tmp_path / "nowhere" / "run.json")
    assert result.exit_code == 2 and f"--report: the folder {tmp_path / 'nowhere'} does not exist" in result.output
    assert not (tmp_path / "store").exists()


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc (a folder no file can be made in)")
def test_a_report_that_cannot_be_written_is_a_warning_not_a_traceback(cli, sample_dir, tiny_model, tmp_path):
    result = cli("ingest", sample_dir, "-c", "d", "--data-dir", tmp_path / "store", "--model", tiny_model,
                 "--report", "/proc/mmindex-report.json", "--json", "-q")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["upserted"] == 60
    assert any("cannot write the report /proc/mmindex-report.json" in w for w in summary["warnings"])
