"""Towers that run without torch: ONNX Runtime sessions, a tokenizers ``Tokenizer`` and CLIP's image steps in
numpy and Pillow, behind the ``Backend`` interface, so that ``Encoder`` (and through it ingest's workers, serve's
batchers and queries) embeds with them unchanged and never imports torch, transformers or sentence-transformers.

Two sources build one:
- ``bundle_backend``: a model's own ONNX export and the query bundle beside it (``quick.open_bundle``: the files,
  the export, the tokenizer and the probe vectors all still hold), the torch-free run path of a model exported
  once with torch;
- ``onnx_repos.repo_backend``: a ready-made ONNX repository (FastEmbed's, transformers.js's layout).
Vectors come back from ``embed`` as (n, dim) float32 numpy arrays, not yet normalised (``Encoder`` normalises).
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmindex.errors import ModelError
from mmindex.pipeline.models.backend import TextRule
from mmindex.pipeline.models.onnx_cache import COSINE_BAR, MAX_ABS_FP32
from mmindex.pipeline.models.onnx_model import open_session, run_tower
from mmindex.pipeline.models.quick import TOKENIZER, load_tokenizer, open_bundle, text_features
from mmindex.pipeline.models.st_model import ClipImageSteps, clip_pixels

log = logging.getLogger("mmindex.towers")

CPU = ["CPUExecutionProvider"]


@dataclass
class Tower:
    """One ONNX graph: its file, its session (opened once), the inputs it takes and the output read from it
    (None: its first output)."""

    path: Path
    session: Any
    inputs: list[str]
    output: str | None = None

    def reopened(self, threads: int | None) -> "Tower":
        return replace(self, session=open_session(self.path, threads, CPU))


@dataclass
class TextSide:
    """How captions become the text tower's inputs: a tokenizer set to truncate and pad (``rule``), another that
    only counts (no truncation), and the names of the inputs the features carry."""

    tokenizer: Any
    counter: Any
    rule: TextRule
    inputs: list[str] = field(default_factory=lambda: ["input_ids", "attention_mask"])


class TowerBackend:
    """ONNX towers behind the ``Backend`` interface, without torch (``torch_free``): features and vectors are numpy.

    ``towers``: ``{"image": Tower, "text": Tower}`` (one or both); ``text``: the caption side (with a text
    tower); ``image_steps``: CLIP's resize, crop and normalise (with an image tower); ``image_input``: the
    name of the image tower's pixel input. ``precision``: fp32 or int8 (int8 captions run one at a time,
    ``onnx_model.run_tower``). Runs on the CPU only (``replica`` refuses another device).
    """

    kind = "onnx"
    torch_free = True
    module = None
    checked = False  # True: the load-time check already ran (``bundle_backend``); ``Encoder`` skips check_backend

    def __init__(self, name: str, towers: dict[str, Tower], *, dim: int, precision: str, threads: int | None,
                 text: TextSide | None = None, image_steps: ClipImageSteps | None = None,
                 image_input: str = "pixel_values", image_size: int | None = None, source: str = ""):
        self.name, self.towers, self.dim, self.precision, self.threads = name, towers, int(dim), precision, threads
        self.modalities = frozenset(towers)
        self.text, self.image_steps, self.image_input = text, image_steps, image_input
        self.text_rule = text.rule if text else None
        self._image_size = image_size
        self.source = source  # where the towers came from, for messages ("its query bundle", a repository)

    @property
    def image_size(self) -> int | None:
        if self.image_steps is None:
            return None
        return self._image_size or max(self.image_steps.crop_height, self.image_steps.crop_width)

    @property
    def center_crop(self) -> bool:
        return self.image_steps is not None

    @property
    def tolerance(self) -> float:
        """``check_backend``'s bar, as ``OnnxModel.tolerance`` sets it (fp32: the coordinate bar; int8: what its
        cosine bar implies in a coordinate)."""
        return MAX_ABS_FP32 if self.precision == "fp32" else math.sqrt(2 * COSINE_BAR[self.precision])

    def preprocess_images(self, images: Sequence[Any]) -> dict[str, Any]:
        """{image input: (n, 3, h, w) float32} by CLIP's steps (``st_model.clip_pixels``); thread-safe."""
        return {self.image_input: clip_pixels(list(images), self.image_steps)}

    def preprocess_texts(self, texts: Sequence[str]) -> dict[str, Any]:
        """{input_ids, attention_mask, …: (n, length) int64}, cut and padded by ``text_rule``; thread-safe (the
        tokenizer's settings are fixed once, so concurrent calls cannot change each other's). ``attention_mask`` is
        among them even for a graph that does not take it (``TextSide.inputs``; ``run_session`` feeds a graph only its
        own inputs): ``run_tower`` sorts fp32 captions and cuts int8 ones by it."""
        return text_features(self.text.tokenizer, list(texts), self.text.inputs)

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens in each text before truncation, special tokens included."""
        return [len(encoding.ids) for encoding in self.text.counter.encode_batch(list(texts), add_special_tokens=True)]

    def embed(self, features: dict[str, Any], modality: str) -> np.ndarray:
        """(n, dim) float32 raw vectors of ``preprocess_*`` output through the modality's tower (captions padded to
        the longest run sorted by length: ``onnx_model.run_tower``)."""
        tower = self.towers[modality]
        arrays = {key: value for key, value in features.items() if hasattr(value, "shape")}
        padding = self.text_rule.padding if self.text_rule else None
        return np.asarray(run_tower(tower.session, arrays, modality, self.precision, tower.output, padding),
                          dtype=np.float32)

    def replica(self, device: str) -> "TowerBackend":
        """The same towers in new sessions (their own thread pools), on the CPU only."""
        if device != "cpu":
            raise ModelError(f"model {self.name!r} runs without torch on ONNX Runtime's CPU provider; --devices "
                             f"{device} needs the torch path (MMINDEX_TORCH_FREE=0, or --backend torch)")
        twin = object.__new__(TowerBackend)
        twin.__dict__.update(self.__dict__)
        twin.towers = {modality: tower.reopened(self.threads) for modality, tower in self.towers.items()}
        return twin

    def reference(self, items: Sequence[Any], modality: str) -> np.ndarray | None:
        return None  # no model library here: the towers were checked against torch's vectors when they were made

    def weight_bytes(self) -> int:
        """Bytes of the ONNX files (and their external data) on disk, a memory hint for schedulers."""
        total = 0
        for tower in self.towers.values():
            for path in [tower.path, *tower.path.parent.glob(tower.path.name + ".data")]:
                total += os.path.getsize(path) if os.path.exists(path) else 0
        return total


def counting_tokenizer(path: Path):
    """A tokenizers ``Tokenizer`` from ``path`` that neither truncates nor pads (to count a caption's tokens)."""
    # loaded only when a model runs without torch
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def bundle_backend(model: str, precision: str, fingerprint: str | None, threads: int | None) -> TowerBackend | None:
    """The torch-free backend for ``model`` from its ONNX export and query bundle, or None when they do not hold
    (``quick.open_bundle`` says why in the log, and the full path loads the model). Both towers and the image steps
    must be in the bundle, for the export at ``precision`` of the model with ``fingerprint`` (None: a Hub id)."""
    quick = open_bundle(model, precision, fingerprint, images=True, threads=threads)
    if quick is None:
        return None
    bundle = quick.bundle
    settings = bundle["text"]["settings"]
    # The features carry the attention mask even for a tower that does not take it: int8 captions are cut to it,
    # fp32 ones sorted by it (onnx_model.run_tower).
    inputs = list(dict.fromkeys([*bundle["text"]["inputs"], "attention_mask"]))
    text = TextSide(quick.tokenizer, counting_tokenizer(quick.cache_dir / TOKENIZER),
                    TextRule(int(settings["max_length"]), settings["padding"], "the query bundle"), inputs)
    towers = {modality: Tower(quick.cache_dir / f"{modality}.onnx", quick.tower(modality),
                              [spec.name for spec in quick.tower(modality).get_inputs()])
              for modality in ("image", "text")}
    backend = TowerBackend(quick.name, towers, dim=quick.dim, precision=precision, threads=threads, text=text,
                           image_steps=quick.image_steps, image_size=quick.image_size, source="its query bundle")
    # ``check_backend`` ran on these very graphs when the bundle was written (the ONNX backend's load), with the
    # token ids transformers made; opening the bundle has just checked that the tokenizer makes those ids and that
    # the towers give torch's probe vectors (captions over the limit and in a padded batch included) within the
    # ONNX bar. Running it again would repeat seconds of forward passes at every start (ViT-B/32: 1.6 s on 2 cores).
    backend.checked = True
    return backend


def load_text_side(tokenizer_path: Path, settings: dict[str, Any], rule: TextRule, inputs: list[str]) -> TextSide:
    """A ``TextSide`` from a tokenizer.json and ``quick.load_tokenizer``'s settings; its inputs are the graph's
    ``inputs`` and ``attention_mask`` (``onnx_model.run_tower`` cuts and sorts captions by it)."""
    if not tokenizer_path.is_file():
        raise ModelError(f"{tokenizer_path.parent}: no {tokenizer_path.name}, which the text tower needs without torch")
    return TextSide(load_tokenizer(tokenizer_path, settings), counting_tokenizer(tokenizer_path), rule,
                    list(dict.fromkeys([*inputs, "attention_mask"])))
