"""open_clip models (pipeline/models/open_clip_model.py): tiny real open_clip CLIPs with random weights, saved in the exact
layouts LAION / DataComp / DFN publish (open_clip_config.json with model_cfg + preprocess_cfg, beside
open_clip_model.safetensors or open_clip_pytorch_model.bin) and as an open_clip training checkpoint, checked
against open_clip's own documented path and driven through the real CLI.

open_clip needs torchvision, which the main test venv cannot import beside its torch; `.ci/run` runs this file in
a second venv (torch 2.14.1 + torchvision 0.29.1 + '.[test,openclip]').
"""
from __future__ import annotations

import json
import shutil
import sys
import threading

import numpy as np
import pytest

open_clip = pytest.importorskip(
    "open_clip",
    reason="open_clip_torch is not installed in this venv; .ci/run runs "
           "tests/models/test_open_clip.py in its second venv (pip install torch==2.14.1 torchvision==0.29.1, "
           "then pip install -e '.[test,openclip]')",
)
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from mmindex.pipeline.models.encoder import Encoder  # noqa: E402
from mmindex.errors import ModelError  # noqa: E402
from mmindex.pipeline.models.open_clip_model import OpenClipModel  # noqa: E402
from mmindex.pipeline.models.identity import is_open_clip, parse_spec  # noqa: E402
from mmindex.pipeline.ingest.sample import write_sample  # noqa: E402

ARCH = "mmindex-tiny-open-clip"  # registered with open_clip.add_model_config, like a user's own architecture
CONTEXT = 16
MODEL_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    # open_clip's SimpleTokenizer makes ids up to 49407, so the vocabulary keeps its real size (a 6 MB file).
    "text_cfg": {"context_length": CONTEXT, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
# As laion/CLIP-ViT-B-32-laion2B-s34B-b79K publishes it; DFN / timm-era repos add interpolation and resize_mode.
PREPROCESS_CFG = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                  "interpolation": "bicubic", "resize_mode": "shortest"}
CAPTIONS = ["a red circle", "蓝色的三角形", "x", "A Large purple ring, at the top!"]
LONG = " ".join(["a large purple ring at the top on a dark background"] * 6)


def random_clip(seed: int):
    torch.manual_seed(seed)
    return open_clip.CLIP(**MODEL_CFG).eval()


def save_hub_layout(folder, seed: int, weights: str = "open_clip_model.safetensors"):
    """A folder exactly as the Hub repos hold an open_clip model (README and tokenizer files aside)."""
    import safetensors.torch

    folder.mkdir(parents=True, exist_ok=True)
    state = random_clip(seed).state_dict()
    if weights.endswith(".safetensors"):
        safetensors.torch.save_file(state, str(folder / weights))
    else:
        torch.save(state, folder / weights)
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": MODEL_CFG, "preprocess_cfg": PREPROCESS_CFG}, indent=2))
    return folder


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory):
    return save_hub_layout(tmp_path_factory.mktemp("oc") / "tiny-open-clip", seed=0)


@pytest.fixture(scope="module")
def training_checkpoint(tmp_path_factory):
    """open_clip's training output for the same weights: {"epoch", "name", "state_dict" with "module." keys}."""
    folder = tmp_path_factory.mktemp("oc-train")
    (folder / f"{ARCH}.json").write_text(json.dumps(MODEL_CFG))
    open_clip.add_model_config(folder / f"{ARCH}.json")
    state = {f"module.{key}": value for key, value in random_clip(0).state_dict().items()}
    (folder / "checkpoints").mkdir()
    torch.save({"epoch": 1, "name": "tiny", "state_dict": state}, folder / "checkpoints" / "epoch_1.pt")
    return folder / "checkpoints" / "epoch_1.pt"


@pytest.fixture(scope="module")
def expected(hub_folder):
    """open_clip's README path on the folder, independent of mmindex: vectors for CAPTIONS and the probe images."""
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{hub_folder}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{hub_folder}")
    model.eval()
    with torch.no_grad():
        text = model.encode_text(tokenizer(CAPTIONS), normalize=True).numpy()
        image = model.encode_image(torch.stack([preprocess(i) for i in probe_images()]), normalize=True).numpy()
    return {"text": text, "image": image}


def probe_images():
    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((61, 93), (240, 200), (32, 32))]


@pytest.fixture(scope="module")
def encoder(hub_folder):
    return Encoder(str(hub_folder), device="cpu")


# -- loading and vectors ------------------------------------------------------------------------


def test_folder_in_hub_layout_loads_offline_and_equals_open_clip(encoder, hub_folder, expected):
    assert encoder.dim == 16 and encoder.image_size == 32 and encoder.max_text_tokens == CONTEXT
    assert encoder.name == "tiny-open-clip" and encoder.path == str(hub_folder)
    assert encoder.fingerprint.startswith("sha256:")
    np.testing.assert_allclose(encoder.encode_texts(CAPTIONS), expected["text"], atol=1e-4)
    np.testing.assert_allclose(encoder.encode_images(probe_images()), expected["image"], atol=1e-4)


@pytest.mark.parametrize("spelling", ["local-dir", "open_clip-prefix", "bin-weights", "hf-hub", "checkpoint"])
def test_every_spelling_loads_the_same_weights(spelling, hub_folder, training_checkpoint, expected, tmp_path,
                                               monkeypatch):
    if spelling == "local-dir":
        spec = f"local-dir:{hub_folder}"
    elif spelling == "open_clip-prefix":
        spec = f"open_clip:{hub_folder}"
    elif spelling == "bin-weights":  # older repos publish open_clip_pytorch_model.bin only
        spec = str(save_hub_layout(tmp_path / "bin", seed=0, weights="open_clip_pytorch_model.bin"))
    elif spelling == "hf-hub":  # open_clip's own scheme, from the Hugging Face cache, offline
        from huggingface_hub import constants

        repo = tmp_path / "hub" / "models--laion--tiny-open-clip"
        commit = "0123456789abcdef0123456789abcdef01234567"
        shutil.copytree(hub_folder, repo / "snapshots" / commit)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
        assert constants.HF_HUB_OFFLINE
        spec = "hf-hub:laion/tiny-open-clip"
    else:  # an architecture name and a training checkpoint, as create_model_and_transforms(name, pretrained=path)
        spec = f"open_clip:{ARCH}/{training_checkpoint}"
    assert is_open_clip(spec)
    loaded = Encoder(spec, device="cpu")
    np.testing.assert_allclose(loaded.encode_texts(CAPTIONS), expected["text"], atol=1e-4)
    np.testing.assert_allclose(loaded.encode_images(probe_images()), expected["image"], atol=1e-4)


def test_backend_reference_is_open_clips_path_and_embed_agrees(hub_folder, expected):
    backend = OpenClipModel(str(hub_folder), "cpu", False)
    assert backend.kind == "open_clip" and backend.modalities == {"image", "text"}
    assert backend.text_rule.max_length == CONTEXT and backend.text_rule.padding == "max_length"
    np.testing.assert_allclose(backend.reference(CAPTIONS, "text"), expected["text"], atol=1e-5)
    np.testing.assert_allclose(backend.reference(probe_images(), "image"), expected["image"], atol=1e-5)
    with torch.no_grad():
        vectors = backend.embed(backend.preprocess_texts(CAPTIONS), "text")
    np.testing.assert_allclose(torch.nn.functional.normalize(vectors, dim=-1).numpy(), expected["text"], atol=1e-5)


def test_preprocessing_from_many_threads_equals_one_thread(hub_folder):
    backend = OpenClipModel(str(hub_folder), "cpu", False)
    texts = [f"caption number {i} " * (i % 7 + 1) for i in range(40)]
    serial = backend.preprocess_texts(texts)["input_ids"]
    pixels = backend.preprocess_images(probe_images())["pixel_values"]
    results, errors = {}, []

    def work(index):
        try:
            results[index] = (backend.preprocess_texts(texts)["input_ids"],
                              backend.preprocess_images(probe_images())["pixel_values"])
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert all(torch.equal(ids, serial) and torch.equal(px, pixels) for ids, px in results.values())


# -- captions: padding, truncation, flags --------------------------------------------------------


def test_a_caption_vector_does_not_depend_on_its_batch(encoder):
    alone = np.concatenate([encoder.encode_texts([text]) for text in CAPTIONS])
    together = encoder.encode_texts([LONG, *CAPTIONS, LONG + " and more"])[1:-1]
    np.testing.assert_allclose(alone, together, atol=1e-5)


def test_an_over_long_caption_is_cut_at_the_context_length_and_flagged(encoder):
    assert encoder.text_backend.token_counts(["a red circle"]) == [5]  # start + 3 words + end
    assert encoder.text_backend.token_counts([LONG])[0] > CONTEXT
    assert encoder.captions_too_long(["a red circle", LONG, "word " * (CONTEXT - 2), "word " * (CONTEXT - 1)]) == [
        False, True, False, True]
    # Cut, not failed: what follows the limit does not change the vector.
    np.testing.assert_allclose(encoder.encode_texts([LONG]), encoder.encode_texts([LONG + " in a green square"]),
                               atol=1e-6)


@pytest.fixture(scope="module")
def clipa_folder(tmp_path_factory):
    """A CLIPA-style replica (ViT-L-14-CLIPA's text_cfg keys): a Hugging Face WordPiece tokenizer saved in the folder,
    its [SEP] stripped, pooling at the last position without a causal mask."""
    from transformers import BertTokenizerFast

    folder = tmp_path_factory.mktemp("oc-clipa") / "tiny-clipa"
    folder.mkdir()
    words = "a red blue green circle triangle square star ring large purple at the top on dark background".split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *"abcdefghijklmnopqrstuvwxyz",
             *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz")]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(str(folder / "vocab.txt"))
    (folder / "vocab.txt").unlink()
    tokenizer.save_pretrained(str(folder))
    config = {**MODEL_CFG, "text_cfg": {"context_length": CONTEXT, "vocab_size": len(tokenizer),
                                        "hf_tokenizer_name": "bert-base-uncased",
                                        "tokenizer_kwargs": {"strip_sep_token": True}, "width": 32, "heads": 2,
                                        "layers": 2, "pool_type": "last", "no_causal_mask": True}}
    import safetensors.torch

    torch.manual_seed(2)
    safetensors.torch.save_file(open_clip.CLIP(**config).state_dict(), str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config, "preprocess_cfg": PREPROCESS_CFG}))
    return folder


def test_a_hugging_face_tokenizer_tower_counts_cuts_and_equals_open_clip(clipa_folder):
    encoder = Encoder(str(clipa_folder), device="cpu")
    assert type(encoder.text_backend.tokenizer).__name__ == "HFTokenizer"
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{clipa_folder}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{clipa_folder}")
    captions = ["a red circle", "a large purple ring at the top", LONG]
    with torch.no_grad():
        expected = model.eval().encode_text(tokenizer(captions), normalize=True).numpy()
    np.testing.assert_allclose(encoder.encode_texts(captions), expected, atol=1e-4)
    alone = np.concatenate([encoder.encode_texts([text]) for text in captions])
    np.testing.assert_allclose(alone, expected, atol=1e-4)
    assert encoder.text_backend.token_counts(["a red circle"]) == [5]  # [CLS] + 3 + [SEP]
    assert encoder.captions_too_long(captions) == [False, False, True]


# -- the CLI: ingest, query, info, and a changed checkpoint ----------------------------------------


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    folder = tmp_path_factory.mktemp("oc-sample")
    write_sample(folder, rows=24, seed=5, width=40, height=36)
    return folder


def _summary(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_ingest_query_and_info_through_the_cli(cli, hub_folder, sample):
    summary = _summary(cli("ingest", sample, "-c", "oc", "--model", hub_folder, "--device", "cpu", "--json", "-q"))
    assert summary["upserted"] == 24 and summary["rejected"] == 0
    hits = cli("query", "a red circle", "-c", "oc", "--device", "cpu", "--json", "-k", "3")
    assert hits.exit_code == 0, hits.output
    assert len(hits.stdout.splitlines()) == 3
    info = json.loads(cli("info", "-c", "oc", "--json").stdout)
    assert info["model"] == "tiny-open-clip" and info["model_path"] == str(hub_folder)
    assert info["model_fingerprint"].startswith("sha256:") and info["dim"] == 16
    again = _summary(cli("ingest", sample, "-c", "oc", "--device", "cpu", "--json", "-q"))
    assert (again["unchanged"], again["embedded"]) == (24, 0)


def test_train_refuses_an_open_clip_model_clearly(cli, hub_folder, sample, tmp_path):
    result = cli("train", sample, "--model", hub_folder, "--epochs", "1", "-o", tmp_path / "out")
    assert result.exit_code != 0 and "open_clip_train" in result.output and "Traceback" not in result.output


def test_other_weights_under_the_same_folder_are_refused(cli, hub_folder, sample, tmp_path):
    folder = tmp_path / "models" / "tiny-open-clip"
    shutil.copytree(hub_folder, folder)
    _summary(cli("ingest", sample, "-c", "oc", "--model", folder, "--device", "cpu", "--json", "-q"))
    save_hub_layout(folder, seed=1)  # a retrained checkpoint written over the old one
    recorded = cli("ingest", sample, "-c", "oc", "--device", "cpu", "-q")
    assert recorded.exit_code == 1 and "no longer that model" in recorded.stderr
    given = cli("ingest", sample, "-c", "oc", "--model", folder, "--device", "cpu", "-q")
    assert given.exit_code == 1 and "the files differ" in given.stderr
    assert "Traceback" not in recorded.output + given.output
    assert json.loads(cli("info", "-c", "oc", "--json").stdout)["points"] == 24


def test_a_checkpoint_is_recorded_with_its_architecture_and_reloaded(cli, training_checkpoint, sample):
    spec = f"open_clip:{ARCH}/{training_checkpoint}"
    _summary(cli("ingest", sample, "-c", "ck", "--model", spec, "--device", "cpu", "--json", "-q"))
    info = json.loads(cli("info", "-c", "ck", "--json").stdout)
    assert info["model"] == f"open_clip:{ARCH}/epoch_1.pt"
    assert info["model_fingerprint"] == parse_spec(spec).fingerprint()
    hits = cli("query", "a red circle", "-c", "ck", "--device", "cpu", "--json", "-k", "2")  # no --model
    assert hits.exit_code == 0, hits.output
    again = _summary(cli("ingest", sample, "-c", "ck", "--device", "cpu", "--json", "-q"))  # the recorded one
    assert (again["unchanged"], again["embedded"]) == (24, 0)


# -- specs and errors ------------------------------------------------------------------------------


def test_spec_parsing(tmp_path, hub_folder):
    tag = parse_spec("open_clip:ViT-B-32/laion2b_s34b_b79k")
    assert (tag.model_name, tag.pretrained, tag.local_path) == ("ViT-B-32", "laion2b_s34b_b79k", None)
    assert tag.name == "open_clip:ViT-B-32/laion2b_s34b_b79k" and tag.fingerprint() is None
    hub = parse_spec("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
    assert hub.model_name == "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K" and hub.name == hub.model_name
    checkpoint = parse_spec("open_clip:ViT-B-32/runs/epoch_32.pt")
    assert checkpoint.pretrained == checkpoint.local_path and checkpoint.local_path.endswith("/runs/epoch_32.pt")
    assert checkpoint.name == "open_clip:ViT-B-32/epoch_32.pt"
    assert parse_spec(checkpoint.loadable) == checkpoint
    assert parse_spec(str(hub_folder)).model_name == f"local-dir:{hub_folder}"
    assert is_open_clip(str(hub_folder)) and not is_open_clip(str(tmp_path)) and not is_open_clip("clip-ViT-B-32")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("open_clip:ViT-B-32", "give an open_clip architecture and its pretrained weights"),
        ("open_clip:ViT-B-23/laion2b_s34b_b79k", "'ViT-B-23' is not an open_clip architecture (did you mean ViT-B-32"),
        ("open_clip:ViT-B-32/laion9b", "'laion9b' is neither a pretrained tag of ViT-B-32 nor a checkpoint file; "
                                       "its tags: openai"),
        ("open_clip:ViT-B-32/openai", "trained with QuickGELU, but ViT-B-32 is built without it"),
        ("open_clip:ViT-B-32/missing/epoch_3.pt", "the checkpoint file"),
        ("hf-hub:laion/not-cached-here", "HF_HUB_OFFLINE=1 is set and they are not in the local cache"),
    ],
)
def test_a_model_open_clip_cannot_load_is_one_clear_error(spec, message):
    with pytest.raises(ModelError) as raised:
        OpenClipModel(spec, "cpu", False)
    assert message in str(raised.value)


def test_a_folder_without_weights_is_refused_not_randomly_initialised(tmp_path, hub_folder):
    folder = tmp_path / "config-only"
    folder.mkdir()
    shutil.copy(hub_folder / "open_clip_config.json", folder)
    with pytest.raises(ModelError, match="has open_clip_config.json but no weights"):
        Encoder(str(folder), device="cpu")


@pytest.mark.parametrize("failure", ["not-installed", "broken-torchvision"])
def test_without_open_clip_the_error_says_how_to_install_it(failure, cli, hub_folder, sample, monkeypatch):
    if failure == "not-installed":
        monkeypatch.setitem(sys.modules, "open_clip", None)  # `import open_clip` → ModuleNotFoundError
    else:
        import builtins

        real_import = builtins.__import__

        def broken(name, *args, **kwargs):
            if name == "open_clip":
                raise RuntimeError("operator torchvision::nms does not exist")
            return real_import(name, *args, **kwargs)

        monkeypatch.delitem(sys.modules, "open_clip")
        monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(ModelError) as raised:
        Encoder(str(hub_folder), device="cpu")
    assert "pip install 'mmindex[openclip]'" in str(raised.value) and "torchvision" in str(raised.value)
    result = cli("ingest", sample, "-c", "oc", "--model", hub_folder, "--device", "cpu", "-q")
    assert result.exit_code == 1 and "mmindex[openclip]" in result.stderr and "Traceback" not in result.output
