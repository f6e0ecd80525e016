"""Ready-made ONNX repositories of CLIP towers, run as they are: no torch, no export, nothing from the folder executed.

A folder (or a Hub id in the local Hugging Face cache, ``identity.model_folder``) is one when it holds ONNX towers
in one of these layouts and no torch weights (``*.safetensors``, ``pytorch_model.bin``, ``modules.json``):
- FastEmbed's (``Qdrant/clip-ViT-B-32-vision``, ``Qdrant/clip-ViT-B-32-text``): one tower per repository,
  ``model.onnx`` beside ``config.json`` (``model_type`` ``clip_vision_model`` or ``clip_text_model``), the vision
  repository with ``preprocessor_config.json``, the text one with ``tokenizer.json``, ``tokenizer_config.json``,
  ``special_tokens_map.json``, ``vocab.json``, ``merges.txt``; the pair is named ``--model VISION --text-model TEXT``;
- transformers.js's (``Xenova/clip-vit-base-patch32``): both towers in ``onnx/`` (``vision_model.onnx``,
  ``text_model.onnx``; 8-bit variants ``*_quantized.onnx``, ``*_int8.onnx``, ``*_uint8.onnx``; ``*_fp16.onnx``
  unused), the configs and tokenizer files at the top.
The vector is the tower's ``image_embeds`` / ``text_embeds`` output (the projected embedding, as optimum and
transformers.js name it; a graph with one 2-d output: that one), L2-normalised by ``Encoder``. Images follow
``preprocessor_config.json`` (CLIP's image processor: shortest-edge resize, centre crop, rescale, normalise, by
``st_model.clip_pixels``); captions ``tokenizer.json``, cut at the smallest of tokenizer_config.json's
``model_max_length`` and the text tower's ``max_position_embeddings``, padded to the longest caption of a batch
with the pad token (CLIP pools at the end token, so padding after it changes nothing: ``check_backend`` checks).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from mmindex.errors import ModelError
from mmindex.pipeline.models.backend import TextRule
from mmindex.pipeline.models.identity import model_display_name, model_folder
from mmindex.pipeline.models.onnx_cache import probe_gap
from mmindex.pipeline.models.onnx_model import open_session, probe_images, probe_texts, run_tower
from mmindex.pipeline.models.st_model import ClipImageSteps
from mmindex.pipeline.models.towers import CPU, Tower, TowerBackend, load_text_side

log = logging.getLogger("mmindex.models")

TORCH_WEIGHTS = ("modules.json", "pytorch_model.bin")
STEMS = {"image": "vision_model", "text": "text_model"}  # transformers.js's file names, in onnx/
EIGHT_BIT = ("_quantized", "_int8", "_uint8")  # transformers.js's 8-bit variants, in the order they are taken
MODEL_TYPES = {"clip_vision_model": "image", "clip_text_model": "text"}  # FastEmbed's config.json
OUTPUTS = {"image": "image_embeds", "text": "text_embeds"}
TEXT_INPUTS = {"input_ids", "attention_mask", "token_type_ids"}
PROCESSORS = ("CLIPImageProcessor", "CLIPFeatureExtractor", "CLIPImageProcessorFast")
NO_LIMIT = 1_000_000  # transformers writes int(1e30) for "no model_max_length"


def ready_made_folder(model: str) -> str | None:
    """The local folder of ``model`` when it is a ready-made ONNX repository (see the module docstring), else None."""
    folder = model_folder(model)
    return folder if folder is not None and layout_of(folder) is not None else None


def layout_of(folder: str | os.PathLike) -> str | None:
    """``"transformers.js"``, ``"fastembed"`` or None (not a ready-made ONNX repository, or one with torch weights)."""
    root = Path(folder)
    if any((root / name).exists() for name in TORCH_WEIGHTS) or any(root.glob("*.safetensors")):
        return None
    if any(next((root / "onnx").glob(f"{stem}*.onnx"), None) for stem in STEMS.values()):
        return "transformers.js"
    if (root / "model.onnx").is_file() and (root / "config.json").is_file():
        return "fastembed"
    return None


def tower_files(folder: str | os.PathLike, precision: str) -> dict[str, Path]:
    """{modality: ONNX file} for ``precision`` (fp32: the plain file; int8: an 8-bit variant). ModelError naming the
    files there when the precision has none."""
    root = Path(folder)
    layout = layout_of(root)
    suffixes = [""] if precision == "fp32" else list(EIGHT_BIT)
    found: dict[str, Path] = {}
    if layout == "transformers.js":
        for modality, stem in STEMS.items():
            path = next((root / "onnx" / f"{stem}{suffix}.onnx" for suffix in suffixes
                         if (root / "onnx" / f"{stem}{suffix}.onnx").is_file()), None)
            if path is not None:
                found[modality] = path
    elif layout == "fastembed":
        path = next((root / f"model{suffix}.onnx" for suffix in suffixes if (root / f"model{suffix}.onnx").is_file()),
                    None)
        if path is not None:
            found[_fastembed_modality(root, path)] = path
    if not found:
        present = sorted(str(p.relative_to(root)) for p in root.rglob("*.onnx"))
        wanted = "model.onnx" if precision == "fp32" else ", ".join(f"*{s}.onnx" for s in EIGHT_BIT)
        raise ModelError(f"model folder {root}: no {precision} ONNX towers ({wanted}); it holds {', '.join(present)}. "
                         f"Use --model-precision {'int8' if precision == 'fp32' else 'fp32'}, or another model")
    return found


def _fastembed_modality(root: Path, path: Path) -> str:
    config = read_config(root / "config.json")
    modality = MODEL_TYPES.get(config.get("model_type", ""))
    if modality is None:
        raise ModelError(f"model folder {root}: config.json says model_type {config.get('model_type')!r}; a FastEmbed "
                         f"CLIP tower says {' or '.join(MODEL_TYPES)}")
    return modality


def repo_backend(model: str, precision: str, device: str, threads: int | None) -> TowerBackend:
    """The towers of the ready-made repository ``model`` at ``precision`` (fp32 or int8) behind the ``Backend``
    interface, without torch. Runs on ONNX Runtime's CPU provider (``device`` must be cpu). Raises ModelError for
    a layout part it cannot run (naming the file and key), and for int8 towers further from the repository's own
    fp32 towers than the int8 bar (``onnx_cache.probe_gap``)."""
    folder = ready_made_folder(model)
    if folder is None:
        raise ModelError(f"model {model!r} is not a ready-made ONNX repository")
    if device != "cpu":
        raise ModelError(f"model {model!r} is a ready-made ONNX repository and runs on the CPU here; use --device cpu "
                         "(or auto)")
    root, name = Path(folder), model_display_name(folder if os.path.isdir(model) else model)
    towers = {modality: _tower(path, modality, threads) for modality, path in tower_files(root, precision).items()}
    text = _text_side(root, towers["text"].inputs) if "text" in towers else None
    steps = clip_steps(root) if "image" in towers else None
    image_input = towers["image"].inputs[0] if "image" in towers else "pixel_values"
    backend = TowerBackend(name, towers, dim=0, precision=precision, threads=threads, text=text, image_steps=steps,
                           image_input=image_input, source=f"the ONNX repository {root}")
    backend.dim = _probe_dim(backend, root)
    if precision != "fp32":
        _check_against_fp32(backend, root, threads)
    log.info("model %s runs without torch from the ready-made ONNX repository %s (%s)", name, root,
             ", ".join(str(t.path.relative_to(root)) for t in towers.values()))
    return backend


def _tower(path: Path, modality: str, threads: int | None) -> Tower:
    try:
        session = open_session(path, threads, CPU)
    except Exception as error:  # ONNX Runtime's own errors: a truncated file, an operator it lacks
        raise ModelError(f"{path}: ONNX Runtime cannot load it ({type(error).__name__}: {str(error)[:300]})") from error
    inputs = [spec.name for spec in session.get_inputs()]
    outputs = {spec.name: spec.shape for spec in session.get_outputs()}
    if modality == "text" and (not set(inputs) <= TEXT_INPUTS or "input_ids" not in inputs):
        raise ModelError(f"{path}: its inputs are {inputs}; a text tower takes input_ids (and attention_mask)")
    if modality == "image" and len(inputs) != 1:
        raise ModelError(f"{path}: its inputs are {inputs}; an image tower takes one, the pixels")
    output = OUTPUTS[modality] if OUTPUTS[modality] in outputs else None
    if output is None and not (len(outputs) == 1 and len(next(iter(outputs.values()))) == 2):
        raise ModelError(f"{path}: its outputs are {list(outputs)}; mmindex reads {OUTPUTS[modality]} (the projected "
                         "embedding), or the one output of a graph that has one")
    return Tower(path, session, inputs, output)


def _probe_dim(backend: TowerBackend, root: Path) -> int:
    """The vector size, from a probe run of each tower (ModelError when the towers disagree)."""
    sizes = {}
    for modality in sorted(backend.towers):
        items = probe_images()[:1] if modality == "image" else ["a photo"]
        features = backend.preprocess_images(items) if modality == "image" else backend.preprocess_texts(items)
        sizes[modality] = int(np.asarray(backend.embed(features, modality)).reshape(1, -1).shape[1])
    if len(set(sizes.values())) != 1:
        raise ModelError(f"model folder {root}: its towers make vectors of different sizes ({sizes})")
    return next(iter(sizes.values()))


def _check_against_fp32(backend: TowerBackend, root: Path, threads: int | None) -> None:
    """int8 towers against the repository's own fp32 towers on the probe inputs (when it has them)."""
    try:
        plain = tower_files(root, "fp32")
    except ModelError:
        log.info("model folder %s has no fp32 towers: its int8 towers are not checked against them", root)
        return
    for modality, tower in backend.towers.items():
        if modality not in plain:
            continue
        reference = _tower(plain[modality], modality, threads)
        items = probe_images() if modality == "image" else probe_texts(backend.text_rule)
        features = backend.preprocess_images(items) if modality == "image" else backend.preprocess_texts(items)
        arrays = {key: value for key, value in features.items() if hasattr(value, "shape")}
        want = run_tower(reference.session, arrays, modality, "fp32", reference.output)
        failure = probe_gap(backend.embed(features, modality), want, "int8")
        if failure:
            raise ModelError(f"{tower.path}: its vectors {failure.replace('torch', 'the fp32 tower')} on probe "
                             f"inputs; use --model-precision fp32")


# -- the configs ----------------------------------------------------------------------------------------------

def read_config(path: Path) -> dict[str, Any]:
    """A JSON object file, or {} when it is absent; ModelError when it is not a JSON object."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelError(f"{path}: not readable JSON ({type(error).__name__}: {error})") from error
    if not isinstance(value, dict):
        raise ModelError(f"{path}: not a JSON object")
    return value


def clip_steps(root: Path) -> ClipImageSteps:
    """CLIP's image steps from ``preprocessor_config.json`` (both the old feature-extractor form, plain ints for
    ``size`` and ``crop_size``, and the image-processor form with dicts), with transformers' defaults for keys left
    out (``do_rescale`` true, ``rescale_factor`` 1/255, ``resample`` 3: bicubic). ModelError for a processor that is
    not CLIP's or a step it leaves out (mmindex reproduces CLIP's steps only)."""
    path = root / "preprocessor_config.json"
    config = read_config(path)
    kind = config.get("image_processor_type") or config.get("feature_extractor_type")
    if not config or (kind and kind not in PROCESSORS):
        raise ModelError(f"{path}: {'missing' if not config else f'image processor {kind}'}; ready-made ONNX towers "
                         "run with CLIP's image processor only (shortest-edge resize, centre crop, normalise)")
    flags = {key: config.get(key, True) for key in ("do_resize", "do_center_crop", "do_normalize", "do_rescale")}
    if not all(flags.values()):
        raise ModelError(f"{path}: {', '.join(k for k, v in flags.items() if not v)} false; mmindex reproduces CLIP's "
                         "full steps only")
    size, crop = config.get("size"), config.get("crop_size", config.get("size"))
    shortest = size if isinstance(size, int) else (size or {}).get("shortest_edge")
    height, width = (crop, crop) if isinstance(crop, int) else ((crop or {}).get("height"), (crop or {}).get("width"))
    if not all(isinstance(v, int) and v > 0 for v in (shortest, height, width)):
        raise ModelError(f"{path}: size {size!r} and crop_size {crop!r}; CLIP's steps need a shortest_edge size "
                         "and a crop")
    scale = float(config.get("rescale_factor", 1 / 255))
    if abs(scale - 1 / 255) > 1e-9:
        raise ModelError(f"{path}: rescale_factor {scale}; CLIP's steps scale by 1/255")
    return ClipImageSteps(shortest, height, width, int(config.get("resample", 3)),
                          tuple(float(v) for v in config["image_mean"]), tuple(float(v) for v in config["image_std"]),
                          scale)


def _text_side(root: Path, inputs: list[str]):
    """The caption side from tokenizer.json, tokenizer_config.json, special_tokens_map.json and config.json."""
    tokenizer_config = read_config(root / "tokenizer_config.json")
    special = read_config(root / "special_tokens_map.json")
    limit, source = _text_limit(root, tokenizer_config)
    pad = _token_text(tokenizer_config.get("pad_token")) or _token_text(special.get("pad_token"))
    if pad is None:
        raise ModelError(f"{root}: neither tokenizer_config.json nor special_tokens_map.json names a pad token")
    # loaded only when a model runs without torch
    from tokenizers import Tokenizer

    pad_id = Tokenizer.from_file(str(root / "tokenizer.json")).token_to_id(pad) \
        if (root / "tokenizer.json").is_file() else None
    if pad_id is None:
        raise ModelError(f"{root}: the pad token {pad!r} is not in tokenizer.json")
    settings = {"max_length": limit, "padding": "longest",
                "truncation_side": tokenizer_config.get("truncation_side") or "right",
                "padding_side": tokenizer_config.get("padding_side") or "right",
                "pad_id": pad_id, "pad_token": pad, "pad_type_id": 0}
    return load_text_side(root / "tokenizer.json", settings, TextRule(limit, "longest", source), inputs)


def _text_limit(root: Path, tokenizer_config: dict[str, Any]) -> tuple[int, str]:
    """Where captions are cut: the smallest of the tokenizer's model_max_length and the tower's position count."""
    config = read_config(root / "config.json")
    text_config = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    limits = []
    declared = tokenizer_config.get("model_max_length")
    if isinstance(declared, int) and not isinstance(declared, bool) and 0 < declared < NO_LIMIT:
        limits.append((declared, "tokenizer_config.json's model_max_length"))
    positions = text_config.get("max_position_embeddings")
    if isinstance(positions, int) and positions > 0:
        limits.append((positions, "config.json's max_position_embeddings"))
    if not limits:
        raise ModelError(f"{root}: neither tokenizer_config.json (model_max_length) nor config.json "
                         "(max_position_embeddings) says where captions are cut")
    return min(limits)


def _token_text(token: Any) -> str | None:
    if isinstance(token, dict):
        token = token.get("content")
    return token if isinstance(token, str) and token else None
