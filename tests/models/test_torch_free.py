"""The torch-free run path (pipeline/models/towers.py, chosen in ``Encoder._load_model``): once a model's ONNX export
and query bundle hold, ``mmindex ingest`` and ``mmindex serve`` embed with ONNX Runtime, tokenizers and numpy alone.

Proved here: the import rule (a fresh process ingests, serves /search and /embed, and never imports torch,
transformers or sentence-transformers); its vectors equal the torch path's and the ONNX path's (differential, over
generated captions and image shapes); its collection records are the full path's, so a re-run on the other path
finds every row unchanged; a bundle that no longer holds (a touched model file) falls back to the full path, and
``MMINDEX_TORCH_FREE=0`` turns it off.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from helpers import replicas
from helpers.no_torch import run_cli_without_torch
from mmindex.errors import ModelError
from mmindex.pipeline.ingest.sample import write_sample
from mmindex.pipeline.models import encoder as encoder_module
from mmindex.pipeline.models.encoder import Encoder, gpu_possible, pick_device
from mmindex.pipeline.models.onnx_cache import probe_gap

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'mmindex[onnx]')")

BANNED = ("torch", "transformers", "sentence_transformers")
PROPERTY = settings(max_examples=15, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def settled(folder) -> None:
    """Date a just-copied model's files a minute back (files younger than 2 s get no bundle yet)."""
    past = time.time_ns() - 60 * 10**9
    for root, _, files in os.walk(folder):
        for name in files:
            os.utime(os.path.join(root, name), ns=(past, past))


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_model):
    """A copy of the tiny model whose ONNX export and bundle the first (torch) load wrote."""
    folder = tmp_path_factory.mktemp("torch-free") / "tiny-clip"
    shutil.copytree(tiny_model, folder)
    settled(folder)
    first = Encoder(str(folder), device="cpu", backend="auto")
    assert not getattr(first.backend, "torch_free", False), "the first load exports with torch"
    return str(folder)


@pytest.fixture(scope="module")
def encoders(model):
    """(torch-free, ONNX with torch, torch) encoders of the same model."""
    fast = Encoder(model, device="cpu", backend="auto")
    assert getattr(fast.backend, "torch_free", False), "the bundle written by the first load should hold"
    os.environ["MMINDEX_TORCH_FREE"] = "0"
    try:
        onnx = Encoder(model, device="cpu", backend="auto")
    finally:
        del os.environ["MMINDEX_TORCH_FREE"]
    return fast, onnx, Encoder(model, device="cpu", backend="torch")


# -- the import rule ------------------------------------------------------------------------------------------

DRIVER = textwrap.dedent("""
    import base64, io, json, sys
    from mmindex.pipeline.cli import main
    data, new_data, store, model, report, new_report = sys.argv[1:7]
    main(["ingest", data, "-c", "shapes", "--data-dir", store, "--model", model, "-q", "--report", report],
         standalone_mode=False)
    main(["ingest", new_data, "-c", "fresh", "--data-dir", store, "--model", model, "-q", "--report", new_report],
         standalone_mode=False)
    from PIL import Image
    from fastapi.testclient import TestClient
    from mmindex.pipeline.config import StoreSettings
    from mmindex.pipeline.serve.app import create_app
    from mmindex.pipeline.serve.settings import ServeSettings
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buffer, "PNG")
    image = base64.b64encode(buffer.getvalue()).decode()
    app = create_app(ServeSettings(store=StoreSettings(collection="shapes", data_dir=store)))
    with TestClient(app, raise_server_exceptions=False) as client:
        answers = [client.post("/search", json={"text": "a red circle", "limit": 3}),
                   client.post("/search", json={"image": image, "limit": 3}),
                   client.post("/embed", json={"texts": ["a blue square"], "images": [image]})]
    print(json.dumps({"status": [a.status_code for a in answers], "embed": answers[2].json(),
                      "imported": [name for name in ("torch", "transformers", "sentence_transformers")
                                   if name in sys.modules]}))
""")


def test_ingest_and_serve_import_no_torch_once_the_bundle_holds(model, tmp_path):
    """The torch path fills a collection; a fresh process re-ingests it (every row unchanged), ingests new rows
    and answers /search (text and image) and /embed, with torch, transformers and sentence-transformers never
    imported; the collection's model record is the same whichever path wrote it."""
    from click.testing import CliRunner

    from mmindex.pipeline.cli import main
    from mmindex.pipeline.config import StoreSettings

    write_sample(tmp_path / "data", rows=12, seed=4, width=40, height=32)
    write_sample(tmp_path / "new", rows=6, seed=5, width=40, height=32)
    store = tmp_path / "store"
    result = CliRunner(env={"MMINDEX_TORCH_FREE": "0"}).invoke(
        main, ["ingest", str(tmp_path / "data"), "-c", "shapes", "--data-dir", str(store), "--model", model, "-q"])
    assert result.exit_code == 0, result.output
    before = StoreSettings(collection="shapes", data_dir=str(store)).open().metadata()
    done = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path / "data"), str(tmp_path / "new"), str(store),
                           model, str(tmp_path / "again.json"), str(tmp_path / "new.json")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["imported"] == [], done.stderr[-2000:]
    assert answer["status"] == [200, 200, 200]
    assert answer["embed"]["dim"] == len(answer["embed"]["texts"][0]) == len(answer["embed"]["images"][0])
    again = json.loads((tmp_path / "again.json").read_text())
    assert (again["embedded"], again["unchanged"]) == (0, 12)
    fresh = json.loads((tmp_path / "new.json").read_text())
    assert (fresh["embedded"], fresh["upserted"]) == (6, 6)
    after = StoreSettings(collection="shapes", data_dir=str(store)).open().metadata()
    keys = ("model", "model_fingerprint", "model_precision", "dim", "text_model", "text_model_fingerprint")
    assert {k: after.get(k) for k in keys} == {k: before.get(k) for k in keys}


# -- the vectors ------------------------------------------------------------------------------------------------

captions = st.one_of(
    st.lists(st.sampled_from(replicas.ENGLISH + replicas.CHINESE), min_size=1, max_size=60).map(" ".join),
    st.text(st.characters(whitelist_categories=("Lu", "Ll", "Lo", "Nd", "Po", "Zs", "So")), min_size=1, max_size=40),
).filter(lambda text: text.strip())


@PROPERTY
@given(batch=st.lists(captions, min_size=1, max_size=6))
@example(batch=["a red circle", " ".join(["a large purple ring"] * 40)])
def test_caption_vectors_equal_the_onnx_and_torch_paths(encoders, batch):
    fast, onnx, torch_path = encoders
    got = fast.encode_texts(batch)
    for other in (onnx, torch_path):
        failure = probe_gap(got, other.encode_texts(batch), "fp32")
        assert failure is None, f"{other.backend_name}: {failure}"
    assert fast.captions_too_long(batch) == torch_path.captions_too_long(batch)


@PROPERTY
@given(sizes=st.lists(st.tuples(st.integers(1, 300), st.integers(1, 300)), min_size=1, max_size=4),
       seed=st.integers(0, 2**16))
@example(sizes=[(1, 1), (500, 3)], seed=0)
def test_image_vectors_equal_the_onnx_and_torch_paths(encoders, sizes, seed):
    fast, onnx, torch_path = encoders
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]
    got = fast.encode_images(images)
    for other in (onnx, torch_path):
        failure = probe_gap(got, other.encode_images(images), "fp32")
        assert failure is None, f"{other.backend_name}: {failure}"


def test_the_pipelined_calls_and_records_match_the_full_path(encoders):
    """What ingest's workers call (preprocess → forward) and what a collection records, on both paths."""
    fast, onnx, _ = encoders
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)) for _ in range(3)]
    assert probe_gap(fast.forward(fast.preprocess(images)), onnx.forward(onnx.preprocess(images)), "fp32") is None
    assert fast.encode_each([])[0].shape == (0, fast.dim)
    assert (fast.recorded(), fast.spec(), fast.identity, fast.dim) == (onnx.recorded(), onnx.spec(), onnx.identity,
                                                                       onnx.dim)
    assert (fast.image_size, fast.center_crop, fast.max_text_tokens) == (onnx.image_size, onnx.center_crop,
                                                                         onnx.max_text_tokens)
    assert fast.weight_bytes() > 0


def test_a_cpu_replica_runs_its_own_sessions_and_another_device_is_refused(encoders):
    fast, _, _ = encoders
    twin = fast.replica("cpu")
    assert twin.backend.towers["image"].session is not fast.backend.towers["image"].session
    texts = ["a red circle", "a blue star"]
    assert np.abs(twin.encode_texts(texts) - fast.encode_texts(texts)).max() < 1e-6
    with pytest.raises(ModelError, match="MMINDEX_TORCH_FREE=0"):
        fast.backend.replica("cuda:0")


def test_int8_runs_from_its_own_bundle_with_the_full_paths_vectors(model, monkeypatch):
    """int8 has its export and bundle of its own; captions still run one at a time (batch-independent)."""
    Encoder(model, device="cpu", backend="auto", precision="int8")  # quantises once, writes the int8 bundle
    fast = Encoder(model, device="cpu", backend="auto", precision="int8")
    assert getattr(fast.backend, "torch_free", False) and fast.identity.endswith("+int8")
    monkeypatch.setenv("MMINDEX_TORCH_FREE", "0")
    full = Encoder(model, device="cpu", backend="auto", precision="int8")
    texts = ["a red circle", " ".join(["a large purple ring"] * 20), "x"]
    assert np.abs(fast.encode_texts(texts) - full.encode_texts(texts)).max() < 1e-6
    assert np.abs(fast.encode_texts(texts[:1]) - fast.encode_texts(texts)[:1]).max() < 1e-6
    assert fast.recorded() == full.recorded() and fast.spec() == full.spec()


# -- when it does not run ------------------------------------------------------------------------------------

def test_a_touched_model_file_falls_back_to_the_full_path(tiny_model, tmp_path, caplog):
    """A model file whose time changed: the bundle no longer vouches for the files, so the full path runs (and
    writes a fresh index); the next load is torch-free again."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    settled(folder)
    Encoder(str(folder), device="cpu", backend="auto")  # the export (cached) and the bundle
    assert getattr(Encoder(str(folder), device="cpu", backend="auto").backend, "torch_free", False)
    past = time.time_ns() - 30 * 10**9
    os.utime(folder / "config.json", ns=(past, past))  # same bytes, another time: it might be other bytes
    with caplog.at_level("INFO", logger="mmindex.quick"):
        full = Encoder(str(folder), device="cpu", backend="auto")
    assert not getattr(full.backend, "torch_free", False) and full.backend_name == "onnx"
    assert "files changed" in caplog.text
    assert getattr(Encoder(str(folder), device="cpu", backend="auto").backend, "torch_free", False)


@pytest.mark.parametrize("name", ["MMINDEX_TORCH_FREE", "MMINDEX_QUICK_QUERY"])
def test_the_switch_turns_it_off(model, monkeypatch, name):
    monkeypatch.setenv(name, "off")
    assert not getattr(Encoder(model, device="cpu", backend="auto").backend, "torch_free", False)


@pytest.mark.parametrize("options", [{"backend": "torch"}, {"half": True}])
def test_options_the_torch_free_path_does_not_run_take_the_full_path(model, options):
    assert not getattr(Encoder(model, device="cpu", **{"backend": "auto", **options}).backend, "torch_free", False)


def test_a_separate_text_model_takes_the_full_path(model):
    """One model for both modalities only: a --text-model pair runs as before (the image model's ONNX export)."""
    pair = Encoder(model, device="cpu", backend="auto", text_model=model)
    assert not getattr(pair.backend, "torch_free", False)


# -- the device, without torch ---------------------------------------------------------------------------------

@pytest.mark.parametrize("platform, nodes, expected", [
    ("linux", [], False), ("linux", ["/dev/nvidiactl"], True), ("linux", ["/dev/nvidia0"], True),
    ("linux", ["/dev/kfd"], True), ("linux", ["/dev/dxg"], True), ("darwin", [], True),
])
def test_a_gpu_is_possible_only_where_a_device_node_or_mps_may_be(monkeypatch, platform, nodes, expected):
    monkeypatch.setattr(encoder_module.sys, "platform", platform)
    monkeypatch.setattr(encoder_module.os, "name", "posix")
    monkeypatch.setattr(encoder_module.os.path, "exists", lambda path: path in nodes)
    monkeypatch.setattr(encoder_module.glob, "glob", lambda pattern: [n for n in nodes if n.startswith("/dev/nvidia")
                                                                      and n[len("/dev/nvidia"):].isdigit()])
    assert gpu_possible() is expected


def test_the_cpu_is_chosen_without_torch_where_no_gpu_can_be(monkeypatch):
    monkeypatch.setattr(encoder_module, "gpu_possible", lambda: False)
    monkeypatch.setitem(sys.modules, "torch", None)  # importing torch now raises ImportError
    assert pick_device("auto") == pick_device(None) == pick_device("cpu") == "cpu"
    with pytest.raises(ImportError):
        pick_device("cuda")


@pytest.mark.parametrize("alone, backend, device, half, env, said", [
    (True, "auto", "cpu", False, None, None),
    (False, "auto", "cpu", False, None, "--text-model"),
    (True, "torch", "cpu", False, None, "--backend torch"),
    (True, "auto", "cuda", False, None, "device cuda"),
    (True, "auto", "cpu", True, None, "half precision"),
    (True, "onnx", "cpu", False, "0", "MMINDEX_TORCH_FREE=0"),
])
def test_the_reason_a_model_takes_the_torch_path_is_said(alone, backend, device, half, env, said, monkeypatch):
    """MMINDEX_LOG_LEVEL=INFO says why torch runs (the docs promise "or why not"), in the words of the options."""
    from mmindex.pipeline.models.encoder import torch_path_reason

    monkeypatch.delenv("MMINDEX_TORCH_FREE", raising=False)
    monkeypatch.delenv("MMINDEX_QUICK_QUERY", raising=False)
    if env:
        monkeypatch.setenv("MMINDEX_TORCH_FREE", env)
    reason = torch_path_reason(alone, backend, device, half, "/models/clip")
    assert (reason is None) if said is None else (said in reason), reason
    assert "open_clip" in torch_path_reason(True, "auto", "cpu", False, "open_clip:ViT-B-32/openai")


def test_a_model_that_needs_torch_where_it_cannot_be_imported_is_one_line_not_a_traceback(tiny_model, sample_dir,
                                                                                          tmp_path):
    """No export yet (an empty MMINDEX_CACHE), so the model needs torch; where torch cannot be imported the run
    says so in one line, exit 1, instead of a ModuleNotFoundError traceback."""
    env = dict(os.environ, MMINDEX_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1")
    done = run_cli_without_torch(["ingest", str(sample_dir), "-c", "c", "--data-dir", str(tmp_path / "store"),
                                  "--model", str(tiny_model), "-q"], env)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "needs torch and sentence-transformers" in done.stderr and "blocked in this test" in done.stderr
