"""`mmindex train`: reports and saves; its refusals and help."""
from __future__ import annotations

import json

from click.testing import CliRunner

from mmindex.pipeline.cli import main
from mmindex.pipeline.ingest.source import open_source
from mmindex.pipeline.models.encoder import Encoder
from mmindex.pipeline.training.evaluate import embed_pairs, exact_metrics
from mmindex.pipeline.training.train import score_of


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


def test_freezing_what_must_learn_is_refused(tmp_path, train_dir, tiny_model):
    result = CliRunner().invoke(main, ["train", str(train_dir), "--model", tiny_model, "--freeze", "image",
                                       "--freeze", "text", "-o", str(tmp_path / "m")])
    assert result.exit_code == 2 and "freezing both towers leaves nothing to train" in result.output
    result = CliRunner().invoke(main, ["train", str(train_dir), "--model", tiny_model, "--freeze", "text",
                                       "--add-char-tokens", "-o", str(tmp_path / "m")])
    assert result.exit_code == 2 and "do not freeze it with --add-char-tokens" in result.output
    assert not (tmp_path / "m").exists()


def test_train_help_documents_freeze_and_new_tokens():
    result = CliRunner().invoke(main, ["train", "--help"])
    assert "--freeze [image|text]" in result.output and "--add-char-tokens" in result.output
