"""The fast query path: a query's texts (and images) embedded by ONNX Runtime and tokenizers alone, without
importing torch, transformers or sentence-transformers (together 5–10 s of imports for one sentence).

It runs from a *query bundle*, written beside a model's ONNX export (``onnx_model.py``) whenever an
``OnnxModel`` is loaded (``write_bundle``): the tokenizer exactly as transformers runs it
(``tokenizer.json``) with its truncation and padding settings, the CLIP image steps when the model
has them, and probes — captions with the token ids transformers made for them. A small index file per
model folder (``$MMINDEX_CACHE/query/<key>.json``) maps the folder to its export by the files' sizes
and modification times, so a query finds the export without hashing the weights.

``open_bundle`` uses a bundle only when everything still holds, else returns None and the caller loads
the model the full way (which says what is wrong, and writes a fresh bundle):
- the model folder's files have the sizes and times they had (a changed file falls back);
- the export is whole (``onnx_model.cache_problem``) and for the fingerprint the collection records;
- tokenizer.json has the hash it was checked with, the tokenizer makes the recorded ids for the probe
  captions (a tokenizers upgrade that changes them falls back), and the towers give torch's probe
  vectors within the bars ``OnnxModel`` holds its export to (``onnx_model.probe_gap``); once they pass,
  ``probe_stamp.py`` records it, and later opens of the same files with the same code skip the probes.
The vectors are therefore the ONNX backend's own, which ``OnnxModel`` checks against torch.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmindex.errors import EncodeError, ModelError
from mmindex.pipeline.models.backend import TextRule, cleaned_texts, isolate, part_of
from mmindex.pipeline.models.identity import (
    file_signature,
    is_open_clip,
    model_display_name,
    model_files,
    model_fingerprint,
    model_folder,
    model_to_load,
    open_regular,
    precision_to_load,
    racy,
    text_model_to_load,
)
from mmindex.pipeline.models.layouts import layout_of
from mmindex.pipeline.models.onnx_cache import cache_problem, default_cache_root, probe_gap, read_probes
from mmindex.pipeline.models.onnx_model import open_session, probe_images
from mmindex.pipeline.models.onnx_model import probe_texts as export_texts
from mmindex.pipeline.models.onnx_model import run_tower
from mmindex.pipeline.models.probe_stamp import stamp_holds, write_stamp
from mmindex.pipeline.models.st_model import ClipImageSteps, clip_pixels, decode_side

log = logging.getLogger("mmindex.quick")

FORMAT = 2  # 2: the index holds the files' change times, inodes and a sampled digest of their bytes
BUNDLE = "query.json"
SAMPLE_BLOCKS, SAMPLE_BYTES = 16, 1 << 16
TOKENIZER = "tokenizer.json"
FINGERPRINT_ONLY = "fingerprint"  # the index name of a folder's fingerprint record (no bundle)
# The text tower's inputs and the field of a tokenizers Encoding that holds each.
ENCODING_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


# -- writing (from a loaded OnnxModel, which has torch at hand) ------------------------------------------------


def checked_bundle(bundle: dict[str, Any] | None, manifest: dict[str, Any] | None, cache_dir: Path, name: str,
             fingerprint: str | None, threads: int | None, images: bool,
             sessions: dict[str, Any] | None = None) -> tuple["QuickEncoder | None", str | None]:
    """(a QuickEncoder over ``bundle``, None) when it belongs to the export ``manifest`` describes, its
    tokenizer.json is the one it was checked with and it passes its probes; else (None, why not)."""
    if not bundle or bundle.get("format") != FORMAT or bundle.get("export_id") != (manifest or {}).get("export_id"):
        return None, "the bundle is stale"
    if sha256_of(cache_dir / TOKENIZER) != bundle.get("tokenizer_sha256"):
        return None, "its tokenizer.json is not the one the bundle was checked with"
    try:
        encoder = QuickEncoder(bundle, cache_dir, name, fingerprint, threads, sessions)
        if stamp_holds(cache_dir, manifest, images):  # these files passed these probes here before (probe_stamp.py)
            return encoder, None
        failure = encoder.check(images)
    except Exception as error:  # noqa: BLE001 - a damaged bundle: the full path rebuilds it
        failure = f"{type(error).__name__}: {error}"
    if failure:
        return None, failure
    write_stamp(cache_dir, manifest, images)
    return encoder, None


# -- reading (no torch) --------------------------------------------------------------------------------------

class QuickEncoder:
    """The parts of ``Encoder`` a query uses, over a query bundle: ``encode_texts``, ``encode_images``
    (when the bundle has the image steps), ``image_size``, ``center_crop``, ``name``, ``dim``.
    Vectors: (n, dim) float32, L2-normalised; EncodeError names an input the towers fail on."""

    text_name = None
    text_fingerprint = None

    def __init__(self, bundle: dict[str, Any], cache_dir: Path, name: str, fingerprint: str | None,
                 threads: int | None, sessions: dict[str, Any] | None = None):
        self.bundle, self.cache_dir, self.name, self.fingerprint = bundle, cache_dir, name, fingerprint
        self.precision, self.dim, self.threads = bundle["precision"], int(bundle["dim"]), threads
        self.sessions: dict[str, Any] = dict(sessions or {})  # opened on first use, unless given
        self._session = lambda modality: open_session(cache_dir / f"{modality}.onnx", threads, ["CPUExecutionProvider"])
        text = bundle["text"]
        self.tokenizer = load_tokenizer(cache_dir / TOKENIZER, text["settings"])
        self.image_steps = None
        if bundle.get("image"):
            steps = bundle["image"]["steps"]
            self.image_steps = ClipImageSteps(**{**steps, "mean": tuple(steps["mean"]), "std": tuple(steps["std"])})

    @property
    def image_size(self) -> int | None:
        """What an image query is decoded toward (``st_model.decode_side``), as ``Encoder.image_size``."""
        return decode_side((self.bundle.get("image") or {}).get("image_size"), self.image_steps)

    @property
    def center_crop(self) -> bool:
        return bool((self.bundle.get("image") or {}).get("center_crop"))

    def tower(self, modality: str):
        if modality not in self.sessions:
            self.sessions[modality] = self._session(modality)
        return self.sessions[modality]

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        inputs = self.bundle["text"]["inputs"]
        return self._each(cleaned_texts(texts), "text", lambda part: text_features(self.tokenizer, part, inputs))

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        if self.image_steps is None:
            raise RuntimeError("this query bundle has no image steps")  # open_bundle(images=True) prevents it
        return self._each(list(images), "image", lambda part: {"pixel_values": clip_pixels(part, self.image_steps)})

    def _each(self, items: list, modality: str, features) -> np.ndarray:
        def run(part: list) -> np.ndarray:
            return _normalised(run_towers(self.tower(modality), features(part), modality, self.precision))

        vectors, failures = isolate(run, items, len(items), part_of, self.dim)
        if failures:
            raise EncodeError(failures, vectors, items, modality)
        return vectors

    def check(self, images: bool) -> str | None:
        """What is wrong with the bundle against its probes (ids and torch's vectors), or None."""
        text = self.bundle["text"]
        got = text_features(self.tokenizer, text["probes"], text["inputs"])
        if listed(got) != text["probe_features"]:
            return "the tokenizer here makes other token ids than transformers did for the probe captions"
        expected = read_probes(self.cache_dir)
        probes = {"text": export_texts(TextRule(text["settings"]["max_length"]))}
        if images:
            probes["image"] = probe_images()
        for modality, items in probes.items():
            vectors = self.encode_texts(items) if modality == "text" else self.encode_images(items)
            want = expected.get(modality)
            if want is None:
                return f"its {modality} probe vectors are missing"
            failure = probe_gap(vectors, want, self.precision)  # the bars OnnxModel holds the export to
            if failure:
                return f"its {modality} probe vectors {failure}"
        return None


def open_bundle(model: str, precision: str, recorded_fingerprint: str | None, *, images: bool = False,
                threads: int | None = None) -> QuickEncoder | None:
    """A ``QuickEncoder`` for ``model`` (a folder or Hub id) at ``precision``, or None when there is no usable
    bundle (the reason is logged): see the module docstring for what is checked. ``images``: image queries
    too. ``recorded_fingerprint``: the collection's (None for a Hub id, recorded by name)."""
    try:
        return _open_bundle(model, precision, recorded_fingerprint, images, threads)
    except Exception as error:  # noqa: BLE001 - a damaged index or bundle: the full path rebuilds it
        return _none(model, f"its bundle or index is damaged ({type(error).__name__}: {error})")


def _open_bundle(model: str, precision: str, recorded_fingerprint: str | None, images: bool,
                 threads: int | None) -> QuickEncoder | None:
    started = time.monotonic()

    if find_spec("onnxruntime") is None or find_spec("tokenizers") is None:
        return _none(model, "ONNX Runtime or tokenizers is not installed")
    folder = model_folder(model)
    if folder is None:
        return _none(model, "not a local folder or a model in the Hugging Face cache")
    if layout_of(folder) is not None:  # its own towers run without torch (onnx_repos.repo_backend), no bundle needed
        log.debug("%s is a ready-made ONNX repository: it runs without a bundle", model)
        return None
    index = read_json(index_path(folder, precision))
    if not index or index.get("format") != FORMAT or index.get("model_dir") != folder:
        return _none(model, "no bundle yet for this folder (a new, moved or copied folder, or a new MMINDEX_CACHE: it is "
                     "written when the model loads with --backend auto|onnx, and the next run is torch-free)")
    if index.get("files") != file_signature(folder) or index.get("sample") != sampled_digest(folder):
        return _none(model, "its files changed since the bundle was written")
    fingerprint = index.get("fingerprint")
    if recorded_fingerprint and fingerprint != recorded_fingerprint:
        return _none(model, "it is not the model the collection records")
    cache_dir = export_folder(index["cache_dir"])

    problem = cache_problem(cache_dir, fingerprint)
    if problem:
        return _none(model, f"its export is not usable ({problem})")
    bundle = read_json(cache_dir / BUNDLE)
    if bundle and (not bundle.get("text") or (images and not bundle.get("image")) or bundle.get("precision") != precision):
        return _none(model, "the bundle cannot run this query")

    encoder, failure = checked_bundle(bundle, read_json(cache_dir / "manifest.json"), cache_dir,
                                model_display_name(folder if os.path.isdir(model) else model), fingerprint, threads,
                                images)
    if failure:
        return _none(model, failure)
    log.info("fast query path for %s (%.2f s)", model, time.monotonic() - started)
    return encoder


def indexed_fingerprint(model: str) -> str | None:
    """The fingerprint (``identity.model_fingerprint``) a query index recorded for the local folder ``model``, when
    its files are still the ones it was made of by the checks the fast query path trusts (``file_signature``: sizes,
    times, change times, inodes; ``sampled_digest``), else None. It spares hashing the weights at every start of
    ``ingest``, ``serve`` or ``eval`` (ViT-B/32: 0.5–0.7 s). Besides the query indexes of each precision, the record
    ``remembered_fingerprint`` keeps for folders without a bundle (ready-made ONNX repositories, the torch path)."""
    if not os.path.isdir(model):
        return None
    folder = os.path.abspath(model)
    try:
        signature, sample = None, None
        for precision in ("fp32", "int8", FINGERPRINT_ONLY):
            index = read_json(index_path(folder, precision))
            if not index or index.get("format") != FORMAT or index.get("model_dir") != folder \
                    or not str(index.get("fingerprint") or "").startswith("sha256:"):
                continue
            signature = file_signature(folder) if signature is None else signature
            if index.get("files") != signature:
                continue
            sample = sampled_digest(folder) if sample is None else sample
            if index.get("sample") == sample:
                return index["fingerprint"]
    except (OSError, ValueError, ModelError):  # an unreadable folder: hashing it says what is wrong
        return None
    return None


def remembered_fingerprint(model: str) -> str | None:
    """``indexed_fingerprint(model)``, else ``identity.model_fingerprint(model)`` (raising what it raises), recorded
    beside the query indexes (``$MMINDEX_CACHE/query``) with the files' signature and sampled digest so the next start
    need not hash the weights again. Not recorded when a file changed while it was hashed or within the last 2 s
    (``racy``), or when the cache cannot be written (the fingerprint is still returned)."""
    known = indexed_fingerprint(model)
    if known or not os.path.isdir(model):
        return known or model_fingerprint(model)
    folder = os.path.abspath(model)
    try:
        before = file_signature(folder)
    except (OSError, ModelError):
        return model_fingerprint(model)  # says what is wrong with the folder
    fingerprint = model_fingerprint(model)
    try:
        if fingerprint and not any(racy(stamp[1]) for stamp in before.values()):
            sample = sampled_digest(folder)
            if file_signature(folder) == before:
                record = {"format": FORMAT, "model_dir": folder, "files": before, "sample": sample,
                          "fingerprint": fingerprint}
                target = index_path(folder, FINGERPRINT_ONLY)
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
                partial.write_text(json.dumps(record), encoding="utf-8")
                os.replace(partial, target)
    except (OSError, ModelError) as error:
        log.debug("fingerprint of %s not recorded: %s", model, error)
    return fingerprint


def _none(model: str, reason: str) -> None:
    log.info("no fast query path for %s: %s", model, reason)
    return None


# -- shared helpers -------------------------------------------------------------------------------------------

def sampled_digest(folder: str) -> str:
    """A digest of a model folder's files read in part, as cheap as a stat: small files whole, larger ones in
    ``SAMPLE_BLOCKS`` blocks of ``SAMPLE_BYTES`` spread evenly, the first and last included (1 MiB per weights
    file). Beside the files' change times (``file_signature``), it catches weights replaced by others of the same
    size dated back where change times say nothing (a filesystem without them, a clock set back)."""
    total = hashlib.sha256()
    span = SAMPLE_BLOCKS * SAMPLE_BYTES
    for relative, path in model_files(folder):
        with open_regular(path, folder) as stream:
            size = os.fstat(stream.fileno()).st_size
            total.update(f"{relative}\0{size}\0".encode())
            if size <= span:
                total.update(stream.read(span))
                continue
            for block in range(SAMPLE_BLOCKS):
                stream.seek((size - SAMPLE_BYTES) * block // (SAMPLE_BLOCKS - 1))
                total.update(stream.read(SAMPLE_BYTES))
    return total.hexdigest()


def export_folder(recorded: str) -> Path:
    """The export an index names (``bundle.export_location``): relative to the cache root now in use, or absolute."""
    path = Path(recorded)
    return path if path.is_absolute() else default_cache_root() / path


def index_path(folder: str, precision: str) -> Path:
    key = hashlib.sha256(f"{folder}\0{precision}".encode()).hexdigest()[:32]
    return default_cache_root() / "query" / f"{key}.json"


def load_tokenizer(path: Path, settings: dict[str, Any]):
    """A tokenizers ``Tokenizer`` set to truncate and pad as transformers' fast tokenizer does for this model."""
    # loaded only when the fast query path embeds text
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(settings["max_length"], strategy="longest_first", direction=settings["truncation_side"])
    tokenizer.enable_padding(direction=settings["padding_side"], pad_id=settings["pad_id"],
                             pad_type_id=settings["pad_type_id"], pad_token=settings["pad_token"],
                             length=settings["max_length"] if settings["padding"] == "max_length" else None)
    return tokenizer


def text_features(tokenizer, texts: list[str], inputs: list[str]) -> dict[str, np.ndarray]:
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=True)
    return {name: np.asarray([getattr(e, ENCODING_FIELDS[name]) for e in encodings], dtype=np.int64) for name in inputs}


def run_towers(session, features: dict[str, np.ndarray], modality: str, precision: str) -> np.ndarray:
    return run_tower(session, features, modality, precision)


def _normalised(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def sha256_of(path: Path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def listed(features: dict[str, np.ndarray]) -> dict[str, list]:
    return {name: value.tolist() for name, value in features.items()}


def quick_encoder_for(meta: dict[str, Any] | None, given: str | None, text_model: str | None, precision: str | None,
                      backend: str, device: str | None, threads: int | None, images: bool) -> QuickEncoder | None:
    """The fast path for a query on a collection (``meta``) with these options, or None for the full path.

    Used only where the full path would embed the same way: ``backend`` auto or onnx, on the CPU (a
    query's few inputs run there even on a GPU machine), one CLIP-style model for both modalities (not
    open_clip, no separate text model), and the collection's own model and precision; a mismatch is left
    to the full path, whose error says what differs. ``torch_free_enabled`` turns it off.
    """
    if not torch_free_enabled() or meta is None:
        return None
    if backend not in ("auto", "onnx") or (device or "auto") not in ("auto", "cpu"):
        return None
    try:
        if text_model_to_load(meta, text_model) is not None:
            return None
        model = model_to_load(meta, given)
    except ModelError:
        return None
    chosen = precision_to_load(meta, precision)
    if is_open_clip(model) or not model.strip() or chosen != meta.get("model_precision", "fp32"):
        return None
    recorded = meta.get("model_fingerprint")
    encoder = open_bundle(model, chosen, recorded, images=images, threads=threads)
    if encoder is None or encoder.dim != meta.get("dim", encoder.dim):
        return None
    if not recorded and model_display_name(meta.get("model", "")) != encoder.name:
        return None  # a Hub model is recorded by name
    encoder.name = model_display_name(meta.get("model") or encoder.name)  # a copied folder: the recorded name
    return encoder


OFF = ("0", "false", "no", "off")


def torch_free_enabled() -> bool:
    """Whether models may run without torch from their query bundle (queries, and ingest and serve through
    ``Encoder``): yes unless ``MMINDEX_TORCH_FREE`` or its older name ``MMINDEX_QUICK_QUERY`` is 0 (or false, no,
    off). Ready-made ONNX repositories (``onnx_repos.py``) have no torch path, so this does not apply to them."""
    return all(os.environ.get(name, "1").strip().lower() not in OFF for name in ("MMINDEX_TORCH_FREE",
                                                                               "MMINDEX_QUICK_QUERY"))
