"""A separate text model (``--text-model``) beside a CLIP model: recorded, used by query/eval/serve, checked.

The pair is a replica of sentence-transformers/clip-ViT-B-32 and of
sentence-transformers/clip-ViT-B-32-multilingual-v1 (its text student), as Weaviate and
clip-retrieval ship them (tests/helpers/replicas.py).
"""
from __future__ import annotations

import numpy as np
import pytest

from mmindex.pipeline.models.encoder import Encoder
from mmindex.errors import ModelError
from helpers.replicas import write_multilingual_text, write_text_model_pair


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return write_text_model_pair(tmp_path_factory.mktemp("pair"))


def test_texts_go_through_the_text_model_and_images_through_the_clip(pair):
    from sentence_transformers import SentenceTransformer

    clip, student, _ = pair
    encoder = Encoder(str(clip), device="cpu", text_model=str(student))
    texts = ["a red circle", "一个蓝色的三角形", "x"]
    reference = SentenceTransformer(str(student), device="cpu").encode(texts, normalize_embeddings=True)
    assert np.abs(encoder.encode_texts(texts) - reference).max() < 1e-4
    alone = Encoder(str(clip), device="cpu")
    from PIL import Image

    image = Image.new("RGB", (40, 30), (200, 10, 10))
    assert np.abs(encoder.encode_images([image]) - alone.encode_images([image])).max() < 1e-6
    assert encoder.text_backend is not encoder.backend  # captions are cut at the student's limit
    assert encoder.max_text_tokens == encoder.text_backend.text_rule.max_length
    assert encoder.identity != alone.identity  # content hashes change with the text model


def test_refusals(pair, tmp_path):
    clip, student, _ = pair
    with pytest.raises(ModelError, match="encodes text only"):
        Encoder(str(student), device="cpu")
    other = write_multilingual_text(tmp_path / "wide", out_features=40)
    with pytest.raises(ModelError, match="40-d vectors"):
        Encoder(str(clip), device="cpu", text_model=str(other.path))


def test_the_student_replica_tokenizes_words_not_unknowns(pair):
    """The replica's tokenizer knows its vocabulary (else every caption would be one [UNK] vector)."""
    from transformers import AutoTokenizer

    _, student, _ = pair
    tokens = AutoTokenizer.from_pretrained(str(student)).tokenize("a medium yellow triangle 蓝色的三角形")
    assert tokens and "[UNK]" not in tokens
    encoder = Encoder(str(pair[0]), device="cpu", text_model=str(student))
    vectors = encoder.encode_texts(["a red circle", "a blue star", "一个蓝色的三角形"])
    assert float((vectors @ vectors.T)[np.triu_indices(3, 1)].max()) < 0.99  # distinct captions, distinct vectors
