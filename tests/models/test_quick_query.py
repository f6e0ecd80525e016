"""The fast query path (pipeline/models/quick.py): ONNX Runtime + tokenizers from a query bundle, no torch.

Its vectors are the model family's own (transformers' ``get_*_features`` with its processor) for any
caption — property-tested over mixed scripts, whitespace, emoji and over-long captions, alone and in
batches — and for images of any shape; ``mmindex query`` answers exactly as the full path does, without
importing torch; and whenever the bundle no longer describes the model (a changed file, a damaged
bundle, another tokenizer, another precision or model), the full path runs instead.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from helpers import replicas
from mmindex.pipeline.models import quick
from mmindex.pipeline.models.identity import model_fingerprint, racy
from mmindex.pipeline.models.bundle import write_bundle
from mmindex.pipeline.models.onnx_model import OnnxModel
from mmindex.pipeline.ingest.sample import write_sample
from helpers.reference import Reference

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'mmindex[onnx]')")

TOLERANCE = 1e-4
PROPERTY = settings(max_examples=15, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# -- the bundle's vectors against the family's reference --------------------------------------------------------

@pytest.fixture(scope="module", params=["st-clip", "openai-clip", "chinese-clip"])
def family(request, tmp_path_factory):
    """(replica, its reference, the quick encoder from its bundle) — bundles are written by the ONNX backend."""
    replica = replicas.WRITERS[request.param](tmp_path_factory.mktemp("quick") / request.param, seed=3)
    settled(replica.path)
    write_bundle(OnnxModel(str(replica.path), "cpu"))
    encoder = quick.open_bundle(str(replica.path), "fp32", model_fingerprint(str(replica.path)))
    assert encoder is not None, f"{replica.repo}: no query bundle was written"
    return replica, Reference(replica), encoder


def settled(folder) -> None:
    """Date a just-written model's files a minute back: files younger than 2 s get no bundle yet (their
    size and time could still change unseen), and the export may come from the cache in well under 2 s."""
    import time

    past = time.time_ns() - 60 * 10**9
    for root, _, files in os.walk(folder):
        for name in files:
            os.utime(os.path.join(root, name), ns=(past, past))


captions = st.one_of(
    st.lists(st.sampled_from(replicas.ENGLISH + replicas.CHINESE), min_size=1, max_size=60).map(" ".join),
    st.text(st.characters(whitelist_categories=("Lu", "Ll", "Lo", "Nd", "Po", "Zs", "So", "Mn")), min_size=1,
            max_size=40),
    st.text(st.sampled_from("红绿蓝黄圆形三角星的一个小大 \t\n"), min_size=1, max_size=30),
).filter(lambda text: text.strip())


@PROPERTY
@given(batch=st.lists(captions, min_size=1, max_size=6))
@example(batch=["蓝色的三角形"])
@example(batch=["a red circle", " ".join(["a large purple ring"] * 40)])
@example(batch=["A  Dog's\tday — déjà vu 🐕", "x"])
def test_caption_vectors_equal_the_reference(family, batch):
    replica, reference, encoder = family
    got = encoder.encode_texts(batch)
    for text, vector in zip(batch, got):
        want = reference.text(text, truncate=True)
        difference = float(np.abs(vector - want).max())
        assert difference <= TOLERANCE, f"{replica.repo}: {text!r}: max difference {difference:.3g}"


@pytest.mark.parametrize("size", [(20, 20), (61, 93), (200, 31), (31, 240), (500, 375)])
def test_image_vectors_equal_the_reference(family, size):
    replica, reference, encoder = family
    if encoder.image_steps is None:  # Chinese-CLIP's processor is not CLIP's: its image queries take the full path
        assert replica.name == "chinese-clip"
        assert quick.open_bundle(str(replica.path), "fp32", encoder.fingerprint, images=True) is None
        return
    rng = np.random.default_rng(size[0])
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    difference = float(np.abs(encoder.encode_images([image])[0] - reference.image(image)).max())
    assert difference <= TOLERANCE, f"{replica.repo}: {size}: max difference {difference:.3g}"


def test_siglip_has_no_bundle_and_says_why(tmp_path, caplog):
    """SigLIP's SentencePiece tokenizer has no tokenizers form here: its queries take the full path."""
    replica = replicas.write_siglip(tmp_path / "siglip")
    with caplog.at_level("INFO", logger="mmindex.quick"):
        write_bundle(OnnxModel(str(replica.path), "cpu"))
        assert quick.open_bundle(str(replica.path), "fp32", model_fingerprint(str(replica.path))) is None
    assert "tokenizer" in caplog.text


# -- the CLI: same answers, no torch ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def collection(tmp_path_factory, tiny_model):
    """A store ingested with the default backend (ONNX Runtime on the CPU, which writes the query bundle)."""
    from click.testing import CliRunner

    from mmindex.pipeline.cli import main

    base = tmp_path_factory.mktemp("quick-cli")
    write_sample(base / "data", rows=40, seed=5, width=48, height=40, image_kind="path")
    result = CliRunner().invoke(main, ["ingest", str(base / "data"), "-c", "shapes", "--data-dir",
                                       str(base / "store"), "--model", tiny_model, "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    return base


def run_query(base, *args, env=None, check_torch=True):
    """``mmindex query`` in a fresh process (so imports count); its JSON lines and whether torch was imported."""
    script = textwrap.dedent(f"""
        import json, sys
        from mmindex.pipeline.cli import main
        try:
            main({["query", "--data-dir", str(base / "store"), "-c", "shapes", "--json", *map(str, args)]!r})
        except SystemExit as exit:
            code = exit.code
        print(json.dumps({{"torch": "torch" in sys.modules, "code": code}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
    lines = done.stdout.strip().splitlines()
    status = json.loads(lines[-1])
    return [json.loads(line) for line in lines[:-1]], status, done.stderr


@pytest.mark.parametrize("query", [["a blue triangle", "蓝色的三角形"], ["--image", "data/images/shape-0000003.jpg"],
                                   ["a red circle", "--target", "both", "--where", "year >= 2020", "-k", "7"]])
def test_quick_query_answers_like_the_full_path_without_torch(collection, query):
    query = [str(collection / q) if q.startswith("data/") else q for q in query]
    fast, status, stderr = run_query(collection, *query)
    assert status == {"torch": False, "code": 0}, stderr
    full, status, stderr = run_query(collection, *query, env={"MMINDEX_QUICK_QUERY": "0"})
    assert status == {"torch": True, "code": 0}, stderr
    assert [(hit["query"], hit["id"]) for hit in fast] == [(hit["query"], hit["id"]) for hit in full]
    assert np.allclose([hit["score"] for hit in fast], [hit["score"] for hit in full], atol=1e-4)


def bundle_of(tiny_model):
    index = json.loads(quick.index_path(os.path.abspath(tiny_model), "fp32").read_text())
    return index, quick.read_json(quick.export_folder(index["cache_dir"]) / quick.BUNDLE)


def test_options_the_fast_path_does_not_run_take_the_full_path(collection):
    for options in (["--backend", "torch"], ["--device", "cpu", "--backend", "torch"]):
        _, status, stderr = run_query(collection, "a red circle", *options)
        assert status == {"torch": True, "code": 0}, stderr
    _, status, stderr = run_query(collection, "a red circle", "--model-precision", "int8")
    assert status["code"] != 0 and "precision" in stderr  # the full path's refusal, as before


@pytest.mark.parametrize("damage", ["tokenizer", "tokenizer vocabulary", "probe ids", "bundle json", "model file",
                                    "index", "index fields", "weights in place",
                                    "weights in place, dated back"])
def test_a_bundle_that_no_longer_holds_falls_back_to_the_full_path(collection, tiny_model, tmp_path, damage,
                                                                   monkeypatch):
    """Each damage on a copy of the model and its cache: the query still answers right, by the full path,
    which writes a fresh bundle; the next query is fast again. The first open records its passed probes
    (probe_stamp.py), so each damage is also one that record must not hide."""
    import shutil

    from mmindex.pipeline.models import probe_stamp

    monkeypatch.setattr(probe_stamp, "racy", lambda _: False)  # files just written count as settled: stamped
    monkeypatch.setenv("MMINDEX_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    write_bundle(OnnxModel(str(model), "cpu"))  # bundle + index under the new cache
    index = json.loads(quick.index_path(str(model), "fp32").read_text())
    folder = str(quick.export_folder(index["cache_dir"]))
    fingerprint = model_fingerprint(str(model))
    assert quick.open_bundle(str(model), "fp32", fingerprint) is not None
    assert probe_stamp.stamp_holds(Path(folder), json.loads(Path(folder, "manifest.json").read_text()), False)
    if damage == "tokenizer":
        path = os.path.join(folder, quick.TOKENIZER)
        text = json.loads(open(path, encoding="utf-8").read())
        text["normalizer"] = None  # no lower-casing: other ids for capitals
        open(path, "w", encoding="utf-8").write(json.dumps(text))
    elif damage == "tokenizer vocabulary":  # two words the probes never use swap ids: only the hash shows it
        path = os.path.join(folder, quick.TOKENIZER)
        text = json.loads(open(path, encoding="utf-8").read())
        vocab = text["model"]["vocab"]
        words = sorted(vocab, key=vocab.get)[-2:]  # the last merges: no probe caption uses them
        vocab[words[0]], vocab[words[1]] = vocab[words[1]], vocab[words[0]]
        open(path, "w", encoding="utf-8").write(json.dumps(text))
    elif damage.startswith("weights in place"):  # same size, other bytes
        path = os.path.join(folder, "text.onnx.data")
        before = os.stat(path)
        data = bytearray(open(path, "rb").read())
        middle = len(data) // 2  # inside the layers every token goes through (the first bytes: unused token rows)
        data[middle:middle + 400] = bytes(400)
        open(path, "wb").write(data)
        if damage.endswith("dated back"):  # the export's own size and time checks pass: only the probes tell
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    elif damage == "index fields":
        index_file = quick.index_path(str(model), "fp32")
        index_file.write_text(json.dumps({**json.loads(index_file.read_text()), "cache_dir": None}))
    elif damage == "probe ids":
        path = os.path.join(folder, quick.BUNDLE)
        bundle = json.loads(open(path, encoding="utf-8").read())
        bundle["text"]["probe_features"]["input_ids"][0][1] += 1
        open(path, "w", encoding="utf-8").write(json.dumps(bundle))
    elif damage == "bundle json":
        open(os.path.join(folder, quick.BUNDLE), "w").write("{not json")
    elif damage == "model file":
        config = model / "config.json"
        config.write_text(config.read_text() + "\n")
        os.utime(config, ns=(0, 10**18))
    elif damage == "index":
        quick.index_path(str(model), "fp32").write_text("[]")
    assert quick.open_bundle(str(model), "fp32", fingerprint) is None
    if damage != "model file":
        write_bundle(OnnxModel(str(model), "cpu"))  # what the full path of the next query does
        assert quick.open_bundle(str(model), "fp32", fingerprint) is not None


def test_another_model_in_the_recorded_folder_is_not_taken_for_it(collection, tiny_model):
    index, _ = bundle_of(tiny_model)
    assert quick.open_bundle(tiny_model, "fp32", "sha256:" + "0" * 64) is None
    assert quick.open_bundle(tiny_model, "fp32", index["fingerprint"]) is not None


def test_hub_models_are_found_in_the_hugging_face_cache(tmp_path, monkeypatch):
    """A Hub id resolves to its snapshot in the local cache, as sentence-transformers loads it."""
    hub = tmp_path / "hub"
    snapshot = hub / "models--sentence-transformers--clip-ViT-B-32" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "modules.json").write_text("[]")
    (hub / "models--sentence-transformers--clip-ViT-B-32" / "refs").mkdir()
    (hub / "models--sentence-transformers--clip-ViT-B-32" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(hub))
    assert quick.model_folder("clip-ViT-B-32") == str(snapshot)
    assert quick.model_folder("sentence-transformers/clip-ViT-B-32") == str(snapshot)
    assert quick.model_folder("someone/not-cached") is None
    assert quick.model_folder("../no/such/folder") is None


def test_numpy_pixels_equal_the_processor(tiny_model):
    """The fast path's pixels (numpy) against the model's own CLIP processor (transformers)."""
    from mmindex.pipeline.models.st_model import SentenceTransformerModel, clip_pixels

    model = SentenceTransformerModel(tiny_model, "cpu")
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((7, 300), (300, 7), (50, 50))]
    images.append(images[0].convert("L").convert("RGB"))
    want = model.st.preprocess(images)["pixel_values"].float().numpy()
    assert float(np.abs(clip_pixels(images, model.image_steps) - want).max()) < 1e-5


def test_a_text_the_towers_fail_on_is_named_and_the_others_answer(collection, tiny_model, monkeypatch):
    """As on the full path (test_poison_inputs.py): one failing query text, one error naming it, no traceback."""
    from mmindex.errors import EncodeError

    index, _ = bundle_of(tiny_model)
    encoder = quick.open_bundle(tiny_model, "fp32", index["fingerprint"])
    poison = encoder.tokenizer.encode("purple", add_special_tokens=False).ids[0]
    real = quick.run_towers

    def run(session, features, *args):
        if (features.get("input_ids", np.zeros(1)) == poison).any():
            raise IndexError("index out of range in self")
        return real(session, features, *args)

    monkeypatch.setattr(quick, "run_towers", run)
    with pytest.raises(EncodeError, match="the model failed on text 'a purple ring'.*IndexError") as caught:
        encoder.encode_texts(["a red circle", "a purple ring", "a blue star"])
    assert set(caught.value.failures) == {1}
    good = encoder.encode_texts(["a red circle", "a blue star"])
    assert np.abs(caught.value.vectors[[0, 2]] - good).max() < 1e-6


def test_a_model_folder_with_times_in_the_future_gets_a_bundle(tiny_model, tmp_path, monkeypatch):
    """Clock skew or an unpacked archive: only times within 2 s of now are too fresh to trust."""
    import shutil
    import time

    monkeypatch.setenv("MMINDEX_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    future = time.time_ns() + 86_400 * 10**9
    os.utime(model / "config.json", ns=(future, future))
    assert not racy(future) and racy(time.time_ns())
    write_bundle(OnnxModel(str(model), "cpu"))
    assert quick.open_bundle(str(model), "fp32", model_fingerprint(str(model))) is not None


@pytest.mark.parametrize("value", ["0", "false", "No", "off"])
def test_the_fast_path_can_be_turned_off(collection, value):
    _, status, stderr = run_query(collection, "a red circle", env={"MMINDEX_QUICK_QUERY": value})
    assert status == {"torch": True, "code": 0}, stderr


def test_log_level_says_why_the_fast_path_did_not_run(collection, tmp_path):
    """MMINDEX_LOG_LEVEL=INFO: the reason is on stderr (here: an empty cache, so no bundle yet)."""
    _, status, stderr = run_query(collection, "a red circle",
                                  env={"MMINDEX_LOG_LEVEL": "INFO", "MMINDEX_CACHE": str(tmp_path / "empty")})
    assert status["code"] == 0 and "no fast query path" in stderr and "no bundle yet" in stderr


def test_an_unwritable_cache_runs_in_torch_with_a_warning(collection, tmp_path):
    """auto picks ONNX Runtime for speed; a cache it cannot write is not worth a failure: auto runs in torch, and
    --backend onnx exports into a temporary folder for the run; each says so once."""
    (tmp_path / "afile").write_text("")
    env = {"MMINDEX_CACHE": str(tmp_path / "afile" / "cache")}
    hits, status, stderr = run_query(collection, "a red circle", env=env)
    assert status == {"torch": True, "code": 0} and hits, stderr
    assert "runs in torch" in stderr and "MMINDEX_CACHE" in stderr and "Traceback" not in stderr
    assert stderr.count("cannot be written") == 1, stderr
    onnx_hits, status, stderr = run_query(collection, "a red circle", "--backend", "onnx", env=env)
    assert status["code"] == 0 and "Traceback" not in stderr, stderr
    assert stderr.count("cannot be written") == 1 and "temporary folder" in stderr, stderr
    assert [hit["id"] for hit in onnx_hits] == [hit["id"] for hit in hits]


def test_another_model_is_refused_before_it_is_exported(collection, tmp_path):
    from mmindex.pipeline.training.scratch import build_scratch_model

    other = build_scratch_model(tmp_path / "other", size="tiny")
    cache = tmp_path / "cache"
    _, status, stderr = run_query(collection, "a red circle", "--model", other, env={"MMINDEX_CACHE": str(cache)})
    assert status["code"] == 1 and "holds vectors of model" in stderr, stderr
    assert not (cache / "onnx").exists()  # refused by fingerprint, before any export


def test_a_cache_moved_or_copied_whole_uses_its_own_export(tiny_model, tmp_path, monkeypatch):
    """The index names its export relative to the cache root: a copy under another MMINDEX_CACHE reads the copy's
    export, not the original's, and still does once the original is gone (a moved cache)."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    monkeypatch.setenv("MMINDEX_CACHE", str(tmp_path / "first"))
    write_bundle(OnnxModel(str(model), "cpu"))
    fingerprint = model_fingerprint(str(model))
    assert quick.open_bundle(str(model), "fp32", fingerprint) is not None
    shutil.copytree(tmp_path / "first", tmp_path / "second")  # times kept, as cp -a and mv keep them
    monkeypatch.setenv("MMINDEX_CACHE", str(tmp_path / "second"))
    copied = quick.open_bundle(str(model), "fp32", fingerprint)
    assert copied is not None and copied.cache_dir.is_relative_to(tmp_path / "second")
    shutil.rmtree(tmp_path / "first")
    moved = quick.open_bundle(str(model), "fp32", fingerprint)
    assert moved is not None and moved.encode_texts(["a red circle"]).shape == (1, moved.dim)


def test_a_query_with_control_characters_embeds_as_the_stored_caption(collection, tiny_model):
    index, _ = bundle_of(tiny_model)
    fast = quick.open_bundle(tiny_model, "fp32", index["fingerprint"])
    got, want = fast.encode_texts(["\u0000a red\u0085circle\u2028", "a red circle"])
    assert float(np.abs(got - want).max()) < 1e-5
