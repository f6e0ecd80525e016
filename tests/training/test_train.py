"""Contrastive training from scratch improves retrieval; the split is deterministic."""
from __future__ import annotations

import json

import pytest

from mmindex.pipeline.models.encoder import Encoder
from mmindex.pipeline.ingest.sample import write_sample
from mmindex.pipeline.ingest.source import open_source
from mmindex.pipeline.training.train import TrainOptions, split_rows, train


def test_split_is_deterministic_and_disjoint(train_dir):
    from mmindex.pipeline.training.evaluate import collect_rows
    from mmindex.pipeline.ingest.summary import IngestSummary

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


@pytest.fixture(scope="module")
def bilingual_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train-zh")
    write_sample(folder, rows=320, seed=11, width=48, height=48, caption_style="mixed", caption_lang="mixed")
    return folder


def test_teaching_chinese_keeps_the_image_tower_and_gives_characters_tokens(tmp_path, train_dir, bilingual_dir):
    from PIL import Image

    from mmindex.pipeline.training.scratch import build_scratch_model

    start = build_scratch_model(tmp_path / "start", size="tiny", texts=["a red circle", "a blue triangle"])
    options = TrainOptions(epochs=12, batch_size=32, learning_rate=3e-3, val_fraction=0.2, device="cpu",
                           group_cols=("color", "shape"), freeze=("image",), add_char_tokens=True)
    report = train([str(bilingual_dir)], tmp_path / "zh", model=start, options=options)
    assert report.frozen == ["image"] and {"蓝", "三", "角", "形", "，"} <= set(report.added_tokens)
    # Only the text tower learns (against a random image tower here): slower, but well clear of chance.
    assert report.best_score > max(2.5 * report.baseline_score, report.baseline_score + 0.05), (
        report.baseline_score, report.best_score)
    before, after = Encoder(start, device="cpu"), Encoder(str(tmp_path / "zh"), device="cpu")
    # The image tower is untouched: image vectors are exactly those of the starting model.
    images = [Image.new("RGB", (48, 48), (30, 70, 220)), Image.effect_noise((48, 48), 50).convert("RGB")]
    assert (before.encode_images(images) == after.encode_images(images)).all()
    # Each Chinese character is one token now (it was two or more byte pieces), in the saved folder.
    tokenizer = after.model[0].processor.tokenizer
    assert len(tokenizer("一个蓝色的三角形", add_special_tokens=False)["input_ids"]) == 8
    assert len(before.model[0].processor.tokenizer("一个蓝色的三角形", add_special_tokens=False)["input_ids"]) > 16
    assert after.model[0].auto_model.config.text_config.vocab_size == len(tokenizer)
    assert "image tower" in (tmp_path / "zh" / "README.md").read_text()


def test_cached_image_features_equal_the_encoders_vectors(train_dir, tiny_model):
    # The frozen-tower cache must feed the loss what the model itself computes for each image.
    import numpy as np

    from mmindex.pipeline.training.evaluate import collect_rows
    from mmindex.pipeline.ingest.images import decode_image
    from mmindex.pipeline.ingest.summary import IngestSummary
    from mmindex.pipeline.training.train import _image_features

    encoder = Encoder(tiny_model, device="cpu", half=False)
    rows = collect_rows(open_source([str(train_dir)]), "m", IngestSummary("x"))[:40]
    cached = np.stack([v.numpy() for v in _image_features(encoder, encoder.model[0].auto_model, rows, TrainOptions())])
    cached /= np.linalg.norm(cached, axis=1, keepdims=True)
    expected = encoder.encode_images([decode_image(r.image.data, encoder.image_size) for r in rows])
    assert np.abs(cached - expected).max() < 1e-5
