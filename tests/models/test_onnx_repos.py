"""Ready-made ONNX repositories (pipeline/models/onnx_repos.py): FastEmbed's CLIP pair and transformers.js's layout,
run as they are, without torch.

On replicas with the real file names, graph input/output names and config keys (tests/helpers/onnx_layouts.py): a
process where torch, transformers and sentence-transformers cannot be imported loads them, ingests and queries; its
vectors equal the same weights run through transformers' ``get_image_features`` / ``get_text_features`` (fp32
within 1e-4; the 8-bit variants within the int8 bar); ``--model-precision int8`` takes the 8-bit files; collections
record the folders' fingerprints and later runs check them; layouts mmindex cannot run are refused saying why.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from helpers import onnx_layouts, replicas
from helpers.reference import Reference
from mmindex.errors import ModelError
from mmindex.pipeline.models.encoder import Encoder
from mmindex.pipeline.models.identity import model_fingerprint
from mmindex.pipeline.models.onnx_cache import probe_gap
from mmindex.pipeline.models.onnx_repos import layout_of, ready_made_folder

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'mmindex[onnx]')")

TOLERANCE = 1e-4
PROPERTY = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SIZES = ((40, 60), (33, 33), (90, 20), (7, 300))
TEXTS = ["a red circle", "蓝色的三角形", "A  Dog's\tday — déjà vu 🐕", " ".join(["a large purple ring"] * 30)]


@pytest.fixture(scope="module")
def xenova(tmp_path_factory):
    return onnx_layouts.write_xenova_clip(tmp_path_factory.mktemp("xenova") / "clip-vit-base-patch32", seed=2)


@pytest.fixture(scope="module")
def fastembed(tmp_path_factory):
    """The pair, its text tower taking an attention mask too (FastEmbed feeds one when a graph declares it)."""
    return onnx_layouts.write_fastembed_pair(tmp_path_factory.mktemp("qdrant"), seed=3, text_mask=True)


@pytest.fixture(scope="module")
def references(xenova, fastembed):
    return {"xenova": Reference(xenova.reference), "fastembed": Reference(fastembed.reference)}


def images(seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in SIZES]


# -- without torch, end to end ----------------------------------------------------------------------------------

BLOCKED = textwrap.dedent("""
    import json, sys
    BANNED = ("torch", "transformers", "sentence_transformers")

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BANNED:
                raise ImportError(f"{name} is blocked in this test")

    sys.meta_path.insert(0, Block())
    import numpy as np
    from PIL import Image
    from mmindex.pipeline.cli import main
    from mmindex.pipeline.models.encoder import Encoder
    args = json.loads(sys.argv[1])
    models = ["--model", args["model"]] + (["--text-model", args["text_model"]] if args["text_model"] else [])
    precision = ["--model-precision", args["precision"]]
    main(["ingest", args["data"], "-c", "shapes", "--data-dir", args["store"], "-q", "--report", args["report"],
          *models, *precision], standalone_mode=False)
    main(["query", "a red circle", "-c", "shapes", "--data-dir", args["store"], "--json", "-k", "3"],
         standalone_mode=False)
    encoder = Encoder(args["model"], text_model=args["text_model"], backend="auto", precision=args["precision"])
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in args["sizes"]]
    backends = {id(encoder.backend): encoder.backend, id(encoder.text_backend): encoder.text_backend}.values()
    print(json.dumps({"images": encoder.encode_images(images).tolist(), "texts": encoder.encode_texts(args["texts"]).tolist(),
                      "long": encoder.captions_too_long(args["texts"]),
                      "files": sorted(str(t.path.name) for b in backends for t in b.towers.values()),
                      "imported": [name for name in BANNED if name in sys.modules]}))
""")


@pytest.mark.parametrize("layout, precision, files", [
    ("xenova", "fp32", ["text_model.onnx", "vision_model.onnx"]),
    ("xenova", "int8", ["text_model_quantized.onnx", "vision_model_quantized.onnx"]),
    ("fastembed", "fp32", ["model.onnx", "model.onnx"]),
])
def test_a_ready_made_repository_runs_with_torch_blocked_and_equals_transformers(
        layout, precision, files, xenova, fastembed, references, tmp_path):
    replica = xenova if layout == "xenova" else fastembed
    from mmindex.pipeline.ingest.sample import write_sample

    write_sample(tmp_path / "data", rows=8, seed=6, width=40, height=32)
    args = {"model": str(replica.model), "text_model": str(replica.text_model) if replica.text_model else None,
            "precision": precision, "data": str(tmp_path / "data"), "store": str(tmp_path / "store"),
            "report": str(tmp_path / "report.json"), "sizes": SIZES, "texts": TEXTS}
    done = subprocess.run([sys.executable, "-c", BLOCKED, json.dumps(args)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    answer = json.loads(lines[-1])
    assert answer["imported"] == [] and answer["files"] == files
    assert len([line for line in lines[:-1] if line.startswith("{")]) == 3  # the query's hits, as JSON lines
    assert json.loads((tmp_path / "report.json").read_text())["upserted"] == 8
    reference = references[layout]
    want_images = np.stack([reference.image(image) for image in images()])
    want_texts = np.stack([reference.text(text, truncate=True) for text in TEXTS])
    for got, want in ((answer["images"], want_images), (answer["texts"], want_texts)):
        got = np.asarray(got)
        if precision == "fp32":
            assert float(np.abs(got - want).max()) <= TOLERANCE
        else:
            assert probe_gap(got, want, "int8") is None
    assert answer["long"] == [reference.token_count(t) > replicas.CLIP_POSITIONS for t in TEXTS] == [0, 0, 0, 1]


# -- the vectors, over generated inputs (in this process: the repository's path itself never imports torch) ---

@pytest.fixture(scope="module")
def loaded(xenova, fastembed):
    return {"xenova": Encoder(str(xenova.model), backend="auto"),
            "fastembed": Encoder(str(fastembed.model), text_model=str(fastembed.text_model), backend="auto")}


captions = st.one_of(
    st.lists(st.sampled_from(replicas.ENGLISH + replicas.CHINESE), min_size=1, max_size=40).map(" ".join),
    st.text(st.characters(whitelist_categories=("Lu", "Ll", "Lo", "Nd", "Po", "Zs", "So")), min_size=1, max_size=30),
).filter(lambda text: text.strip())


@PROPERTY
@given(batch=st.lists(captions, min_size=1, max_size=5), layout=st.sampled_from(["xenova", "fastembed"]))
@example(batch=["x", " ".join(["a large purple ring"] * 40)], layout="fastembed")
def test_caption_vectors_equal_transformers_in_any_batch(loaded, references, batch, layout):
    got = loaded[layout].encode_texts(batch)
    for text, vector in zip(batch, got):
        want = references[layout].text(text, truncate=True)
        assert float(np.abs(vector - want).max()) <= TOLERANCE, text


@PROPERTY
@given(width=st.integers(1, 400), height=st.integers(1, 400), layout=st.sampled_from(["xenova", "fastembed"]))
def test_image_vectors_equal_transformers_for_any_shape(loaded, references, width, height, layout):
    image = Image.fromarray(np.random.default_rng(width * height).integers(0, 256, (height, width, 3), dtype=np.uint8))
    got = loaded[layout].encode_images([image])[0]
    assert float(np.abs(got - references[layout].image(image)).max()) <= TOLERANCE


# -- naming them ---------------------------------------------------------------------------------------------

def test_a_hub_id_in_the_hugging_face_cache_is_found(xenova, tmp_path, monkeypatch):
    """``--model Xenova/clip-vit-base-patch32`` with the repository in the local cache: no download, no torch."""
    hub = tmp_path / "hub"
    repo = hub / "models--Xenova--clip-vit-base-patch32"
    shutil.copytree(xenova.model, repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(hub))
    assert ready_made_folder("Xenova/clip-vit-base-patch32") == str(repo / "snapshots" / "abc123")
    encoder = Encoder("Xenova/clip-vit-base-patch32", backend="auto")
    assert (encoder.name, encoder.fingerprint) == ("Xenova/clip-vit-base-patch32", None)  # a Hub id: by name
    assert float(np.abs(encoder.encode_texts(["a red circle"]) - Encoder(str(xenova.model), backend="auto")
                        .encode_texts(["a red circle"])).max()) < 1e-6


def test_collections_record_the_folders_fingerprints_and_later_runs_check_them(fastembed, tmp_path):
    from click.testing import CliRunner

    from mmindex.pipeline.cli import main
    from mmindex.pipeline.config import StoreSettings
    from mmindex.pipeline.ingest.sample import write_sample

    write_sample(tmp_path / "data", rows=4, seed=7, width=40, height=32)
    vision, text = tmp_path / "vision", tmp_path / "text"
    shutil.copytree(fastembed.model, vision)
    shutil.copytree(fastembed.text_model, text)
    report = tmp_path / "report.json"
    ingest = ["ingest", str(tmp_path / "data"), "-c", "pair", "--data-dir", str(tmp_path / "store"), "-q",
              "--report", str(report)]
    result = CliRunner().invoke(main, [*ingest, "--model", str(vision), "--text-model", str(text)])
    assert result.exit_code == 0, result.output
    meta = StoreSettings(collection="pair", data_dir=str(tmp_path / "store")).open().metadata()
    assert (meta["model_fingerprint"], meta["text_model_fingerprint"]) == (model_fingerprint(str(vision)),
                                                                           model_fingerprint(str(text)))
    again = CliRunner().invoke(main, ingest)  # the recorded folders: every row unchanged
    assert again.exit_code == 0, again.output
    assert json.loads(report.read_text())["unchanged"] == 4
    data = bytearray((text / "model.onnx").read_bytes())
    data[-64:] = bytes(64)
    (text / "model.onnx").write_bytes(bytes(data))  # other bytes in the recorded text folder
    changed = CliRunner().invoke(main, ingest)
    assert changed.exit_code != 0 and "no longer that model" in changed.output, changed.output


# -- precisions ---------------------------------------------------------------------------------------------

def test_int8_takes_the_int8_variant_when_there_is_no_quantized_one(xenova, tmp_path):
    folder = tmp_path / "xenova"
    shutil.copytree(xenova.model, folder)
    for stem in ("vision_model", "text_model"):
        os.rename(folder / "onnx" / f"{stem}_quantized.onnx", folder / "onnx" / f"{stem}_int8.onnx")
    encoder = Encoder(str(folder), backend="auto", precision="int8")
    assert sorted(t.path.name for t in encoder.backend.towers.values()) == ["text_model_int8.onnx",
                                                                            "vision_model_int8.onnx"]


def test_a_precision_the_repository_lacks_is_refused_naming_its_files(fastembed):
    with pytest.raises(ModelError, match=r"no int8 ONNX towers .*it holds model\.onnx"):
        Encoder(str(fastembed.model), text_model=str(fastembed.text_model), backend="auto", precision="int8")


# -- what is refused, and why ------------------------------------------------------------------------------------

def test_the_vision_repository_alone_asks_for_its_text_repository(fastembed):
    with pytest.raises(ModelError, match="does not encode text; pass --text-model"):
        Encoder(str(fastembed.model), backend="auto")


def test_backend_torch_is_refused(xenova):
    with pytest.raises(ModelError, match="ready-made ONNX repository .* use --backend onnx or auto"):
        Encoder(str(xenova.model), backend="torch")


def test_jina_clips_image_processor_is_refused_naming_it(xenova, tmp_path):
    """jina-clip-v1's onnx/ follows transformers.js's layout, but its images go through JinaCLIPImageProcessor
    (open_clip's transform, declared through auto_map), whose steps are not CLIP's image processor's."""
    folder = tmp_path / "jina"
    shutil.copytree(xenova.model, folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "auto_map": {"AutoImageProcessor": "jinaai/jina-clip-implementation--processing_clip.JinaCLIPImageProcessor"},
        "fill_color": 0, "image_processor_type": "JinaCLIPImageProcessor", "interpolation": "bicubic",
        "mean": replicas.CLIP_MEAN, "resize_mode": "shortest", "size": 224, "std": replicas.CLIP_STD}))
    with pytest.raises(ModelError, match="JinaCLIPImageProcessor"):
        Encoder(str(folder), backend="auto")


def test_a_graph_without_an_embeds_output_is_refused_naming_its_outputs(xenova, tmp_path):
    import onnx

    folder = tmp_path / "renamed"
    shutil.copytree(xenova.model, folder)
    path = folder / "onnx" / "vision_model.onnx"
    graph = onnx.load(str(path))
    for node in graph.graph.node:
        node.output[:] = ["pooled" if name == "image_embeds" else name for name in node.output]
    for output in graph.graph.output:
        output.name = "pooled" if output.name == "image_embeds" else output.name
    onnx.save(graph, str(path))
    with pytest.raises(ModelError, match=r"outputs are \['pooled', 'last_hidden_state'\]"):
        Encoder(str(folder), backend="auto")


@pytest.mark.parametrize("extra", ["model.safetensors", "modules.json", "pytorch_model.bin"])
def test_a_folder_with_torch_weights_is_not_a_ready_made_repository(xenova, tmp_path, extra):
    folder = tmp_path / "both"
    shutil.copytree(xenova.model, folder)
    assert layout_of(folder) == "transformers.js"
    (folder / extra).write_bytes(b"{}")
    assert layout_of(folder) is None and ready_made_folder(str(folder)) is None


def test_layouts_are_told_apart(xenova, fastembed, tmp_path):
    assert (layout_of(xenova.model), layout_of(fastembed.model), layout_of(fastembed.text_model)) == (
        "transformers.js", "fastembed", "fastembed")
    assert layout_of(xenova.reference.path) is None  # transformers' own folder: torch weights
    assert layout_of(Path(tmp_path)) is None
