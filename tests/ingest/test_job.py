"""The whole ingest job as a library call: the Python API gets the CLI's checks before a model loads, its graceful
stop and its exit-code rules (pipeline/ingest/job.py, run.py's checked_plan, summary.outcome)."""
from __future__ import annotations

import shutil
import signal

import pytest

import mmindex
from mmindex.errors import CollectionMismatchError, InputError, UsageError
from mmindex.pipeline.config import StoreSettings
from mmindex.pipeline.ingest import job as job_module
from mmindex.pipeline.ingest import run as run_module
from mmindex.pipeline.ingest.job import IngestJob, run_ingest_job
from mmindex.pipeline.ingest.options import IngestOptions
from mmindex.pipeline.ingest.summary import IngestSummary, outcome
from mmindex.pipeline.models.identity import ModelChoice
from mmindex.pipeline.training.scratch import build_scratch_model


@pytest.fixture(scope="module")
def other_model(tmp_path_factory, tiny_model):
    """Another tiny CLIP: same shape, other weights (another fingerprint)."""
    return build_scratch_model(tmp_path_factory.mktemp("other") / "other-clip", size="tiny",
                               texts=["a red circle", "a blue square"], seed=7)


@pytest.fixture
def built(tmp_path, sample_dir, tiny_model):
    """A collection made by the library with the tiny model, and its settings."""
    settings = StoreSettings(collection="c", data_dir=str(tmp_path / "store"))
    result = run_ingest_job(IngestJob([str(sample_dir)], settings, ModelChoice(tiny_model),
                                      IngestOptions(batch_size=16), device="cpu", no_rejects=True))
    assert result.exit_code == 0 and result.summary.upserted == 60, result.problem
    return settings


class Loaded(Exception):
    """Raised if a model starts loading: these checks must refuse before that."""


def refuse_loading(monkeypatch):
    def loading(*args, **kwargs):
        raise Loaded("the model was loaded before the check")

    monkeypatch.setattr(job_module.Encoder, "__init__", loading)
    monkeypatch.setattr(run_module.Encoder, "__init__", loading)


def test_the_python_api_refuses_another_model_before_loading_it(built, sample_dir, other_model, monkeypatch):
    refuse_loading(monkeypatch)
    store = built.open()
    try:
        with pytest.raises(CollectionMismatchError, match="this run uses model 'other-clip'"):
            mmindex.ingest([str(sample_dir)], store, other_model)  # a model spec: checked, then loaded
    finally:
        store.close()
    with pytest.raises(CollectionMismatchError):
        run_ingest_job(IngestJob([str(sample_dir)], built, ModelChoice(other_model), device="cpu"))


def test_the_cli_refuses_the_same_model_the_same_way(built, sample_dir, other_model, cli, monkeypatch):
    refuse_loading(monkeypatch)
    result = cli("ingest", sample_dir, "-c", "c", "--data-dir", built.data_dir, "--model", other_model, "-q")
    assert result.exit_code == 1 and "Loaded" not in result.output
    assert "collection 'c' holds vectors of model 'tiny-clip'" in result.output
    assert "this run uses model 'other-clip'" in result.output


def test_a_recorded_model_folder_with_other_files_is_named_before_loading(tmp_path, sample_dir, tiny_model,
                                                                           other_model, monkeypatch):
    """No --model: the collection loads its recorded folder; other weights there are refused by fingerprint."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    settings = StoreSettings(collection="c", data_dir=str(tmp_path / "store"))
    first = run_ingest_job(IngestJob([str(sample_dir)], settings, ModelChoice(str(folder)), device="cpu"))
    assert first.exit_code == 0
    shutil.rmtree(folder)
    shutil.copytree(other_model, folder)
    refuse_loading(monkeypatch)
    with pytest.raises(CollectionMismatchError, match="no longer that model"):
        run_ingest_job(IngestJob([str(sample_dir)], settings, ModelChoice(), device="cpu"))


def test_the_job_refuses_a_device_list_that_is_not_one(tmp_path, sample_dir, tiny_model):
    job = IngestJob([str(sample_dir)], StoreSettings(collection="c", data_dir=str(tmp_path / "store")),
                    ModelChoice(tiny_model), IngestOptions(devices=["cpu+cpu"]))
    with pytest.raises(UsageError, match="cpu\\+cpu"):
        run_ingest_job(job)
    assert not (tmp_path / "store").exists()  # refused before the store was opened


def test_default_rejects_file_is_beside_the_collection_or_per_shard(tmp_path):
    local = IngestJob([], StoreSettings(collection="c", data_dir="d")).with_default_rejects()
    assert local.options.rejects_path.endswith("d/c/rejects.parquet")
    shard = IngestJob([], StoreSettings(collection="c", url="http://x:6333"), shard=(1, 4)).with_default_rejects()
    assert shard.options.rejects_path == "mmindex-rejects-c-shard-1-of-4.parquet"
    assert IngestJob([], StoreSettings(), no_rejects=True).with_default_rejects().options.rejects_path is None


@pytest.mark.parametrize("status, rejected, failure, signal_number, expected", [
    ("ok", 0, None, None, 0),
    ("ok", 2, None, None, 0),     # 2 of 100: under the 5 % default
    ("ok", 6, None, None, 3),     # over --max-reject-rate
    ("interrupted", 0, None, signal.SIGTERM, 128 + signal.SIGTERM),
    ("interrupted", 0, None, None, 128 + signal.SIGINT),
    ("failed", 0, RuntimeError("disk full"), None, 1),
])
def test_exit_codes_follow_the_documented_rules(status, rejected, failure, signal_number, expected):
    summary = IngestSummary("c", status=status, read=100, upserted=100 - rejected, rejected=rejected)
    if status == "interrupted":
        summary.upserted, summary.not_processed = 90, 10
    code, problem = outcome(summary, failure, signal_number, 0.05)
    assert code == expected and (problem is None) == (expected == 0)


def test_a_summary_that_does_not_add_up_is_an_internal_error():
    code, problem = outcome(IngestSummary("c", read=10, upserted=9), None, None, 0.05)
    assert code == 1 and "does not add up" in problem


@pytest.mark.parametrize("change, message", [
    (dict(shard=(3, 2)), "shard must be"), (dict(shard=(-1, 2)), "shard must be"), (dict(shard=(0, 0)), "shard"),
    (dict(engine="bogus"), "engine must be one of local, ray"),
    (dict(options=IngestOptions(batch_size=0)), "batch_size must be at least 1"),
    (dict(device="bogus"), "--device: 'bogus' is not a device"),
])
def test_the_job_refuses_what_cannot_be_before_opening_anything(tmp_path, sample_dir, tiny_model, change, message):
    job = IngestJob([str(sample_dir)], StoreSettings(collection="c", data_dir=str(tmp_path / "store")),
                    ModelChoice(tiny_model), **change)
    with pytest.raises(UsageError, match=message):
        run_ingest_job(job)
    assert not (tmp_path / "store").exists()


def test_one_input_as_a_plain_string_is_one_input(tmp_path, sample_dir, tiny_model):
    result = run_ingest_job(IngestJob(str(sample_dir), StoreSettings(collection="c", data_dir=str(tmp_path / "s")),
                                      ModelChoice(tiny_model), IngestOptions(index_fields="year"), device="cpu"))
    assert result.exit_code == 0 and result.summary.upserted == 60


def test_a_model_by_name_checks_the_inputs_before_loading(built, tiny_model, monkeypatch):
    refuse_loading(monkeypatch)
    store = built.open()
    try:
        with pytest.raises(InputError, match="nodata"):
            mmindex.ingest(["nodata"], store, tiny_model)
    finally:
        store.close()


def test_a_model_by_name_fills_an_int8_collection_as_the_cli_does(tmp_path, sample_dir, tiny_model):
    """The collection records int8 towers: a model given by name runs where they run (ONNX Runtime), not in torch."""
    settings = StoreSettings(collection="c8", data_dir=str(tmp_path / "store"))
    first = run_ingest_job(IngestJob([str(sample_dir)], settings, ModelChoice(tiny_model, precision="int8"),
                                     device="cpu", no_rejects=True))
    assert first.exit_code == 0, first.problem
    store = settings.open()
    try:
        again = mmindex.ingest([str(sample_dir)], store, tiny_model)
    finally:
        store.close()
    assert again.unchanged == 60 and again.embedded == 0
