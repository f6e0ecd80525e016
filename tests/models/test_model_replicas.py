"""mmindex against tiny replicas of the Hub models users pick (tests/helpers/replicas.py): each loads offline, embeds
exactly as transformers' own reference does, gives a caption the same vector whatever its batch, cuts and
flags an over-long caption, and ingests and queries through the CLI. A text-only model is refused as the
main model."""
from __future__ import annotations

import json
import os
import socket

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st
from PIL import Image

from helpers import replicas
from mmindex import Encoder
from mmindex.errors import MmindexError
from mmindex.pipeline.ingest.sample import write_sample
from helpers.reference import Reference


TOLERANCE = 1e-4
TWO_TOWER = ["st-clip", "openai-clip", "siglip", "chinese-clip"]
SHORT = ["a red circle", "蓝色的三角形", "x", "A small Green STAR, top-left!", "一个红色的圆形 on a dark background"]
PROPERTY = settings(max_examples=6, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# -- fixtures: each replica written, loaded by mmindex and by transformers once -------------------------------

@pytest.fixture(scope="session")
def replica_folders(tmp_path_factory):
    """Replicas by name, written on first use."""
    base = tmp_path_factory.mktemp("replicas")
    written: dict[str, replicas.Replica] = {}

    def get(name: str) -> replicas.Replica:
        if name not in written:
            written[name] = replicas.WRITERS[name](base / name, seed=len(written))
        return written[name]

    return get


@pytest.fixture(scope="module", params=TWO_TOWER)
def replica(request, replica_folders) -> replicas.Replica:
    return replica_folders(request.param)


@pytest.fixture(scope="module")
def model(replica):
    """mmindex's Encoder on the replica folder, as a user passes it."""
    return Encoder(str(replica.path), device="cpu", batch_size=8)


@pytest.fixture(scope="module")
def reference(replica):
    return Reference(replica)


def assert_close(got, expected, what: str) -> None:
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, f"{what}: shapes {got.shape} and {expected.shape}"
    difference = float(np.abs(got - expected).max())
    assert difference <= TOLERANCE, f"{what}: max difference {difference:.3g} > {TOLERANCE}"


def fill_to(reference: Reference, tokens: int, word: str = "a") -> str:
    """A caption of exactly ``tokens`` tokens (special ones included) of repeated ``word``, by the oracle."""
    words: list[str] = []
    while reference.token_count(" ".join(words)) < tokens:
        words.append(word)
    text = " ".join(words)
    assert reference.token_count(text) == tokens, f"cannot make a caption of exactly {tokens} tokens of {word!r}"
    return text


def over_long(reference: Reference) -> str:
    """A caption well past the model's limit, mixing scripts."""
    caption = "a large purple ring 紫色的圆环 at the top on a dark background"
    while reference.token_count(caption) <= reference.replica.text_limit + 10:
        caption += " and a small red circle 小的红色圆形"
    return caption


def long_within_limit(reference: Reference, seed: int) -> str:
    """A caption of a few tokens under the limit (a long batch-mate that is not cut), made once per seed."""
    key = (reference.replica.name, seed)
    if key not in _LONG:
        _LONG[key] = _long_within_limit(reference, seed)
    return _LONG[key]


_LONG: dict[tuple[str, int], str] = {}


def _long_within_limit(reference: Reference, seed: int) -> str:
    rng = np.random.default_rng(seed)
    words = replicas.ENGLISH + replicas.CHINESE
    caption = ""
    while True:
        longer = (caption + " " + words[rng.integers(len(words))]).strip()
        if reference.token_count(longer) > reference.replica.text_limit - 2:
            return caption
        caption = longer


# -- loading ---------------------------------------------------------------------------------------------------

def test_loads_offline_and_encodes_both_modalities(replica, model, monkeypatch):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # set by conftest: nothing may come from the Hub

    def no_network(*args, **kwargs):
        raise OSError("a model folder must load without the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    Encoder(str(replica.path), device="cpu")  # a second load, with every connection refused
    expected_dim = replicas.HIDDEN if replica.name == "siglip" else replicas.PROJECTION
    assert model.dim == expected_dim
    texts = model.encode_texts(["a red circle", "蓝色的三角形"])
    images = model.encode_images([Image.new("RGB", (40, 30), (200, 30, 30))])
    assert texts.shape == (2, expected_dim) and images.shape == (1, expected_dim)
    assert np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)


# -- vectors equal transformers' own ------------------------------------------------------------------------

def test_caption_vectors_equal_the_reference(replica, model, reference):
    batch = model.encode_texts(SHORT)
    for caption, vector in zip(SHORT, batch):
        assert_close(vector, reference.text(caption), f"{replica.repo}: caption {caption!r} in a batch")
    for caption in SHORT[:2]:
        assert_close(model.encode_texts([caption])[0], reference.text(caption), f"{replica.repo}: {caption!r} alone")


def test_image_vectors_equal_the_reference(replica, model, reference):
    rng = np.random.default_rng(3)
    shapes = ((61, 93), (40, 40), (120, 50))
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in shapes]
    for index, (image, vector) in enumerate(zip(images, model.encode_images(images))):
        assert_close(vector, reference.image(image), f"{replica.repo}: image {index} ({image.size})")


@pytest.mark.parametrize("height, width", [(64, 300), (300, 64), (40, 180), (180, 40), (50, 150)])
def test_images_decoded_by_mmindex_equal_the_reference_whatever_their_shape(replica, model, reference, height, width):
    """Through mmindex's own decoding (as ingest, query and eval do): the whole image reaches a model that
    squashes it (SigLIP, Chinese-CLIP); a centre-cropping model (CLIP) may lose only what its crop drops."""
    import io

    from mmindex.pipeline.ingest.images import decode_image

    rng = np.random.default_rng(height * 1000 + width)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    encoded = io.BytesIO()
    image.save(encoded, format="PNG")
    decoded = decode_image(encoded.getvalue(), model.image_size, center_crop=model.center_crop)
    assert_close(model.encode_images([decoded])[0], reference.image(image),
                 f"{replica.repo}: a {width}x{height} image decoded by mmindex")


# -- a caption's vector does not depend on its batch ----------------------------------------------------------

captions = st.one_of(
    st.lists(st.sampled_from(replicas.ENGLISH + replicas.CHINESE), min_size=1, max_size=4).map(" ".join),
    st.text(st.characters(whitelist_categories=("Lu", "Ll", "Lo", "Nd")), min_size=1, max_size=6),
    st.text(st.sampled_from("红绿蓝黄圆形三角星的一个小大"), min_size=1, max_size=8),
)


@PROPERTY
@given(caption=captions)
@example(caption="蓝色的三角形")
@example(caption="x")
def test_caption_vector_does_not_depend_on_its_batch(replica, model, reference, caption):
    from hypothesis import assume

    assume(caption.strip() and reference.token_count(caption) <= replica.text_limit)
    mates = [long_within_limit(reference, seed) for seed in (1, 2)]
    alone = model.encode_texts([caption])[0]
    together = model.encode_texts([mates[0], caption, mates[1]])[1]
    assert_close(together, alone, f"{replica.repo}: {caption!r} alone vs between two long captions")


# -- over-long captions: cut at the limit, flagged ----------------------------------------------------------

def test_over_long_caption_is_cut_at_the_limit_and_flagged(replica, model, reference):
    long = over_long(reference)
    assert reference.token_count(long) > replica.text_limit
    vectors = model.encode_texts(["a red circle", long])  # must not raise
    assert_close(vectors[1], reference.text(long, truncate=True),
                 f"{replica.repo}: an over-long caption vs its truncation to {replica.text_limit} tokens")
    assert_close(vectors[0], reference.text("a red circle"), f"{replica.repo}: its short batch-mate")
    assert model.captions_too_long(["a red circle", long]) == [False, True]


def test_flag_boundary_is_the_model_limit(replica, model, reference):
    at_limit = fill_to(reference, replica.text_limit)
    one_more = fill_to(reference, replica.text_limit + 1)
    assert model.captions_too_long([at_limit, one_more]) == [False, True]


texts = st.one_of(
    st.lists(st.sampled_from(replicas.ENGLISH + replicas.CHINESE), min_size=1, max_size=40).map(" ".join),
    st.lists(st.sampled_from(replicas.CHINESE), min_size=1, max_size=20).map("".join),
    st.text(st.characters(whitelist_categories=("Lu", "Ll", "Lo", "Nd", "Po", "Zs")), max_size=80),
    st.integers(1, 40).map(lambda n: " ".join(["a"] * n)),
)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(batch=st.lists(texts, min_size=1, max_size=10))
def test_captions_too_long_agrees_with_a_tokenizing_oracle(replica, model, reference, batch):
    expected = [reference.token_count(text) > replica.text_limit for text in batch]
    assert model.captions_too_long(batch) == expected, (
        f"{replica.repo}: token counts {[reference.token_count(t) for t in batch]}, limit {replica.text_limit}")


# -- ingest and query through the CLI ---------------------------------------------------------------------------

def _ingest(cli, data, replica, collection="r"):
    result = cli("ingest", data, "-c", collection, "--model", replica.path, "--device", "cpu", "--batch-size", "8",
                 "--json", "-q")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_ingest_then_query(replica, cli, tmp_path):
    (path,) = write_sample(tmp_path / "data", rows=20, seed=5, width=48, height=40)
    summary = _ingest(cli, tmp_path / "data", replica)
    assert (summary["read"], summary["upserted"], summary["rejected"]) == (20, 20, 0), summary
    first = pq.read_table(path).slice(0, 1).to_pylist()[0]
    result = cli("query", first["caption"], "蓝色的三角形", "-c", "r", "--target", "text", "--json", "-k", "3")
    assert result.exit_code == 0, result.output
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert [hit["query"]["text"] for hit in hits] == [first["caption"]] * 3 + ["蓝色的三角形"] * 3
    # A stored caption's own text finds it: ingest and query embed captions the same way.
    assert hits[0]["payload"]["id"] == first["id"] and hits[0]["score"] > 0.999


def test_ingest_writes_and_flags_an_over_long_caption(replica, cli, tmp_path, reference):
    data = tmp_path / "data"
    (path,) = write_sample(data, rows=20, seed=6, width=48, height=40)
    table = pq.read_table(path)
    captions = table.column("caption").to_pylist()
    long = over_long(reference)
    captions[7] = long
    table = table.set_column(table.schema.get_field_index("caption"), "caption", [captions])
    pq.write_table(table, path)
    summary = _ingest(cli, data, replica)
    assert (summary["upserted"], summary["rejected"], summary["truncated_captions"]) == (20, 0, 1), summary
    result = cli("query", long, "-c", "r", "--target", "text", "--json", "-k", "1")
    assert result.exit_code == 0, result.output
    hit = json.loads(result.stdout.splitlines()[0])
    assert hit["payload"]["id"] == table.column("id")[7].as_py()
    assert hit["payload"]["_caption_truncated"] is True


# -- the text-only model -------------------------------------------------------------------------------------

def test_text_only_model_is_refused_as_the_main_model(replica_folders, cli, tmp_path):
    text_model = replica_folders("multilingual-text")
    with pytest.raises(MmindexError, match="image"):
        Encoder(str(text_model.path), device="cpu")
    write_sample(tmp_path / "data", rows=4, seed=1, width=32, height=32)
    result = cli("ingest", tmp_path / "data", "-c", "t", "--model", text_model.path, "--device", "cpu", "-q")
    assert result.exit_code == 1
    assert "image" in result.stderr and "Traceback" not in result.output


def test_multilingual_replica_maps_into_the_clip_replica_space(replica_folders):
    """The replica itself: a text model whose vectors have the CLIP replica's size, loadable as the Hub one."""
    from sentence_transformers import SentenceTransformer

    text_model = SentenceTransformer(str(replica_folders("multilingual-text").path), device="cpu")
    clip = Encoder(str(replica_folders("st-clip").path), device="cpu")
    assert text_model.get_embedding_dimension() == clip.dim
    assert text_model.encode(["蓝色的三角形", "a blue triangle"]).shape == (2, clip.dim)


# -- the load-time check refuses what it would embed wrongly (the check has teeth) ---------------------------

def test_load_check_refuses_batch_dependent_padding(replica_folders, monkeypatch):
    """Without the SigLIP padding rule, SigLIP's vectors would depend on batch-mates: refused at load, not used."""
    from mmindex.pipeline.models import st_model
    from mmindex.errors import ModelError

    monkeypatch.setattr(st_model, "FIXED_LENGTH_TEXT", {})
    with pytest.raises(ModelError, match="depends on the other captions in its batch"):
        Encoder(str(replica_folders("siglip").path), device="cpu")


def test_load_check_refuses_a_model_with_no_known_limit(replica_folders, monkeypatch):
    """Without a limit, Chinese-CLIP fails on an over-long caption: refused at load with the reason."""
    from mmindex.pipeline.models import st_model
    from mmindex.pipeline.models.backend import TextRule
    from mmindex.errors import ModelError

    monkeypatch.setattr(st_model, "text_rule", lambda module: TextRule(None, "longest", "none"))
    with pytest.raises(ModelError, match="fails instead of being cut"):
        Encoder(str(replica_folders("chinese-clip").path), device="cpu")


def test_load_check_refuses_vectors_unlike_the_reference(replica_folders, monkeypatch):
    """A preprocessing that differs from the model's own (here: images not normalised) is refused at load."""
    from mmindex.pipeline.models import st_model
    from mmindex.errors import ModelError

    original = st_model.SentenceTransformerModel.preprocess_images

    def unnormalised(self, images):
        features = original(self, images)
        features["pixel_values"] = features["pixel_values"] * 0.5
        return features

    monkeypatch.setattr(st_model.SentenceTransformerModel, "preprocess_images", unnormalised)
    with pytest.raises(ModelError, match="image vectors differ from the model's reference"):
        Encoder(str(replica_folders("openai-clip").path), device="cpu")
