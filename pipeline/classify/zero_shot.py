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
from mmindex.errors import InputError, UsageError
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
    it came from; ``model``: the record of the model whose space the vectors are in (``predictions.model_record``);
    ``text_model``: the fingerprint of a ``--text-model`` other than the collection's, else None.
    """

    classes: list[str]
    templates: list[str]
    class_vectors: np.ndarray
    logit_scale: float
    model: dict[str, Any]
    logit_scale_source: str = "CLIP's default"
    text_model: str | None = None  # a --text-model's fingerprint: its prompt vectors are other labels
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
        if self.text_model:
            identity["text_model"] = described["text_model"] = self.text_model
        described["sha"] = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return described


def zero_shot_labeler(store: Store, labels: Sequence[str], templates: Sequence[str] | None = None,
                      runtime: Runtime | None = None, place: str = "", model: str | None = None,
                      text_model: str | None = None) -> ZeroShotLabeler:
    """The zero-shot labeler of ``labels`` for ``store``'s collection: the prompts are embedded by the collection's
    own text model, loaded as ``mmindex query`` loads it (the torch-free query bundle when it holds, else the full
    encoder; ``runtime``: its device, backend and threads).

    ``templates``: prompt templates, each with ``{}`` once (default ``labels_file.DEFAULT_TEMPLATES``). ``model``
    and ``text_model``: ``--model`` / ``--text-model``, where to load them from when the recorded folders have
    moved, checked as ``query`` checks them (``models.encoder.encoder_for``: the model must be the collection's,
    by its weights' fingerprint; a text model must fit its image space). Raises StoreError for a missing
    collection, UsageError for a bad template or no label, InputError for two labels the model cannot tell apart
    (``check_distinct``), ModelError / CollectionMismatchError when the collection's model cannot be loaded.
    """
    runtime = runtime or Runtime()
    require_collection(store, place)
    meta = store.metadata()
    encoder = quick_encoder_for(meta, model, text_model, None, runtime.backend, runtime.device, runtime.threads,
                                images=False)
    if encoder is None:
        encoder = encoder_for(meta, model, store.collection, text_model=text_model, device=runtime.device,
                              backend=runtime.backend, threads=runtime.threads)
    folder = None if model else (meta or {}).get("model_path") or _folder_of(meta)  # None: the encoder's own
    labeler = labeler_from_encoder(encoder, labels, templates, model_record(store.spec()), folder)
    given_text = getattr(encoder, "text_fingerprint", None) if text_model else None
    if given_text != (meta or {}).get("text_model_fingerprint"):
        labeler.text_model = given_text  # another text model than the collection's: other labels (describe's sha)
    return labeler


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
    check_distinct(labels, class_vectors, prompt_limit(encoder, labels, templates))
    scale, source = model_logit_scale(folder or getattr(encoder, "path", None))
    return ZeroShotLabeler(labels, templates, class_vectors.astype(np.float32), scale,
                           model or model_record(encoder.spec()), source)


# Two label vectors this close (cosine) are one vector in float32: the labels split each image's probability.
SAME_VECTOR = 1 - 1e-6


def check_distinct(labels: Sequence[str], class_vectors: np.ndarray, cut: tuple[int | None, list[bool]]) -> None:
    """Refuse (InputError, one line) two labels whose class vectors ((C, d), L2-normalised) have a cosine of at least
    ``SAME_VECTOR``: the model cannot tell them apart, so they would split every image's probability between them
    and the second could never be the best label. ``cut``: (the text model's token limit, for each label whether
    its prompts were cut there), from ``prompt_limit``; when both labels were cut, the message says that is why."""
    vectors = np.asarray(class_vectors, dtype=np.float64)
    cosines = np.triu(vectors @ vectors.T, k=1)
    pairs = np.argwhere(cosines >= SAME_VECTOR)
    if not len(pairs):
        return
    i, j = (int(k) for k in pairs[0])
    limit, cut_flags = cut
    if limit and cut_flags and cut_flags[i] and cut_flags[j]:
        why = f"their prompts are the same after the text model cuts them at {limit} tokens"
    else:
        why = "the text model gives their prompts the same vector"
    raise InputError(f"labels {labels[i]!r} and {labels[j]!r} cannot be told apart: {why} (cosine "
                     f"{min(float(cosines[i, j]), 1.0):.6f}), so they would split every image's probability and "
                     f"{labels[j]!r} could never win; shorten or reword one of them")


def prompt_limit(encoder: Any, labels: Sequence[str], templates: Sequence[str]) -> tuple[int | None, list[bool]]:
    """(the encoder's token limit, for each label whether one of its prompts is longer than that), or (None, [])
    where the encoder does not say (``Encoder.max_text_tokens`` / ``captions_too_long``; the query bundle's
    tokenizer settings, its truncated encodings counted by their attention mask)."""
    texts = [text for label in labels for text in prompts(label, templates)]
    limit = getattr(encoder, "max_text_tokens", None)
    if limit and hasattr(encoder, "captions_too_long"):
        flags = encoder.captions_too_long(texts)
    else:
        settings = (getattr(encoder, "bundle", None) or {}).get("text", {}).get("settings", {})
        limit, tokenizer = settings.get("max_length"), getattr(encoder, "tokenizer", None)
        if not limit or tokenizer is None:
            return None, []
        flags = [sum(encoding.attention_mask) >= limit for encoding in tokenizer.encode_batch(texts)]
    per_label = len(templates)
    return int(limit), [any(flags[k * per_label:(k + 1) * per_label]) for k in range(len(labels))]


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
