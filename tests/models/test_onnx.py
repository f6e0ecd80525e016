"""The ONNX Runtime backend (pipeline/models/onnx_model.py): its vectors are torch's within the issue's bar (1 - cosine
≤ 1e-3), whatever the batch, with over-long captions cut; the towers are exported once per model and reused;
a broken cache is rebuilt, an export off the bar is refused, and a killed export leaves no cache."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from helpers import replicas
from mmindex.pipeline.models import onnx_model
from mmindex.pipeline.models.backend import check_backend
from mmindex.errors import ModelError
from mmindex.pipeline.models.bundle import write_bundle
from mmindex.pipeline.models.onnx_cache import COSINE_BAR, MAX_ABS_FP32
from mmindex.pipeline.models.onnx_model import OnnxModel

needs_runtime = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                                   reason="the onnx extra is not installed (pip install 'mmindex[onnx]')")
BAR = COSINE_BAR["fp32"]
CAPTIONS = ["a red circle", "蓝色的三角形", "x", "A small Green STAR, top-left!"]


def images(*sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


def encode(backend, items, modality):
    """mmindex's own path through a backend (as ``Encoder._encoder_of``): preprocess, embed, normalise."""
    import torch

    features = backend.preprocess_texts(items) if modality == "text" else backend.preprocess_images(items)
    with torch.inference_mode():
        vectors = backend.embed(dict(features, modality=modality), modality).float()
    return torch.nn.functional.normalize(vectors, dim=1).numpy()


def worst_cosine_gap(got, expected):
    return float(1 - (np.asarray(got, np.float64) * np.asarray(expected, np.float64)).sum(axis=1).min())


def long_caption(backend):
    return " ".join(["a large purple ring at the top on a dark background"] * (backend.text_rule.max_length // 4 + 4))


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def tiny_onnx(tiny_model, cache_root):
    return OnnxModel(tiny_model, "cpu", threads=1, cache_root=cache_root)


# -- vectors ------------------------------------------------------------------------------------------------

@needs_runtime
def test_vectors_are_torchs_within_the_bar(tiny_onnx, encoder):
    assert tiny_onnx.exported
    probes = images((61, 93), (240, 200), (32, 32), (17, 300))
    assert worst_cosine_gap(encode(tiny_onnx, probes, "image"), encoder.encode_images(probes)) <= BAR
    texts = CAPTIONS + [long_caption(tiny_onnx)]
    assert worst_cosine_gap(encode(tiny_onnx, texts, "text"), encoder.encode_texts(texts)) <= BAR


@needs_runtime
def test_passes_mmindex_load_check(tiny_onnx):
    """The check Encoder runs on every backend, at this backend's tolerance: the export's own coordinate bar for fp32
    (onnx_cache.MAX_ABS_FP32, set from measured noise)."""
    encoder = lambda items, modality: encode(tiny_onnx, items, modality)  # noqa: E731
    assert tiny_onnx.tolerance == MAX_ABS_FP32
    check_backend(tiny_onnx, "tiny", encoder, tiny_onnx.tolerance)


@needs_runtime
def test_a_vector_does_not_depend_on_its_batch(tiny_onnx):
    probes = images((61, 93), (240, 200), (32, 32), (300, 17), (50, 50), seed=3)
    alone = np.concatenate([encode(tiny_onnx, [image], "image") for image in probes])
    np.testing.assert_allclose(encode(tiny_onnx, probes, "image"), alone, atol=1e-5)
    texts = CAPTIONS + [long_caption(tiny_onnx)]
    alone = np.concatenate([encode(tiny_onnx, [text], "text") for text in texts])
    np.testing.assert_allclose(encode(tiny_onnx, texts, "text"), alone, atol=1e-5)


caption_words = st.lists(st.sampled_from(["a", "red", "circle", "蓝色的", "three", "small", "STAR", "on", "grass,",
                                           "top-left!", "x"]), min_size=0, max_size=30).map(" ".join)


@needs_runtime
@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(caption_words, min_size=2, max_size=40), chunk=st.integers(1, 20))
def test_captions_sorted_by_length_get_the_vectors_they_get_alone(tiny_onnx, texts, chunk):
    """``onnx_model.by_length`` (fp32 captions sorted by length, each chunk cut to its longest) against a plain
    oracle: each caption run alone, unpadded; rows in the batch's order, any chunk size, ties in length included."""
    session = tiny_onnx.sessions["text"]
    features = tiny_onnx.preprocess_texts(texts)
    got = onnx_model.by_length(session, features, chunk=chunk)
    alone = np.concatenate([onnx_model.run_session(session, tiny_onnx.preprocess_texts([text])) for text in texts])
    assert got.shape == alone.shape
    np.testing.assert_allclose(got, alone, atol=1e-5)
    np.testing.assert_allclose(got, onnx_model.run_session(session, features), atol=1e-5)  # the padded batch


@needs_runtime
def test_a_long_caption_batch_runs_by_length(tiny_onnx, monkeypatch):
    """Past CAPTION_CHUNK captions the fp32 tower runs sorted by length, in chunks no wider than their longest."""
    widths = []
    real = onnx_model.run_session

    def spy(session, features, output=None):
        widths.append((len(features["input_ids"]), features["input_ids"].shape[1]))
        return real(session, features, output)

    texts = [" ".join(["word"] * (i % 9)) or "x" for i in range(onnx_model.CAPTION_CHUNK * 2 + 3)]
    expected = np.concatenate([encode(tiny_onnx, [text], "text") for text in texts])
    monkeypatch.setattr(onnx_model, "run_session", spy)
    got = encode(tiny_onnx, texts, "text")
    np.testing.assert_allclose(got, expected, atol=1e-5)
    chunk = onnx_model.CAPTION_CHUNK
    assert [rows for rows, _ in widths] == [chunk, chunk, 3]
    assert widths[0][1] < widths[-1][1]  # the shortest captions ran without the longest one's padding


@needs_runtime
def test_an_over_long_caption_is_cut_at_the_limit(tiny_onnx, encoder):
    long = long_caption(tiny_onnx)
    assert tiny_onnx.token_counts([long])[0] > tiny_onnx.text_rule.max_length
    cut, longer = encode(tiny_onnx, [long, long + " and a green star in the corner"], "text")
    np.testing.assert_allclose(cut, longer, atol=1e-6)  # what lies past the limit changes nothing
    assert worst_cosine_gap([cut], encoder.encode_texts([long])) <= BAR


@needs_runtime
def test_threads_and_graph_optimisation_are_set(tiny_onnx):
    import onnxruntime

    assert tiny_onnx.threads == 1
    for session in tiny_onnx.sessions.values():
        options = session.get_session_options()
        assert options.intra_op_num_threads == 1
        assert options.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    twin = tiny_onnx.replica("cpu")
    assert twin.sessions["image"] is not tiny_onnx.sessions["image"]
    probes = images((40, 60), (60, 40))
    np.testing.assert_array_equal(encode(twin, probes, "image"), encode(tiny_onnx, probes, "image"))


@needs_runtime
@pytest.mark.parametrize("write", [replicas.write_st_clip, replicas.write_openai_clip], ids=["st-clip", "openai-clip"])
def test_replicas_of_hub_clip_folders(write, tmp_path, cache_root):
    replica = write(tmp_path / "model")
    model = OnnxModel(str(replica.path), "cpu", cache_root=cache_root)
    encoder = lambda items, modality: encode(model, items, modality)  # noqa: E731
    check_backend(model, replica.name, encoder, model.tolerance)
    probes = images((61, 93), (24, 24))
    assert worst_cosine_gap(encoder(probes, "image"), model.reference(probes, "image")) <= BAR
    assert worst_cosine_gap(encoder(CAPTIONS, "text"), model.reference(CAPTIONS, "text")) <= BAR


# -- the cache ----------------------------------------------------------------------------------------------

def export_fails(*args, **kwargs):
    raise AssertionError("exported again")


@needs_runtime
def test_a_second_load_reuses_the_export(tiny_onnx, tiny_model, cache_root, monkeypatch):
    folder = tiny_onnx.cache_dir
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    monkeypatch.setattr(OnnxModel, "_export", export_fails)
    again = OnnxModel(tiny_model, "cpu", cache_root=cache_root)
    assert not again.exported and again.cache_dir == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    probes = images((61, 93), (32, 32))
    np.testing.assert_allclose(encode(again, probes, "image"), encode(tiny_onnx, probes, "image"), atol=1e-6)


@needs_runtime
def test_the_cache_lies_under_mmindex_cache(tiny_onnx, tiny_model, cache_root, monkeypatch):
    monkeypatch.setenv("MMINDEX_CACHE", str(cache_root))
    monkeypatch.setattr(OnnxModel, "_export", export_fails)
    model = OnnxModel(tiny_model, "cpu")
    assert model.cache_dir == tiny_onnx.cache_dir
    assert model.cache_dir.parent.parent == cache_root / "onnx" and model.cache_dir.name == "fp32"


def copy_cache(model: OnnxModel, root):
    """A copy of ``model``'s cache under another root (a new folder: this process has not checked it)."""
    target = root / "onnx" / model.cache_dir.parent.name / "fp32"
    shutil.copytree(model.cache_dir, target)
    return target


def truncate(folder):
    path = folder / "image.onnx.data"
    path.write_bytes(path.read_bytes()[:100])


def drop_manifest(folder):
    (folder / "manifest.json").unlink()


def garble_manifest(folder):
    (folder / "manifest.json").write_text("{not json")


def drop_probes(folder):
    (folder / "probes.npz").unlink()


def other_weights(folder):
    """Same sizes, other weights: only the check against torch can tell."""
    path = folder / "image.onnx.data"
    size = path.stat().st_size
    noise = np.random.default_rng(0).normal(0, 0.05, size // 4 + 1).astype(np.float32).tobytes()
    path.write_bytes(noise[:size])


class Rebuilt(Exception):
    pass


@needs_runtime
@pytest.mark.parametrize("damage", [truncate, drop_manifest, garble_manifest, drop_probes, other_weights])
def test_a_damaged_cache_is_rebuilt(damage, tiny_onnx, tiny_model, tmp_path, monkeypatch):
    folder = copy_cache(tiny_onnx, tmp_path)
    damage(folder)

    def rebuild(*args, **kwargs):
        raise Rebuilt

    monkeypatch.setattr(OnnxModel, "_export", rebuild)
    with pytest.raises(Rebuilt):
        OnnxModel(tiny_model, "cpu", cache_root=tmp_path)


@needs_runtime
def test_a_rebuilt_cache_replaces_the_damaged_one(tiny_onnx, tiny_model, tmp_path, encoder):
    folder = copy_cache(tiny_onnx, tmp_path)
    other_weights(folder)
    model = OnnxModel(tiny_model, "cpu", cache_root=tmp_path)
    assert model.exported and model.cache_dir == folder
    assert json.loads((folder / "manifest.json").read_text())["export_id"] != \
        json.loads((tiny_onnx.cache_dir / "manifest.json").read_text())["export_id"]
    probes = images((61, 93), (32, 32))
    assert worst_cosine_gap(encode(model, probes, "image"), encoder.encode_images(probes)) <= BAR
    assert [p.name for p in folder.parent.iterdir() if p.is_dir()] == ["fp32"]  # nothing half-written left


@needs_runtime
def test_an_export_off_the_bar_is_refused_and_not_cached(tiny_onnx, tiny_model, tmp_path, monkeypatch):
    """An exporter that writes wrong towers (here: the damaged files of another cache) is caught before publishing."""
    damaged = copy_cache(tiny_onnx, tmp_path / "damaged")
    other_weights(damaged)

    def wrong_export(self, folder):
        for name in ("image.onnx", "image.onnx.data", "text.onnx", "text.onnx.data"):
            shutil.copy(damaged / name, folder / name)
        return {"image": ["pixel_values"], "text": ["input_ids", "attention_mask"]}

    monkeypatch.setattr(OnnxModel, "_export", wrong_export)
    refused = r"image vectors .* differ from torch's by up to 1 - cosine = .*use --backend torch"
    with pytest.raises(ModelError, match=refused):
        OnnxModel(tiny_model, "cpu", cache_root=tmp_path / "fresh")
    assert not any((tmp_path / "fresh").rglob("manifest.json"))
    assert not any(p.name.startswith(".fp32.tmp") for p in (tmp_path / "fresh").rglob("*"))


KILLED_EXPORT = textwrap.dedent("""
    import os, signal, sys
    import torch
    from mmindex.pipeline.models.onnx_model import OnnxModel

    real = torch.onnx.export
    def export_then_die(*args, **kwargs):
        real(*args, **kwargs)  # the image tower is written; the process dies before the text tower
        os.kill(os.getpid(), signal.SIGKILL)
    torch.onnx.export = export_then_die
    OnnxModel(sys.argv[1], "cpu", cache_root=sys.argv[2])
""")


@needs_runtime
def test_a_killed_export_leaves_no_cache(tiny_model, tmp_path, monkeypatch):
    root = tmp_path / "cache"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-c", KILLED_EXPORT, str(tiny_model), str(root)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr[-2000:]
    model_folder = next((root / "onnx").iterdir())
    leftovers = [p for p in model_folder.iterdir() if p.is_dir()]
    assert leftovers and all(p.name.startswith(".fp32.tmp-") for p in leftovers)  # never a cache: no "fp32"
    assert any(leftover.rglob("image.onnx") for leftover in leftovers)

    def export_in_clean_folder(self, folder):
        assert [p for p in model_folder.iterdir() if p.is_dir()] == [folder]  # the killed export's folder is gone
        raise Rebuilt

    monkeypatch.setattr(OnnxModel, "_export", export_in_clean_folder)
    with pytest.raises(Rebuilt):
        OnnxModel(tiny_model, "cpu", cache_root=root)


# -- int8 and installation ----------------------------------------------------------------------------------

@needs_runtime
def test_int8_is_quantised_beside_fp32_within_its_bar(tiny_onnx, tiny_model, cache_root, encoder):
    model = OnnxModel(tiny_model, "cpu", precision="int8", cache_root=cache_root)
    assert model.cache_dir == tiny_onnx.cache_dir.parent / "int8" and model.exported
    assert os.path.getsize(model.cache_dir / "manifest.json") > 0
    probes = images((61, 93), (240, 200))
    assert worst_cosine_gap(encode(model, probes, "image"), encoder.encode_images(probes)) <= COSINE_BAR["int8"]
    check_backend(model, "tiny", lambda items, modality: encode(model, items, modality), model.tolerance)


@pytest.fixture(scope="module")
def tiny_int8(tiny_model, cache_root):
    model = OnnxModel(tiny_model, "cpu", precision="int8", cache_root=cache_root)
    write_bundle(model)  # as the Encoder does after loading it
    return model


int8_batches = st.lists(st.one_of(st.sampled_from(CAPTIONS + ["a large purple ring at the top on a dark background"]),
                                  st.text(st.characters(whitelist_categories=("Lu", "Ll", "Lo", "Nd", "Zs")),
                                          min_size=1, max_size=60)), min_size=2, max_size=8)


@needs_runtime
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(batch=int8_batches)
def test_an_int8_caption_vector_does_not_depend_on_its_batch(tiny_int8, batch):
    """Dynamic int8 quantisation takes activation ranges per run: captions run one at a time, unpadded, so a
    query's vector is the same alone, in a serve micro-batch or among long captions."""
    together = encode(tiny_int8, batch, "text")
    alone = np.concatenate([encode(tiny_int8, [text], "text") for text in batch])
    assert float(np.abs(together - alone).max()) <= 1e-6


@needs_runtime
def test_an_int8_quick_query_equals_the_full_path(tiny_int8, tiny_model):
    from mmindex.pipeline.models import quick

    fingerprint = tiny_int8.fingerprint
    fast = quick.open_bundle(tiny_model, "int8", fingerprint)
    assert fast is not None
    texts = ["a red circle", long_caption(tiny_int8), "蓝色的三角形"]
    np.testing.assert_allclose(fast.encode_texts(texts), encode(tiny_int8, texts, "text"), atol=1e-6)


@needs_runtime
def test_int8_from_a_complete_cache_takes_no_lock(tiny_int8, tiny_model, cache_root, monkeypatch):
    """A cache baked read-only into an image: loading it writes nothing, not even the fp32 export's lock file."""
    def no_lock(folder):
        raise AssertionError(f"locked {folder}")

    monkeypatch.setattr(onnx_model, "export_lock", no_lock)
    assert not OnnxModel(tiny_model, "cpu", precision="int8", cache_root=cache_root).exported


def test_without_onnxruntime_the_error_says_what_to_install(tiny_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime → ImportError
    with pytest.raises(ModelError, match=r"pip install 'mmindex\[onnx\]'"):
        OnnxModel(tiny_model, "cpu")


def test_an_unknown_precision_is_refused(tiny_model):
    pytest.importorskip("onnxruntime")
    with pytest.raises(ModelError, match="fp32, int8"):
        onnx_model.OnnxModel(tiny_model, "cpu", precision="fp16")


# -- through the CLI: --backend, --model-precision recorded in the collection -----------------------------------

def test_cli_int8_collection_records_its_precision_and_refuses_fp32(tiny_model, sample_dir, cli, cache_root,
                                                                   monkeypatch):
    monkeypatch.setenv("MMINDEX_CACHE", str(cache_root))
    result = cli("ingest", sample_dir, "-c", "q8", "--model", tiny_model, "--model-precision", "int8", "--json", "-q")
    assert result.exit_code == 0, result.output
    info = json.loads(cli("info", "-c", "q8", "--json").output)
    assert info["model"] == "tiny-clip"
    assert info["model_precision"] == "int8"
    assert "model        tiny-clip" in cli("info", "-c", "q8").output and "int8" in cli("info", "-c", "q8").output
    # fp32 into the int8 collection: refused before anything is written, naming the precision
    mixed = cli("ingest", sample_dir, "-c", "q8", "--model", tiny_model, "--model-precision", "fp32")
    assert mixed.exit_code != 0 and "int8 vectors" in mixed.output and "--model-precision int8" in mixed.output
    # the same without --model (the collection's model): the message names the precision, not "other files"
    mixed = cli("ingest", sample_dir, "-c", "q8", "--model-precision", "fp32")
    assert mixed.exit_code != 0 and "int8 vectors" in mixed.output and "no longer that model" not in mixed.output
    # a rerun with no precision given takes the collection's: nothing re-embedded
    again = cli("ingest", sample_dir, "-c", "q8", "--model", tiny_model, "--json", "-q")
    assert again.exit_code == 0, again.output
    assert json.loads(again.output.strip().splitlines()[-1])["embedded"] == 0
    # a query with no flags runs the collection's precision (auto → ONNX Runtime) and finds the row's own caption
    hit = cli("query", "a red circle", "-c", "q8", "--target", "text", "--json", "-k", "1")
    assert hit.exit_code == 0, hit.output
    assert cli("query", "a red circle", "-c", "q8", "--backend", "torch").exit_code != 0


def test_cli_backend_onnx_equals_torch_vectors_in_the_store(tiny_model, sample_dir, cli, cache_root, monkeypatch):
    monkeypatch.setenv("MMINDEX_CACHE", str(cache_root))
    assert cli("ingest", sample_dir, "-c", "t", "--model", tiny_model, "--backend", "torch", "-q").exit_code == 0
    assert cli("ingest", sample_dir, "-c", "o", "--model", tiny_model, "--backend", "onnx", "--model-threads", "1",
               "-q").exit_code == 0
    from mmindex.connectors.qdrant_edge import QdrantEdgeStore

    vectors = {}
    for name in ("t", "o"):
        store = QdrantEdgeStore(name, data_dir="mmindex_data")
        points, _ = store.scroll(limit=10_000, with_vectors=True)
        vectors[name] = {p.id: np.asarray(p.vectors["image"]) for p in points}
        store.close()
    assert vectors["t"].keys() == vectors["o"].keys()
    worst = min(float(np.dot(vectors["t"][k], vectors["o"][k])) for k in vectors["t"])
    assert worst >= 1 - BAR


def test_cli_refuses_int8_on_torch_and_open_clip_on_onnx(tiny_model, sample_dir, cli):
    result = cli("ingest", sample_dir, "-c", "x", "--model", tiny_model, "--backend", "torch",
                 "--model-precision", "int8")
    assert result.exit_code != 0 and "use --backend onnx" in result.output
