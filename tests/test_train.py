"""Contrastive training from scratch improves retrieval; the split is deterministic."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mmindex.pipeline.cli import main
from mmindex.pipeline.encoder import Encoder
from mmindex.pipeline.evaluate import embed_pairs, exact_metrics
from mmindex.pipeline.sample import write_sample
from mmindex.pipeline.source import open_source
from mmindex.pipeline.train import TrainOptions, score_of, split_rows, train


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train")
    write_sample(folder, rows=320, seed=11, width=48, height=48, caption_style="mixed")
    return folder


def test_split_is_deterministic_and_disjoint(train_dir):
    from mmindex.pipeline.evaluate import collect_rows
    from mmindex.pipeline.ingestion import IngestSummary

    rows = collect_rows(open_source([str(train_dir)]), "m", IngestSummary("x"))
    a_train, a_val = split_rows(rows, 0.2)
    b_train, b_val = split_rows(list(reversed(rows)), 0.2)
    assert {r.id for r in a_val} == {r.id for r in b_val}
    assert not {r.id for r in a_train} & {r.id for r in a_val}
    assert 0.1 < len(a_val) / len(rows) < 0.3


def test_training_from_scratch_improves_recall(tmp_path, train_dir):
    options = TrainOptions(epochs=6, batch_size=32, learning_rate=2e-3, val_fraction=0.2, from_scratch="tiny",
                           device="cpu", group_cols=("color", "shape"))
    report = train([str(train_dir)], tmp_path / "model", options=options)
    assert len(report.epochs) == 6 and report.best_epoch >= 1
    # Untrained: about chance (1/63 here). A few epochs on 256 pairs lift it well clear of that.
    assert report.best_score > max(3 * report.baseline_score, report.baseline_score + 0.04), (
        report.baseline_score, report.best_score)
    # The saved model is the best epoch's: loading it reproduces the validation score.
    assert f"best epoch: {report.best_epoch}" in (tmp_path / "model" / "README.md").read_text()
    saved = json.loads((tmp_path / "model" / "mmindex_training.json").read_text())
    assert saved["best_epoch"] == report.best_epoch


def test_train_cli_reports_and_saves(tmp_path, train_dir):
    result = CliRunner().invoke(main, ["train", str(train_dir), "--from-scratch", "tiny", "--epochs", "1",
                                       "--batch-size", "32", "-o", str(tmp_path / "m"), "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["epochs"][0]["epoch"] == 1 and report["train_rows"] + report["validation_rows"] == 320
    encoder = Encoder(str(tmp_path / "m"), device="cpu")
    metrics = exact_metrics(embed_pairs(open_source([str(train_dir)]), encoder))
    assert 0 <= score_of(metrics) <= 1


def test_train_needs_exactly_one_start():
    result = CliRunner().invoke(main, ["train", "x", "-o", "y"])
    assert result.exit_code == 2 and "exactly one of --model or --from-scratch" in result.output
