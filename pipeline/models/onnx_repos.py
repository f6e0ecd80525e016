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
``st_model.clip_pixels``; keys left out take CLIPImageProcessor's defaults; a crop the image graph's fixed size
disagrees with is refused); captions ``tokenizer.json``, cut at the smallest of tokenizer_config.json's
``model_max_length`` and the text tower's ``max_position_embeddings``, padded to the longest caption of a batch
with the pad token (CLIP pools at the end token, so padding after it changes nothing: ``check_backend`` checks),
or to the text graph's fixed length when it declares one. Every file a layout needs is checked before anything
loads (``layouts.checked_file``), so a missing or broken one is named with its reason.
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
from mmindex.pipeline.models.identity import model_display_name
from mmindex.pipeline.models.layouts import COMBINED, STEMS, checked_file, layout_of, ready_made_folder
from mmindex.pipeline.models.onnx_cache import probe_gap
from mmindex.pipeline.models.onnx_model import open_session, probe_images, probe_texts, run_tower
from mmindex.pipeline.models.st_model import ClipImageSteps
from mmindex.pipeline.models.towers import CPU, Tower, TowerBackend, load_text_side

log = logging.getLogger("mmindex.models")

EIGHT_BIT = ("_quantized", "_int8", "_uint8")  # transformers.js's 8-bit variants, in the order they are taken
MODEL_TYPES = {"clip_vision_model": "image", "clip_text_model": "text"}  # FastEmbed's config.json
OUTPUTS = {"image": "image_embeds", "text": "text_embeds"}
TEXT_INPUTS = {"input_ids", "attention_mask", "token_type_ids"}
PROCESSORS = ("CLIPImageProcessor", "CLIPFeatureExtractor", "CLIPImageProcessorFast")
NO_LIMIT = 1_000_000  # transformers writes int(1e30) for "no model_max_length"
# CLIPImageProcessor's defaults (transformers.models.clip.image_processing_clip, OPENAI_CLIP_MEAN / OPENAI_CLIP_STD in
# transformers.image_utils), taken for the keys a preprocessor_config.json leaves out, as transformers does
CLIP_DEFAULTS = {"do_resize": True, "size": {"shortest_edge": 224}, "resample": 3, "do_center_crop": True,
                 "crop_size": {"height": 224, "width": 224}, "do_rescale": True, "rescale_factor": 1 / 255,
                 "do_normalize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
                 "image_std": [0.26862954, 0.26130258, 0.27577711]}


def tower_files(folder: str | os.PathLike, precision: str, repo: str | None = None) -> dict[str, Path]:
    """{modality: ONNX file} for ``precision`` (fp32: the plain file; int8: an 8-bit variant), each checked to be a
    readable file (``layouts.checked_file``; ``repo``: the Hub id, for its advice). ModelError naming the files
    there when the precision has none, naming the missing tower of a transformers.js folder, and saying that the
    combined graph ``onnx/model.onnx`` is not used when that is all a folder holds."""
    root = Path(folder)
    layout = layout_of(root)
    suffixes = [""] if precision == "fp32" else list(EIGHT_BIT)
    found: dict[str, Path] = {}
    if layout == "transformers.js":
        found = {modality: path for modality, stem in STEMS.items()
                 if (path := _first(root / "onnx", stem, suffixes)) is not None}
        if not any(next((root / "onnx").glob(f"{stem}*.onnx"), None) for stem in STEMS.values()):
            raise ModelError(f"model folder {root}: onnx/ holds only the combined graph ({_onnx_files(root)}: both "
                             f"towers in one graph, which mmindex does not use); it runs the separate towers "
                             f"onnx/vision_model.onnx and onnx/text_model.onnx (8-bit: onnx/*_quantized.onnx)")
        if len(found) == 1:
            stem = STEMS["text" if "image" in found else "image"]
            raise ModelError(f"model folder {root}: onnx/{stem}{suffixes[0]}.onnx is missing beside "
                             f"{found[next(iter(found))].relative_to(root)}; a transformers.js folder needs both "
                             f"towers (it holds {_onnx_files(root)})")
    elif layout == "fastembed":
        path = _first(root, COMBINED, suffixes)
        if path is not None:
            found[_fastembed_modality(root, repo)] = path
    if not found:
        where = "onnx/" if layout == "transformers.js" else ""
        stems = list(STEMS.values()) if layout == "transformers.js" else [COMBINED]
        variants = "" if precision == "fp32" else "{" + "|".join(EIGHT_BIT) + "}"
        wanted = " and ".join(f"{where}{stem}{variants}.onnx" for stem in stems)
        raise ModelError(f"model folder {root}: no {precision} ONNX towers ({wanted}); it holds {_onnx_files(root)}. "
                         f"Use --model-precision {'int8' if precision == 'fp32' else 'fp32'}, or another model")
    return {modality: checked_file(path, repo) for modality, path in found.items()}


def _first(where: Path, stem: str, suffixes: list[str]) -> Path | None:
    """The first ``where/stem{suffix}.onnx`` whose name is there (a link to nothing included: it is refused by name)."""
    return next((where / f"{stem}{suffix}.onnx" for suffix in suffixes
                 if os.path.lexists(where / f"{stem}{suffix}.onnx")), None)


def _onnx_files(root: Path) -> str:
    return ", ".join(sorted(str(p.relative_to(root)) for p in root.rglob("*.onnx"))) or "no .onnx file"


def text_partner(model: str) -> str:
    """What to pass as ``--text-model`` beside the vision tower ``model`` of FastEmbed's pair: its ``-text`` twin
    (``Qdrant/clip-ViT-B-32-vision`` → ``Qdrant/clip-ViT-B-32-text``; a folder: the twin folder when there is one)."""
    name = model.rstrip("/")
    if name.endswith("-vision"):
        partner = name[:-len("-vision")] + "-text"
        if not os.path.isdir(model) or os.path.isdir(partner):
            return partner
    return "with its text repository (Qdrant/clip-ViT-B-32-text beside Qdrant/clip-ViT-B-32-vision)"


def _fastembed_modality(root: Path, repo: str | None) -> str:
    config = read_config(checked_file(root / "config.json", repo))
    modality = MODEL_TYPES.get(config.get("model_type", ""))
    if modality is None:
        raise ModelError(f"model folder {root}: config.json says model_type {config.get('model_type')!r}; a FastEmbed "
                         f"CLIP tower says {' or '.join(MODEL_TYPES)}")
    return modality


def repo_backend(model: str, precision: str, device: str, threads: int | None) -> TowerBackend:
    """The towers of the ready-made repository ``model`` at ``precision`` (fp32 or int8) behind the ``Backend``
    interface, without torch. Runs on ONNX Runtime's CPU provider (``device`` must be cpu). Every file the layout
    needs is checked first (``layouts.checked_file``: the towers, ``preprocessor_config.json`` with an image tower,
    ``tokenizer.json`` with a text tower, the configs that are there). Raises ModelError for a file missing or
    unreadable, a layout part it cannot run (naming the file and key), graph input sizes the configs disagree with,
    and for int8 towers further from the repository's own fp32 towers than the int8 bar (``onnx_cache.probe_gap``)."""
    folder = ready_made_folder(model)
    if folder is None:
        raise ModelError(f"model {model!r} is not a ready-made ONNX repository")
    if device != "cpu":
        raise ModelError(f"model {model!r} is a ready-made ONNX repository and runs on the CPU here; use --device cpu "
                         "(or auto)")
    root, name = Path(folder), model_display_name(folder if os.path.isdir(model) else model)
    repo = None if os.path.isdir(model) else model
    files = tower_files(root, precision, repo)
    for modality, needed in (("image", "preprocessor_config.json"), ("text", "tokenizer.json")):
        if modality in files:
            checked_file(root / needed, repo)
    towers = {modality: _tower(path, modality, threads) for modality, path in files.items()}
    text = _text_side(root, towers["text"]) if "text" in towers else None
    steps = clip_steps(root) if "image" in towers else None
    if steps is not None:
        _check_image_size(towers["image"], steps, root)
    image_input = towers["image"].inputs[0] if "image" in towers else "pixel_values"
    backend = TowerBackend(name, towers, dim=0, precision=precision, threads=threads, text=text, image_steps=steps,
                           image_input=image_input, source=f"the ONNX repository {root}")
    backend.dim = _probe_dim(backend, root)
    if precision != "fp32":
        _check_against_fp32(backend, root, threads)
    log.info("model %s runs without torch from the ready-made ONNX repository %s (%s)", name, root,
             ", ".join(str(t.path.relative_to(root)) for t in towers.values()))
    return backend


def _check_image_size(tower: Tower, steps: ClipImageSteps, root: Path) -> None:
    """ModelError when the image graph declares a fixed pixel size other than the processor's crop."""
    shape = list(tower.session.get_inputs()[0].shape)
    declared = [dim if isinstance(dim, int) else None for dim in shape[-2:]] if len(shape) == 4 else []
    crop = (steps.crop_height, steps.crop_width)
    if any(dim is not None and dim != want for dim, want in zip(declared, crop)):
        raise ModelError(f"{root / 'preprocessor_config.json'}: crop_size {crop[0]}x{crop[1]} (height x width), but "
                         f"{tower.path.name} takes {'x'.join(str(d) for d in shape[-2:])} pixels; the two must agree")


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
    """A JSON object file, or {} when its name is not there; ModelError when it is there but missing (a link to
    nothing), unreadable or not a JSON object."""
    if not os.path.lexists(path):
        return {}
    try:
        value = json.loads(checked_file(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelError(f"{path}: not readable JSON ({type(error).__name__}: {error})") from error
    if not isinstance(value, dict):
        raise ModelError(f"{path}: not a JSON object")
    return value


def clip_steps(root: Path) -> ClipImageSteps:
    """CLIP's image steps from ``preprocessor_config.json`` (both the old feature-extractor form, plain ints for
    ``size`` and ``crop_size``, and the image-processor form with dicts), with CLIPImageProcessor's defaults
    (``CLIP_DEFAULTS``: every key has one) for keys left out, as transformers does. ModelError for a processor that
    is not CLIP's, a step it turns off, or a value CLIP's steps cannot take (naming the key and value)."""
    path = root / "preprocessor_config.json"
    given = read_config(path)
    kind = given.get("image_processor_type") or given.get("feature_extractor_type")
    if kind and kind not in PROCESSORS:
        raise ModelError(f"{path}: image processor {kind}; ready-made ONNX towers run with CLIP's image processor "
                         "only (shortest-edge resize, centre crop, normalise)")
    config = {**CLIP_DEFAULTS, **{key: value for key, value in given.items() if value is not None}}
    flags = {key: config[key] for key in ("do_resize", "do_center_crop", "do_normalize", "do_rescale")}
    if not all(flags.values()):
        raise ModelError(f"{path}: {', '.join(k for k, v in flags.items() if not v)} false; mmindex reproduces CLIP's "
                         "full steps only")
    size, crop = config["size"], config["crop_size"]
    shortest = size if isinstance(size, int) else size.get("shortest_edge") if isinstance(size, dict) else None
    height, width = (crop, crop) if isinstance(crop, int) else \
        (crop.get("height"), crop.get("width")) if isinstance(crop, dict) else (None, None)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (shortest, height, width)):
        raise ModelError(f"{path}: size {size!r} and crop_size {crop!r}; CLIP's steps need a shortest_edge size "
                         "and a crop (positive whole numbers)")
    try:
        scale, resample = float(config["rescale_factor"]), int(config["resample"])
        mean, std = (tuple(float(v) for v in config[key]) for key in ("image_mean", "image_std"))
    except (TypeError, ValueError) as error:
        raise ModelError(f"{path}: rescale_factor, resample, image_mean or image_std is not a number (or a list of "
                         f"three): {error}") from error
    if abs(scale - 1 / 255) > 1e-9:
        raise ModelError(f"{path}: rescale_factor {scale}; CLIP's steps scale by 1/255")
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ModelError(f"{path}: image_mean {list(mean)} and image_std {list(std)}; CLIP's steps need three of "
                         "each (one per colour), the std values above 0")
    return ClipImageSteps(shortest, height, width, resample, mean, std, scale)


def _text_side(root: Path, tower: Tower):
    """The caption side from tokenizer.json (checked first by ``repo_backend``), tokenizer_config.json,
    special_tokens_map.json and config.json. A graph whose input_ids have a fixed length must be cut and padded
    to exactly that length (ModelError when the configs cut captions elsewhere)."""
    tokenizer_config = read_config(root / "tokenizer_config.json")
    special = read_config(root / "special_tokens_map.json")
    limit, source = _text_limit(root, tokenizer_config)
    pad = _token_text(tokenizer_config.get("pad_token")) or _token_text(special.get("pad_token"))
    if pad is None:
        raise ModelError(f"{root}: neither tokenizer_config.json nor special_tokens_map.json names a pad token")
    # loaded only when a model runs without torch
    from tokenizers import Tokenizer

    try:
        pad_id = Tokenizer.from_file(str(checked_file(root / "tokenizer.json"))).token_to_id(pad)
    except Exception as error:  # tokenizers' own errors for a file it cannot parse
        raise ModelError(f"{root / 'tokenizer.json'}: tokenizers cannot read it ({type(error).__name__}: "
                         f"{str(error)[:200]})") from error
    if pad_id is None:
        raise ModelError(f"{root}: the pad token {pad!r} is not in tokenizer.json")
    shape = list(tower.session.get_inputs()[tower.inputs.index("input_ids")].shape)
    fixed = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
    if fixed is not None and fixed != limit:
        raise ModelError(f"{tower.path}: its input_ids are {fixed} tokens long, but {source} cuts captions at "
                         f"{limit}; the two must agree")
    settings = {"max_length": limit, "padding": "max_length" if fixed else "longest",
                "truncation_side": tokenizer_config.get("truncation_side") or "right",
                "padding_side": tokenizer_config.get("padding_side") or "right",
                "pad_id": pad_id, "pad_token": pad, "pad_type_id": 0}
    return load_text_side(root / "tokenizer.json", settings, TextRule(limit, settings["padding"], source),
                          tower.inputs)


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
