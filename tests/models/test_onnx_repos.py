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

from helpers import no_torch, onnx_layouts, replicas
from helpers.reference import Reference
from mmindex.errors import ModelError
from mmindex.pipeline.models.encoder import Encoder
from mmindex.pipeline.models.identity import model_fingerprint
from mmindex.pipeline.models.onnx_cache import probe_gap
from mmindex.pipeline.models.onnx_repos import clip_steps, layout_of, ready_made_folder, text_partner

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

BLOCKED = no_torch.BLOCK + textwrap.dedent("""
    import json
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

MIXED_LENGTHS = [" ".join(replicas.ENGLISH[: 1 + (i * 7) % 23]) for i in range(37)] + ["x", "蓝色"]


@PROPERTY
@given(batch=st.lists(captions, min_size=1, max_size=5), layout=st.sampled_from(["xenova", "fastembed"]))
@example(batch=["x", " ".join(["a large purple ring"] * 40)], layout="fastembed")
@example(batch=MIXED_LENGTHS, layout="fastembed")  # past onnx_model.CAPTION_CHUNK: run sorted by length, in chunks
@example(batch=MIXED_LENGTHS, layout="xenova")  # a text graph without attention_mask: sorted by the tokenizer's
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


def _hub_snapshot(hub: Path, repo: str, revision: str, source: Path) -> None:
    """``source`` laid out as revision ``revision`` of ``repo`` in a Hugging Face cache at ``hub``, made current."""
    folder = hub / f"models--{repo.replace('/', '--')}"
    shutil.copytree(source, folder / "snapshots" / revision)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(revision)


def test_a_newer_revision_of_a_hub_model_in_the_cache_is_refused_not_mixed(xenova, tmp_path, monkeypatch):
    """A Hub id is recorded by name and, once, by the revision its cache snapshot has; a newer download (refs/main
    moved to another snapshot with other weights) is refused for ingest and queries instead of mixing two
    models' vectors in one collection (a reviewer ingested 10 rows of new weights beside 30 old ones, exit 0)."""
    from click.testing import CliRunner

    from mmindex.pipeline.cli import main
    from mmindex.pipeline.config import StoreSettings
    from mmindex.pipeline.ingest.sample import write_sample

    hub = tmp_path / "hub"
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _hub_snapshot(hub, "Xenova/clip-vit-base-patch32", "a" * 40, xenova.model)
    write_sample(tmp_path / "data", rows=4, seed=7, width=40, height=32)
    write_sample(tmp_path / "more", rows=3, seed=8, width=40, height=32)
    store = ["-c", "hub", "--data-dir", str(tmp_path / "store")]
    model = ["--model", "Xenova/clip-vit-base-patch32"]
    first = CliRunner().invoke(main, ["ingest", str(tmp_path / "data"), *store, *model, "-q"])
    assert first.exit_code == 0, first.output
    meta = StoreSettings(collection="hub", data_dir=str(tmp_path / "store")).open().metadata()
    assert (meta["model"], meta.get("model_fingerprint"), meta.get("model_revision")) == (
        "Xenova/clip-vit-base-patch32", None, "a" * 40)
    same = CliRunner().invoke(main, ["ingest", str(tmp_path / "more"), *store, *model, "-q"])
    assert same.exit_code == 0, same.output  # the same revision: accepted
    newer = onnx_layouts.write_xenova_clip(tmp_path / "newer", seed=9)
    _hub_snapshot(hub, "Xenova/clip-vit-base-patch32", "b" * 40, newer.model)
    for args in (["ingest", str(tmp_path / "more"), *store, *model, "-q"], ["query", "a red circle", *store]):
        refused = CliRunner().invoke(main, args)
        assert refused.exit_code != 0 and "revision aaaaaaaaaaaa" in refused.output, refused.output
        assert "Traceback" not in refused.output and f"snapshots/{'a' * 40}" in refused.output
    # the way out the message gives: the recorded revision's snapshot folder, which is that Hub id at that revision
    pinned = str(hub / "models--Xenova--clip-vit-base-patch32" / "snapshots" / ("a" * 40))
    for args in (["ingest", str(tmp_path / "more"), *store, "--model", pinned, "-q"],
                 ["query", "a red circle", *store, "--model", pinned]):
        taken = CliRunner().invoke(main, args)
        assert taken.exit_code == 0, taken.output
    newer_folder = str(hub / "models--Xenova--clip-vit-base-patch32" / "snapshots" / ("b" * 40))
    wrong = CliRunner().invoke(main, ["query", "a red circle", *store, "--model", newer_folder])
    assert wrong.exit_code != 0 and "revision aaaaaaaaaaaa" in wrong.output, wrong.output
    assert "'Xenova/clip-vit-base-patch32'" in wrong.output and "passes the snapshot folder of revision bbbb" in \
        wrong.output, wrong.output


# -- precisions ---------------------------------------------------------------------------------------------

def test_int8_takes_the_int8_variant_when_there_is_no_quantized_one(xenova, tmp_path):
    folder = tmp_path / "xenova"
    shutil.copytree(xenova.model, folder)
    for stem in ("vision_model", "text_model"):
        os.rename(folder / "onnx" / f"{stem}_quantized.onnx", folder / "onnx" / f"{stem}_int8.onnx")
    encoder = Encoder(str(folder), backend="auto", precision="int8")
    assert sorted(t.path.name for t in encoder.backend.towers.values()) == ["text_model_int8.onnx",
                                                                            "vision_model_int8.onnx"]


def test_a_precision_the_repository_lacks_is_refused_naming_its_files(fastembed, xenova, tmp_path):
    with pytest.raises(ModelError, match=r"no int8 ONNX towers \(model\{_quantized\|_int8\|_uint8\}\.onnx\); "
                                         r"it holds model\.onnx"):
        Encoder(str(fastembed.model), text_model=str(fastembed.text_model), backend="auto", precision="int8")
    eight_bit_only = tmp_path / "xenova-int8"  # a transformers.js folder: its own file names, not FastEmbed's
    shutil.copytree(xenova.model, eight_bit_only)
    for name in ("vision_model.onnx", "text_model.onnx"):
        (eight_bit_only / "onnx" / name).unlink()
    with pytest.raises(ModelError, match=r"no fp32 ONNX towers \(onnx/vision_model\.onnx and onnx/text_model\.onnx\)"):
        Encoder(str(eight_bit_only), backend="auto", precision="fp32")


@pytest.mark.parametrize("models", [["--model", "Xenova/clip-vit-base-patch32"],
                                    ["--model", "Qdrant/clip-ViT-B-32-vision", "--text-model", "Qdrant/clip-ViT-B-32-text"],
                                    ["--model", "someone/clip-onnx", "--model-precision", "int8"]])
def test_a_ready_made_hub_id_not_in_the_local_cache_is_refused_before_torch(models, tmp_path):
    """Not in the cache (HF_HOME empty): one line with the hf download advice, exit 1 (a model error), torch never
    imported (it is blocked: importing it would end in a traceback)."""
    from mmindex.pipeline.ingest.sample import write_sample

    write_sample(tmp_path / "data", rows=2, seed=1, width=16, height=16)
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", MMINDEX_CACHE=str(tmp_path / "cache"))
    env.pop("HF_HUB_CACHE", None)
    done = no_torch.run_cli_without_torch(["ingest", str(tmp_path / "data"), "-c", "c", "--data-dir",
                                           str(tmp_path / "store"), *models], env)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and f"hf download {models[1]}" in done.stderr, done.stderr


# -- what is refused, and why ------------------------------------------------------------------------------------

def test_the_vision_repository_alone_asks_for_its_text_repository(fastembed, tmp_path):
    """The message names the text twin, as the docs promise (a folder: its twin folder; a Hub id: Qdrant's)."""
    with pytest.raises(ModelError, match=f"does not encode text; pass --text-model {fastembed.text_model}$"):
        Encoder(str(fastembed.model), backend="auto")
    alone = tmp_path / "clip-ViT-B-32-vision"
    shutil.copytree(fastembed.model, alone)
    with pytest.raises(ModelError, match="pass --text-model with its text repository .*Qdrant/clip-ViT-B-32-text"):
        Encoder(str(alone), backend="auto")
    assert text_partner("Qdrant/clip-ViT-B-32-vision") == "Qdrant/clip-ViT-B-32-text"


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


# -- preprocessor_config.json: CLIPImageProcessor's defaults, and sizes the graph must agree with -------------------

PROCESSOR_KEYS = {
    "size": st.one_of(st.integers(1, 64), st.integers(1, 64).map(lambda n: {"shortest_edge": n})),
    "crop_size": st.one_of(st.integers(1, 64), st.tuples(st.integers(1, 64), st.integers(1, 64))
                           .map(lambda hw: {"height": hw[0], "width": hw[1]})),
    "resample": st.sampled_from([2, 3]),
    "image_mean": st.lists(st.floats(0, 1), min_size=3, max_size=3),
    "image_std": st.lists(st.floats(0.1, 1), min_size=3, max_size=3),
    "do_resize": st.just(True), "do_center_crop": st.just(True), "do_normalize": st.just(True),
    "do_rescale": st.just(True), "rescale_factor": st.just(1 / 255),
}


@PROPERTY
@given(config=st.fixed_dictionaries({}, optional=PROCESSOR_KEYS),
       kind=st.sampled_from([None, ("image_processor_type", "CLIPImageProcessor"),
                             ("feature_extractor_type", "CLIPFeatureExtractor")]))
@example(config={"size": 224, "crop_size": 224}, kind=None)  # openai's old form, without mean and std
def test_left_out_preprocessor_keys_take_clip_image_processors_defaults(tmp_path_factory, config, kind):
    """Differential: the steps from any subset of the keys equal transformers' CLIPImageProcessor built from them."""
    from transformers import CLIPImageProcessor

    folder = tmp_path_factory.mktemp("preprocessor")
    (folder / "preprocessor_config.json").write_text(json.dumps({**config, **dict([kind] if kind else [])}))
    steps, want = clip_steps(folder), CLIPImageProcessor(**config)
    assert (steps.shortest, steps.crop_height, steps.crop_width) == (
        want.size["shortest_edge"], want.crop_size["height"], want.crop_size["width"])
    assert (steps.mean, steps.std) == (tuple(want.image_mean), tuple(want.image_std))
    assert steps.resample == int(want.resample)
    assert steps.scale == pytest.approx(want.rescale_factor)


def test_a_preprocessor_without_mean_and_std_runs_with_clips_and_equals_transformers(fastembed, references, tmp_path):
    vision = tmp_path / "clip-ViT-B-32-vision"
    shutil.copytree(fastembed.model, vision)
    config = json.loads((vision / "preprocessor_config.json").read_text())
    del config["image_mean"], config["image_std"]
    (vision / "preprocessor_config.json").write_text(json.dumps(config))
    encoder = Encoder(str(vision), text_model=str(fastembed.text_model), backend="auto")
    image = images(4)[0]
    assert float(np.abs(encoder.encode_images([image])[0] - references["fastembed"].image(image)).max()) <= TOLERANCE


@pytest.mark.parametrize("config, match", [
    ({"size": {"height": 32, "width": 32}}, r"size \{'height': 32, 'width': 32\} and crop_size"),
    ({"image_mean": [0.5, 0.5]}, r"image_mean \[0\.5, 0\.5\]"),
    ({"image_std": "wide"}, "image_std is not a number"),
    ({"do_center_crop": False}, "do_center_crop false"),
])
def test_preprocessor_values_clips_steps_cannot_take_are_refused_in_one_line(tmp_path, config, match):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=match) as caught:
        clip_steps(tmp_path)
    assert "\n" not in str(caught.value)


def _copy_xenova(xenova, folder: Path, preprocessor: dict | None = None) -> Path:
    shutil.copytree(xenova.model, folder)
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return folder


@pytest.mark.parametrize("preprocessor, crop", [
    ({"size": replicas.IMAGE + 4, "crop_size": replicas.IMAGE + 4}, replicas.IMAGE + 4),
    ({"size": replicas.IMAGE, "crop_size": {"height": replicas.IMAGE, "width": 20}}, None),
    ({"size": replicas.IMAGE}, 224),  # crop_size left out: CLIP's default, 224
])
def test_a_crop_the_image_graph_does_not_take_is_refused_at_load(xenova, tmp_path, preprocessor, crop):
    folder = _copy_xenova(xenova, tmp_path / "x", preprocessor)
    wanted = f"{crop}x{crop}" if crop else f"{replicas.IMAGE}x20"
    with pytest.raises(ModelError, match=rf"crop_size {wanted} .*vision_model\.onnx takes "
                                         rf"{replicas.IMAGE}x{replicas.IMAGE} pixels"):
        Encoder(str(folder), backend="auto")


@pytest.mark.parametrize("length", [replicas.CLIP_POSITIONS, 16])
def test_a_text_graph_of_fixed_length_is_padded_to_it_or_refused(xenova, references, tmp_path, length):
    import onnx

    folder = _copy_xenova(xenova, tmp_path / "x")
    path = folder / "onnx" / "text_model.onnx"
    graph = onnx.load(str(path))
    graph.graph.input[0].type.tensor_type.shape.dim[1].dim_value = length
    onnx.save(graph, str(path))
    if length != replicas.CLIP_POSITIONS:
        with pytest.raises(ModelError, match=rf"input_ids are {length} tokens long, but .* cuts captions at "
                                             rf"{replicas.CLIP_POSITIONS}"):
            Encoder(str(folder), backend="auto")
        return
    got = Encoder(str(folder), backend="auto").encode_texts(TEXTS)
    want = np.stack([references["xenova"].text(text, truncate=True) for text in TEXTS])
    assert float(np.abs(got - want).max()) <= TOLERANCE



def test_a_ready_made_repository_is_hashed_at_its_first_start_only(xenova, tmp_path, monkeypatch):
    """A ready-made repository has no query bundle: its fingerprint is recorded at the first start
    (``quick.remembered_fingerprint``) and later starts take it while its files hold; a changed file is hashed again."""
    from mmindex.pipeline.models import identity

    folder = _copy_xenova(xenova, tmp_path / "x")
    for path in folder.rglob("*"):
        os.utime(path, (1_600_000_000, 1_600_000_000))  # old enough to be recorded
    hashed = []
    real = identity.hash_file
    monkeypatch.setattr(identity, "hash_file", lambda path, model: hashed.append(path) or real(path, model))
    identity._FINGERPRINTS.clear()
    first = Encoder(str(folder), backend="auto").fingerprint
    assert hashed and first == model_fingerprint(str(folder))
    hashed.clear()
    identity._FINGERPRINTS.clear()  # as in a new process
    assert Encoder(str(folder), backend="auto").fingerprint == first and hashed == []
    (folder / "config.json").write_text((folder / "config.json").read_text() + " ")
    identity._FINGERPRINTS.clear()
    assert Encoder(str(folder), backend="auto").fingerprint == model_fingerprint(str(folder)) != first and hashed

def test_int8_captions_of_a_fixed_length_text_graph_keep_their_padding(xenova, references, tmp_path):
    """int8 runs captions one at a time, cut to their own tokens, except where the graph takes one fixed length: there
    each caption keeps its padding (it was cut to its mask and ONNX Runtime refused the shorter input)."""
    import onnx

    folder = _copy_xenova(xenova, tmp_path / "x")
    for name in ("text_model.onnx", "text_model_quantized.onnx"):
        path = folder / "onnx" / name
        graph = onnx.load(str(path))
        graph.graph.input[0].type.tensor_type.shape.dim[1].dim_value = replicas.CLIP_POSITIONS
        onnx.save(graph, str(path))
    encoder = Encoder(str(folder), backend="auto", precision="int8")
    texts = TEXTS + ["x"]
    together = encoder.encode_texts(texts)
    alone = np.concatenate([encoder.encode_texts([text]) for text in texts])
    assert float(np.abs(together - alone).max()) <= 1e-6
    want = np.stack([references["xenova"].text(text, truncate=True) for text in texts])
    assert probe_gap(together, want, "int8") is None

# -- every file a layout needs, checked up front ------------------------------------------------------------------

BROKEN = [
    ("xenova", "onnx/text_model.onnx", "missing"), ("xenova", "onnx/text_model.onnx", "link"),
    ("xenova", "onnx/vision_model.onnx", "missing"), ("xenova", "tokenizer.json", "missing"),
    ("xenova", "tokenizer.json", "link"), ("xenova", "tokenizer.json", "folder"),
    ("xenova", "preprocessor_config.json", "missing"), ("xenova", "config.json", "link"),
    ("xenova", "tokenizer_config.json", "link"), ("xenova", "special_tokens_map.json", "link"),
    ("vision", "model.onnx", "link"), ("vision", "config.json", "missing"),
    ("vision", "preprocessor_config.json", "link"), ("text", "model.onnx", "link"),
    ("text", "tokenizer.json", "missing"), ("text", "config.json", "link"),
    ("xenova", "tokenizer.json", "garbage"), ("vision", "config.json", "garbage"),
    ("xenova", "tokenizer_config.json", "garbage"),
]


def _break(path: Path, how: str) -> None:
    path.unlink()
    if how == "link":
        path.symlink_to(path.parent / "blobs-gone" / path.name)  # the HF cache after an interrupted download
    elif how == "folder":
        path.mkdir()
    elif how == "garbage":
        path.write_bytes(b"\x00{not json")


@pytest.mark.parametrize("which, name, how", BROKEN)
def test_a_missing_or_broken_file_is_named_with_its_reason(xenova, fastembed, tmp_path, which, name, how):
    if which == "xenova":
        folder = _copy_xenova(xenova, tmp_path / "clip-vit-base-patch32")
        load = {"model": str(folder)}
    else:
        vision, text = tmp_path / "clip-ViT-B-32-vision", tmp_path / "clip-ViT-B-32-text"
        shutil.copytree(fastembed.model, vision)
        shutil.copytree(fastembed.text_model, text)
        folder = vision if which == "vision" else text
        load = {"model": str(vision), "text_model": str(text)}
    _break(folder / name, how)
    with pytest.raises(ModelError) as caught:
        Encoder(**load, backend="auto")
    message = str(caught.value)
    garbage = "tokenizers cannot read it" if name == "tokenizer.json" else "not readable JSON"
    reason = {"link": "which is missing", "folder": "not a file", "garbage": garbage}.get(how, "missing")
    assert Path(name).name in message and reason in message and "\n" not in message, message
    assert "pad token" not in message and "does not encode" not in message


def test_a_dangling_tower_in_the_hugging_face_cache_says_to_download_it_again(xenova, tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    repo = hub / "models--Xenova--clip-vit-base-patch32"
    snapshot = repo / "snapshots" / "abc123"
    shutil.copytree(xenova.model, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    _break(snapshot / "onnx" / "text_model.onnx", "link")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(hub))
    with pytest.raises(ModelError, match=r"text_model\.onnx: a link to .*which is missing .*"
                                         r"run `hf download Xenova/clip-vit-base-patch32` again"):
        Encoder("Xenova/clip-vit-base-patch32", backend="auto")
    shutil.copy(xenova.model / "onnx" / "text_model.onnx", snapshot / "onnx" / "text.onnx")
    (snapshot / "onnx" / "text_model.onnx").unlink()
    (snapshot / "onnx" / "text_model.onnx").symlink_to("text.onnx")
    _break(snapshot / "special_tokens_map.json", "link")  # a config: the same advice, from the cache's own path
    with pytest.raises(ModelError, match=r"special_tokens_map\.json: a link .*"
                                         r"`hf download Xenova/clip-vit-base-patch32`"):
        Encoder(str(snapshot), backend="auto")


def test_a_folder_with_only_the_combined_graph_says_which_files_are_needed(xenova, tmp_path):
    folder = _copy_xenova(xenova, tmp_path / "combined")
    shutil.rmtree(folder / "onnx")
    (folder / "onnx").mkdir()
    shutil.copy(xenova.model / "onnx" / "vision_model.onnx", folder / "onnx" / "model.onnx")
    assert layout_of(folder) == "transformers.js"
    with pytest.raises(ModelError, match=r"only the combined graph \(onnx/model\.onnx.*does not use\); it runs the "
                                         r"separate towers onnx/vision_model\.onnx and onnx/text_model\.onnx"):
        Encoder(str(folder), backend="auto")


# -- messages ---------------------------------------------------------------------------------------------------

def test_a_query_on_a_ready_made_repository_does_not_look_for_a_bundle(xenova, caplog):
    import logging

    from mmindex.pipeline.models.quick import quick_encoder_for

    caplog.set_level(logging.DEBUG, logger="mmindex")
    meta = {"model": str(xenova.model), "dim": replicas.PROJECTION, "model_precision": "fp32"}
    assert quick_encoder_for(meta, None, None, None, "auto", None, None, images=False) is None
    said = [record.getMessage() for record in caplog.records]
    assert not any("no fast query path" in line or "no bundle yet" in line for line in said), said
    assert any("ready-made ONNX repository: it runs without a bundle" in line for line in said), said


@pytest.mark.parametrize("model, onnx", [("Xenova/clip-vit-base-patch32", True), ("Qdrant/clip-ViT-B-32-text", True),
                                         ("someone/clip-onnx", True), ("sentence-transformers/clip-ViT-B-32", False)])
def test_offline_advice_for_an_onnx_only_repository_is_hf_download(model, onnx):
    from mmindex.pipeline.models.st_model import offline_howto

    advice = offline_howto(model)
    assert (f"hf download {model}" in advice) == onnx and ("SentenceTransformer(" in advice) == (not onnx), advice


@pytest.mark.parametrize("resample, shrinks", [(0, False), (1, False), (2, True), (3, True)])
def test_decoding_shrinks_only_for_the_filters_it_stays_exact_for(xenova, tmp_path, resample, shrinks):
    """A large image is decoded toward the model's side (a bicubic shrink first) only where the processor resizes
    with bilinear or bicubic; under nearest the shortcut moved a vector by 0.08 in a component (a reviewer's case:
    a 100×100 PNG into a 32-px tower), so there every pixel is kept. Either way the vector is the raw image's."""
    import io

    from mmindex.pipeline.ingest.images import decode_image

    config = json.loads((xenova.model / "preprocessor_config.json").read_text())
    folder = _copy_xenova(xenova, tmp_path / f"resample-{resample}", {**config, "resample": resample})
    encoder = Encoder(str(folder), backend="auto")
    assert (encoder.image_size is not None) == shrinks
    raw = images(5)[0].resize((100, 100))
    data = io.BytesIO()
    raw.save(data, format="PNG")
    decoded = decode_image(data.getvalue(), encoder.image_size, center_crop=encoder.center_crop)
    got, want = encoder.encode_images([decoded, raw])
    assert float(np.abs(got - want).max()) <= (0.02 if shrinks else 1e-6)
