"""Writing the query bundle beside a model's ONNX export: the tokenizer exactly as transformers runs it (checked
against transformers' ids on probe captions), the CLIP image steps, and a per-folder index by file sizes and times,
so that ``quick.py`` can embed queries later without torch. The ``Encoder`` writes it after loading an ``OnnxModel``.
"""
from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mmindex.pipeline.models.identity import file_signature, model_fingerprint, model_folder, racy
from mmindex.pipeline.models.onnx_cache import default_cache_root
from mmindex.pipeline.models.quick import (
    BUNDLE,
    ENCODING_FIELDS,
    FORMAT,
    TOKENIZER,
    checked_bundle,
    index_path,
    indexed_fingerprint,
    listed,
    load_tokenizer,
    read_json,
    sampled_digest,
    sha256_of,
    text_features,
)

log = logging.getLogger("mmindex.quick")


PROBE_TEXTS = ["a red circle", "蓝色的三角形", "A  Dog's\tday — déjà vu 🐕", "x"]


def write_bundle(model) -> Path | None:
    """Write the query bundle for a loaded ``OnnxModel`` (and its folder's index entry); the bundle path, or
    None when the model cannot have one (the reason is logged). Never raises for a bundle it cannot write."""
    try:
        return _write_bundle(model)
    except OSError as error:  # a read-only cache (baked into an image): the full path still works
        log.info("no fast query path for %s: the cache cannot be written (%s)", model.name, error)
        return None
    except Exception as error:  # noqa: BLE001 - an optimisation: the full query path still works
        log.warning("no fast query path for %s: %s: %s", model.name, type(error).__name__, error)
        return None


def _write_bundle(model) -> Path | None:
    if getattr(model, "temporary", False):
        log.info("no fast query path for %s: its export lies in a temporary folder (the cache cannot be written)",
                 model.name)
        return None
    folder = model_folder(model.name)
    if folder is None:
        log.info("no fast query path for %s: not a local folder or a model in the Hugging Face cache", model.name)
        return None
    signature = file_signature(folder)
    if any(racy(stamp[1]) for stamp in signature.values()):
        log.info("no fast query path for %s yet: its files changed in the last 2 s", model.name)
        return None
    # The index vouches for the fingerprint of the files it lists (quick.indexed_fingerprint): files changed since the
    # model loaded must not be listed under the loaded one's (model_fingerprint is kept per process while they hold).
    if model.fingerprint and os.path.isdir(model.name) and indexed_fingerprint(folder) != model.fingerprint \
            and model_fingerprint(folder) != model.fingerprint:  # hashed again only when no record vouches
        log.info("no fast query path for %s yet: its files changed since it loaded", model.name)
        return None
    target = model.cache_dir / BUNDLE
    manifest = json.loads((model.cache_dir / "manifest.json").read_text(encoding="utf-8"))
    current = read_json(target)
    if not _holds(current, manifest, model):
        bundle = _bundle_of(model, manifest)
        if bundle is None:
            return None
        _write_json(target, bundle)
    _write_json(index_path(folder, model.precision),
                {"format": FORMAT, "model_dir": folder, "files": signature, "sample": sampled_digest(folder),
                 "fingerprint": model.fingerprint, "cache_dir": export_location(model.cache_dir)})
    return target


def export_location(cache_dir: Path) -> str:
    """How the index names an export: relative to the cache root that holds the index when the export lies under
    it (a cache moved or copied whole, or set by another ``MMINDEX_CACHE``, still finds its own export), else
    absolute (``quick.export_folder`` reads both)."""
    folder, root = cache_dir.resolve(), default_cache_root().resolve()
    return str(folder.relative_to(root)) if folder.is_relative_to(root) else str(folder)


def _holds(bundle: dict[str, Any] | None, manifest: dict[str, Any], model) -> bool:
    """Whether an existing bundle belongs to this export and still passes its own check (on the loaded
    model's own sessions: no second copy of the towers at start-up)."""
    encoder, _ = checked_bundle(bundle, manifest, model.cache_dir, model.name, model.fingerprint, model.threads,
                          images=bool((bundle or {}).get("image")), sessions=model.sessions)
    return encoder is not None


def _bundle_of(model, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """What ``open_bundle`` needs; the tokenizer is checked against transformers' ids first."""
    twin = model.torch_backend
    text = image = None
    if "text" in manifest.get("inputs", {}):
        text = _text_part(model, twin, manifest["inputs"]["text"])
        if text is None:
            return None
    # The CLIP steps are there only when st_model's numpy path (clip_pixels) reproduced the model's own
    # processor when it loaded (fast_clip_preprocessor's check); other processors take the full path.
    steps = getattr(twin, "image_steps", None)
    if "image" in manifest.get("inputs", {}) and steps is not None and manifest["inputs"]["image"] == ["pixel_values"]:
        image = {"steps": asdict(steps), "image_size": twin.image_size, "center_crop": bool(twin.center_crop)}
    return {"format": FORMAT, "export_id": manifest.get("export_id"), "fingerprint": model.fingerprint,
            "model": model.name, "precision": model.precision, "dim": int(model.dim), "text": text, "image": image,
            "tokenizer_sha256": sha256_of(model.cache_dir / TOKENIZER)}


def _text_part(model, twin, inputs: list[str]) -> dict[str, Any] | None:
    tokenizer = getattr(twin, "tokenizer", None)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    rule = model.text_rule
    if backend is None or rule is None or not rule.max_length or not set(inputs) <= set(ENCODING_FIELDS):
        log.info("no fast query path for %s: its tokenizer is not a tokenizers one, or its text tower takes %s",
                 model.name, inputs)
        return None
    _write_text(model.cache_dir / TOKENIZER, backend.to_str())
    settings = {"max_length": int(rule.max_length), "padding": rule.padding,
                "truncation_side": getattr(tokenizer, "truncation_side", "right"),
                "padding_side": getattr(tokenizer, "padding_side", "right"),
                "pad_id": getattr(tokenizer, "pad_token_id", None), "pad_token": getattr(tokenizer, "pad_token", None),
                "pad_type_id": int(getattr(tokenizer, "pad_token_type_id", 0) or 0)}
    if settings["pad_id"] is None or settings["pad_token"] is None:
        log.info("no fast query path for %s: its tokenizer has no padding token", model.name)
        return None
    probes = _probe_texts(int(rule.max_length))
    quick = load_tokenizer(model.cache_dir / TOKENIZER, settings)
    expected = None
    for texts in (probes, probes[:1]):  # a batch (padded) and one alone
        want = {name: value.numpy().tolist() for name, value in twin.preprocess_texts(texts).items() if name in inputs}
        if listed(text_features(quick, texts, inputs)) != want:
            log.info("no fast query path for %s: tokenizers alone does not reproduce transformers' ids", model.name)
            return None
        expected = expected or want  # the batch's ids are the ones recorded
    return {"inputs": inputs, "settings": settings, "probes": probes, "probe_features": expected}


def _probe_texts(limit: int) -> list[str]:
    return PROBE_TEXTS + [" ".join(["a large purple ring at the top"] * (limit // 3 + 2))]


def _write_json(path: Path, value: dict[str, Any]) -> None:
    _write_text(path, json.dumps(value, ensure_ascii=False))


def _write_text(path: Path, text: str) -> None:
    """Write by temporary file and rename: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.parent / f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}"
    scratch.write_text(text, encoding="utf-8")
    os.replace(scratch, path)
