"""`mmindex train --loss triplet`: trains and says so in the model card; settings that do not fit are refused."""
from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from mmindex.pipeline.cli import main


@pytest.mark.slow  # ~9 s: builds a model, trains an epoch, validates
def test_triplet_training_writes_a_model_whose_card_names_the_loss(tmp_path, train_dir):
    result = CliRunner().invoke(main, ["train", str(train_dir), "--from-scratch", "tiny", "--epochs", "1",
                                       "--batch-size", "32", "--loss", "triplet", "--mining", "hardest",
                                       "--distance", "euclidean", "-o", str(tmp_path / "m"), "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    want = {"name": "triplet", "margin": 0.2, "distance": "euclidean", "mining": "hardest"}
    assert report["loss"] == want and math.isfinite(report["epochs"][0]["train_loss"])
    assert json.loads((tmp_path / "m" / "mmindex_training.json").read_text())["loss"] == want
    card = (tmp_path / "m" / "README.md").read_text()
    assert "- loss: triplet loss, margin 0.2 on euclidean distance, hardest in-batch negatives" in card
    assert "InfoNCE" not in card
    # The temperature is not the triplet loss's: it is saved as the fresh model had it.
    from mmindex.pipeline.models.encoder import Encoder

    clip = Encoder(str(tmp_path / "m"), device="cpu").model[0].auto_model
    assert clip.logit_scale.item() == pytest.approx(clip.config.logit_scale_init_value, abs=1e-6)


@pytest.mark.parametrize("option,value", [("--margin", "0.3"), ("--distance", "cosine"), ("--mining", "all")])
def test_triplet_options_with_info_nce_are_refused(tmp_path, train_dir, option, value):
    result = CliRunner().invoke(main, ["train", str(train_dir), "--from-scratch", "tiny", option, value,
                                       "-o", str(tmp_path / "m")])
    assert result.exit_code == 2, result.output
    assert f"{option} applies only to --loss triplet" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("margin", ["0", "-0.2", "nan", "inf"])
def test_a_margin_that_is_not_positive_and_finite_is_refused(tmp_path, train_dir, margin):
    result = CliRunner().invoke(main, ["train", str(train_dir), "--from-scratch", "tiny", "--loss", "triplet",
                                       f"--margin={margin}", "-o", str(tmp_path / "m")])
    assert result.exit_code == 2, result.output
    assert "--margin must be a finite number > 0" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "m").exists()


def test_train_help_documents_the_losses():
    result = CliRunner().invoke(main, ["train", "--help"])
    for text in ("--loss [infonce|triplet]", "--margin", "--distance [cosine|euclidean]",
                 "--mining [all|semi-hard|hardest]", "--loss triplet --mining"):
        assert text in result.output


@pytest.mark.slow  # ~10 s each: builds a model, trains two epochs
@pytest.mark.parametrize("loss", ["triplet", "infonce"])
def test_captions_all_the_same_fail_saying_nothing_was_learnt(tmp_path, train_dir, loss):
    import pyarrow.parquet as pq

    table = pq.read_table(train_dir).slice(0, 64)
    same = table.set_column(table.schema.get_field_index("caption"), "caption", [["a shape"] * len(table)])
    pq.write_table(same, tmp_path / "same.parquet")
    result = CliRunner().invoke(main, ["train", str(tmp_path / "same.parquet"), "--from-scratch", "tiny", "--epochs",
                                       "2", "--batch-size", "16", "--loss", loss, "-o", str(tmp_path / "m")])
    assert result.exit_code == 1, result.output
    what = "triplet" if loss == "triplet" else "caption"
    for epoch in (1, 2):
        assert f"no {what} had a negative in epoch {epoch}: captions in a batch are all the same" in result.output
    assert "nothing was learnt in 2 epoch(s)" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "m").exists()


def test_a_triplet_setting_from_the_environment_or_config_file_says_where_it_came_from(tmp_path, train_dir,
                                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["train", str(train_dir), "--from-scratch", "tiny", "--loss", "infonce",
                                       "-o", str(tmp_path / "m")], env={"MMINDEX_MARGIN": "0.3"})
    assert result.exit_code == 2 and "(--margin was set by MMINDEX_MARGIN)" in result.output, result.output
    (tmp_path / "mmindex.toml").write_text('[train]\nmining = "all"\n')
    result = CliRunner().invoke(main, ["train", str(train_dir), "--from-scratch", "tiny", "-o", str(tmp_path / "m")])
    assert result.exit_code == 2 and "--mining applies only to --loss triplet" in result.output, result.output
    assert "(--mining was set in the config file)" in result.output
    assert not (tmp_path / "m").exists()
