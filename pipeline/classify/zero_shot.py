"""Zero-shot labels (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision",
§3.1): each label is embedded in prompt templates by the collection's own text model, and an image's probability
for each label is the softmax of its scaled cosine similarities to the label vectors, from the image vectors the
collection stores (no image is decoded or embedded again).
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from mmindex.connectors.base import Store
from mmindex.errors import UsageError
from mmindex.pipeline.classify.labels_file import check_templates, prompts
from mmindex.pipeline.classify.predictions import model_record
from mmindex.pipeline.collection.info import require_collection
from mmindex.pipeline.models.encoder import Runtime, encoder_for
from mmindex.pipeline.models.identity import model_folder, model_to_load
from mmindex.pipeline.models.quick import quick_encoder_for

log = logging.getLogger("mmindex.classify")

# CLIP's logit scale (the inverse softmax temperature) where the model does not give its own: CLIP learns it from
# 1/0.07 and clips it at 100, where the released models end (Radford et al. 2021, §2.5; the CLIP repository's
# model.py clamps logit_scale.exp() at 100).
DEFAULT_LOGIT_SCALE = 100.0


@dataclass
class ZeroShotLabeler:
    """A labeler (``predictions.Labeler``) over fixed label vectors.

    ``classes``: the labels, in the file's order; ``templates``: the prompt templates; ``class_vectors``: (C, d)
    float32, one L2-normalised vector per label (the mean of its templates' normalised text vectors, normalised
    again); ``logit_scale``: the factor on cosine similarities before the softmax, and ``logit_scale_source`` where
    it came from; ``model``: the record of the model whose space the vectors are in (``predictions.model_record``).
    """

    classes: list[str]
    templates: list[str]
    class_vectors: np.ndarray
    logit_scale: float
    model: dict[str, Any]
    logit_scale_source: str = "CLIP's default"
    kind: str = field(default="zero-shot", init=False)

    def predict_proba(self, vectors: np.ndarray) -> np.ndarray:
        """(n, d) image vectors → (n, C) float64 probabilities, rows summing to 1:
        ``softmax(logit_scale · cos(image, label))`` over the labels (Radford et al. 2021, Figure 3's pseudocode).
        Vectors are L2-normalised here (stored ones already are). Raises ``UsageError`` for another vector size."""
        vectors = np.asarray(vectors, dtype=np.float64)
        if vectors.ndim != 2 or vectors.shape[1] != self.class_vectors.shape[1]:
            raise UsageError(f"the image vectors have shape {vectors.shape}; these labels were made for "
                             f"{self.class_vectors.shape[1]}-d vectors of model {self.model.get('model')!r}")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        logits = self.logit_scale * (vectors / np.where(norms > 0, norms, 1.0)) @ self.class_vectors.T.astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)  # the same softmax, without overflow
        weights = np.exp(logits)
        return weights / weights.sum(axis=1, keepdims=True)

    def describe(self) -> dict[str, Any]:
        """What the collection's record keeps of this labeler: kind, labels, templates, logit scale and its source,
        and ``sha`` (SHA-256 of the kind, labels, templates, scale and model fingerprint): a run with the same sha
        writes the same fields, so a stopped run may continue; another sha starts over."""
        described = {"kind": self.kind, "labels": list(self.classes), "templates": list(self.templates),
                     "logit_scale": self.logit_scale, "logit_scale_source": self.logit_scale_source}
        identity = {**described, "model": self.model.get("fingerprint") or self.model.get("model")}
        described["sha"] = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return described


def zero_shot_labeler(store: Store, labels: Sequence[str], templates: Sequence[str] | None = None,
                      runtime: Runtime | None = None, place: str = "") -> ZeroShotLabeler:
    """The zero-shot labeler of ``labels`` for ``store``'s collection: the prompts are embedded by the collection's
    own text model, loaded as ``mmindex query`` loads it (the torch-free query bundle when it holds, else the full
    encoder; ``runtime``: its device, backend and threads).

    ``templates``: prompt templates, each with ``{}`` once (default ``labels_file.DEFAULT_TEMPLATES``). Raises
    StoreError for a missing collection, UsageError for a bad template or no label, ModelError /
    CollectionMismatchError when the collection's model cannot be loaded.
    """
    runtime = runtime or Runtime()
    require_collection(store, place)
    meta = store.metadata()
    encoder = quick_encoder_for(meta, None, None, None, runtime.backend, runtime.device, runtime.threads,
                                images=False)
    if encoder is None:
        encoder = encoder_for(meta, None, store.collection, device=runtime.device, backend=runtime.backend,
                              threads=runtime.threads)
    folder = (meta or {}).get("model_path") or _folder_of(meta)
    return labeler_from_encoder(encoder, labels, templates, model_record(store.spec()), folder)


def labeler_from_encoder(encoder: Any, labels: Sequence[str], templates: Sequence[str] | None,
                         model: dict[str, Any] | None = None, folder: str | None = None) -> ZeroShotLabeler:
    """The zero-shot labeler of ``labels`` with a loaded encoder (anything with ``encode_texts``: ``Encoder``,
    ``QuickEncoder``), as ingest makes it; ``model``: the record of the image model (default: the encoder's own);
    ``folder``: where the model's weights are, for its logit scale (default: the encoder's ``path``)."""
    labels = list(labels)
    if not labels:
        raise UsageError("no labels to predict: give at least one")
    templates = check_templates(templates)
    texts = [text for label in labels for text in prompts(label, templates)]
    vectors = np.asarray(encoder.encode_texts(texts), dtype=np.float64).reshape(len(labels), len(templates), -1)
    class_vectors = average_templates(vectors)
    scale, source = model_logit_scale(folder or getattr(encoder, "path", None))
    return ZeroShotLabeler(labels, templates, class_vectors.astype(np.float32), scale,
                           model or model_record(encoder.spec()), source)


def average_templates(vectors: np.ndarray) -> np.ndarray:
    """(C, T, d) text vectors of C labels in T templates → (C, d) class vectors: each vector L2-normalised, the mean
    over the templates, normalised again (the CLIP repository's ``zeroshot_classifier``, Prompt_Engineering_for_
    ImageNet.ipynb)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    vectors = vectors / np.linalg.norm(vectors, axis=2, keepdims=True)
    mean = vectors.mean(axis=1)
    return mean / np.linalg.norm(mean, axis=1, keepdims=True)


def model_logit_scale(folder: str | None) -> tuple[float, str]:
    """(scale, where it came from): ``exp(logit_scale)`` of a CLIP-style model's safetensors weights in ``folder``
    (the temperature it learned: 29.4 for demo/shapes-clip), else ``DEFAULT_LOGIT_SCALE`` (CLIP's 100)."""
    for path in _weight_files(folder):
        try:
            # safetensors reads one tensor without torch; only a labeler with a local model needs it
            from safetensors import safe_open

            with safe_open(path, framework="numpy") as weights:
                if "logit_scale" not in weights.keys():
                    continue
                value = float(np.asarray(weights.get_tensor("logit_scale"), dtype=np.float64).reshape(-1)[0])
        except Exception as error:  # noqa: BLE001 - unreadable weights: CLIP's scale, with a note
            log.info("cannot read logit_scale from %s (%s); using %s", path, error, DEFAULT_LOGIT_SCALE)
            continue
        if math.isfinite(value):
            return float(math.exp(min(value, math.log(DEFAULT_LOGIT_SCALE)))), "the model's learned logit_scale"
    return DEFAULT_LOGIT_SCALE, "CLIP's default (100)"


def _weight_files(folder: str | None) -> list[str]:
    if not folder or not os.path.isdir(folder):
        return []
    return sorted(glob.glob(os.path.join(folder, "*.safetensors"))) + sorted(
        glob.glob(os.path.join(folder, "*", "*.safetensors")))


def _folder_of(meta: dict[str, Any] | None) -> str | None:
    try:
        return model_folder(model_to_load(meta))
    except Exception:  # noqa: BLE001 - no folder to read a scale from: CLIP's default
        return None
