"""Zero-shot probabilities against a plain-numpy oracle, template averaging as CLIP's notebook does it, the logit
scale read from the model, and the labeler made from a collection's own text model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mmindex.errors import InputError, UsageError
from mmindex.pipeline.classify.labels_file import prompts
from mmindex.pipeline.classify.zero_shot import (DEFAULT_LOGIT_SCALE, SAME_VECTOR, ZeroShotLabeler, average_templates,
                                               check_distinct, labeler_from_encoder, model_logit_scale,
                                               prompt_limit, zero_shot_labeler)

DEMO = Path(__file__).resolve().parents[2] / "demo" / "shapes-clip"
FLOATS = st.floats(-3, 3, allow_nan=False, width=32)


def oracle(vectors, class_vectors, scale):
    """softmax(scale · cos) written out row by row, in plain Python over numpy rows."""
    rows = []
    for v in vectors:
        v = v / np.linalg.norm(v)
        logits = [scale * float(np.dot(v, c)) for c in class_vectors]
        top = max(logits)
        weights = [np.exp(x - top) for x in logits]
        rows.append([w / sum(weights) for w in weights])
    return np.array(rows)


@settings(max_examples=80, deadline=None)
@given(data=st.data(), n=st.integers(1, 6), classes=st.integers(1, 7), dim=st.integers(2, 8),
       scale=st.sampled_from([1.0, 29.4, 100.0]))
def test_predict_proba_is_the_softmax_of_scaled_cosines(data, n, classes, dim, scale):
    vectors = data.draw(arrays(np.float32, (n, dim), elements=FLOATS).filter(
        lambda a: (np.linalg.norm(a, axis=1) > 1e-3).all()))
    raw = data.draw(arrays(np.float64, (classes, dim), elements=FLOATS).filter(
        lambda a: (np.linalg.norm(a, axis=1) > 1e-3).all()))
    class_vectors = (raw / np.linalg.norm(raw, axis=1, keepdims=True)).astype(np.float32)
    labeler = ZeroShotLabeler([f"c{i}" for i in range(classes)], ["{}"], class_vectors, scale, {"model": "m"})
    got = labeler.predict_proba(vectors)
    assert got.shape == (n, classes)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(got, oracle(vectors.astype(np.float64), class_vectors.astype(np.float64), scale),
                               atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), classes=st.integers(1, 5), templates=st.integers(1, 4), dim=st.integers(2, 6))
def test_templates_average_as_clips_notebook(data, classes, templates, dim):
    vectors = data.draw(arrays(np.float64, (classes, templates, dim), elements=FLOATS).filter(
        lambda a: (np.linalg.norm(a, axis=2) > 1e-3).all()
        and (np.linalg.norm((a / np.linalg.norm(a, axis=2, keepdims=True)).mean(axis=1), axis=1) > 1e-3).all()))
    got = average_templates(vectors)
    for c in range(classes):  # the notebook: normalise each, mean, normalise again
        each = [v / np.linalg.norm(v) for v in vectors[c]]
        mean = sum(each) / len(each)
        np.testing.assert_allclose(got[c], mean / np.linalg.norm(mean), atol=1e-12)


def test_one_template_gives_the_prompt_vector_itself(encoder):
    labeler = labeler_from_encoder(encoder, ["red circle", "blue star"], ["a {}"])
    expected = encoder.encode_texts(["a red circle", "a blue star"])
    np.testing.assert_allclose(labeler.class_vectors, expected, atol=1e-6)
    several = labeler_from_encoder(encoder, ["red circle"], ["a {}", "{}", "a photo of a {}."])
    texts = encoder.encode_texts(prompts("red circle", several.templates)).astype(np.float64)
    np.testing.assert_allclose(several.class_vectors[0], average_templates(texts[None])[0], atol=1e-6)


def test_the_logit_scale_is_the_models_own_else_clips():
    scale, source = model_logit_scale(str(DEMO))
    assert scale == pytest.approx(29.396, abs=0.01) and "learned" in source
    assert model_logit_scale(None) == (DEFAULT_LOGIT_SCALE, "CLIP's default (100)")


def test_the_description_identifies_the_labels(encoder):
    one = labeler_from_encoder(encoder, ["a", "b"], ["{}"]).describe()
    assert one["kind"] == "zero-shot" and one["labels"] == ["a", "b"] and one["templates"] == ["{}"]
    assert one["sha"] == labeler_from_encoder(encoder, ["a", "b"], ["{}"]).describe()["sha"]
    for other in (labeler_from_encoder(encoder, ["b", "a"], ["{}"]), labeler_from_encoder(encoder, ["a", "b"], None)):
        assert other.describe()["sha"] != one["sha"]


def test_vectors_of_another_size_are_refused(encoder):
    labeler = labeler_from_encoder(encoder, ["a", "b"], ["{}"])
    with pytest.raises(UsageError, match="shape \\(2, 3\\)"):
        labeler.predict_proba(np.ones((2, 3), np.float32))


@pytest.mark.slow  # the first labeler of a session exports the tiny model for the query path (seconds)
def test_the_collections_labeler_uses_its_own_text_model(collection, encoder):
    labeler = zero_shot_labeler(collection, ["red", "blue"], ["a {} shape"])
    np.testing.assert_allclose(labeler.class_vectors, encoder.encode_texts(["a red shape", "a blue shape"]),
                               atol=2e-4)  # the query bundle (ONNX Runtime) or torch: the same vectors
    assert labeler.model["fingerprint"] == encoder.fingerprint and labeler.model["dim"] == encoder.dim


LONG = "red " * 40  # 40 words: past the tiny model's 32-token limit, so what follows is cut off


def test_labels_cut_to_the_same_prompt_are_refused_naming_both(encoder):
    assert encoder.max_text_tokens == 32
    labels = ["blue star", LONG + "circle", LONG + "square"]
    with pytest.raises(InputError) as error:
        labeler_from_encoder(encoder, labels, ["a {}"])
    message = str(error.value)
    assert f"labels {labels[1]!r} and {labels[2]!r} cannot be told apart" in message and "\n" not in message
    assert "their prompts are the same after the text model cuts them at 32 tokens" in message
    assert prompt_limit(encoder, labels, ["a {}"]) == (32, [False, True, True])
    labeler_from_encoder(encoder, ["blue star", LONG + "circle"], ["a {}"])  # one long label alone is fine


class SameVector:
    """An encoder that gives "cat" and "kitten" one vector (no prompt is cut)."""

    max_text_tokens = 77

    def encode_texts(self, texts):
        return np.asarray([[1.0, 0.0] if "cat" in t or "kitten" in t else [0.0, 1.0] for t in texts], np.float32)

    def captions_too_long(self, texts):
        return [False] * len(texts)


def test_labels_the_model_gives_one_vector_are_refused_saying_so():
    with pytest.raises(InputError, match="labels 'cat' and 'kitten' cannot be told apart: the text model gives their "
                                         "prompts the same vector"):
        labeler_from_encoder(SameVector(), ["cat", "dog", "kitten"], ["a {}"], model={"model": "m", "dim": 2})


@settings(max_examples=60, deadline=None)
@given(st.data(), st.integers(2, 6), st.integers(2, 4))
def test_distinct_labels_pass_and_any_pair_at_cosine_one_is_refused(data, classes, dim):
    vectors = data.draw(arrays(np.float64, (classes, dim), elements=st.floats(-1, 1, allow_nan=False)))
    copies = data.draw(st.lists(st.tuples(st.integers(0, classes - 1), st.integers(0, classes - 1)), max_size=2))
    for source, target in copies:
        vectors[target] = vectors[source]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if (norms < 1e-3).any():
        return
    vectors = vectors / norms
    same = [(i, j) for i in range(classes) for j in range(i + 1, classes)
            if sum(float(a) * float(b) for a, b in zip(vectors[i], vectors[j])) >= SAME_VECTOR]
    labels = [f"label {k}" for k in range(classes)]
    if not same:
        check_distinct(labels, vectors, (None, []))
        return
    with pytest.raises(InputError, match=f"labels 'label {same[0][0]}' and 'label {same[0][1]}' cannot be told"):
        check_distinct(labels, vectors, (None, []))
