"""CLIP-style models run by ONNX Runtime: the image and text towers exported once per model fingerprint and
versions, then loaded from a cache folder (``onnx_cache.cache_folder``: ``$MMINDEX_CACHE/onnx/...``, else
``~/.cache/mmindex/onnx/...``; a cache that cannot be written is replaced by a temporary folder, with a warning).

Everything but the forward pass is the sentence-transformers backend's (``st_model``): the model is loaded
there once, its preprocessing, text rule and reference are used as they are, and its torch forward pass is
the oracle the ONNX towers are checked against (``onnx_cache.probe_gap``: its bars, from measured noise) when they
are exported and the first time a process loads them (against torch's vectors for the probes, computed at
export and kept in the cache: a torch forward pass costs seconds at start-up). An export is written to a
temporary folder and renamed into place, under a lock, so a killed or concurrent export never leaves a half
cache.
"""
from __future__ import annotations

import copy
import errno
import hashlib
import logging
import math
import os
import shutil
import socket
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from mmindex.errors import ModelError
from mmindex.pipeline.models.identity import model_display_name, model_fingerprint
from mmindex.pipeline.models.onnx_cache import (
    COSINE_BAR,
    MAX_ABS_FP32,
    PROBES,
    cache_folder,
    cache_problem,
    default_cache_root,
    export_lock,
    folder_state,
    probe_gap,
    publish,
    read_manifest,
    read_probes,
    write_manifest,
)
from mmindex.pipeline.models.st_model import SentenceTransformerModel

log = logging.getLogger("mmindex.onnx")

OPSET = 18
PRECISIONS = ("fp32", "int8")
INSTALL_HINT = "pip install 'mmindex[onnx]'"
TOWERS = {"image": "get_image_features", "text": "get_text_features"}
# errno values that say a cache folder cannot be written: read-only, no permission, full, over quota
UNWRITABLE = {getattr(errno, name) for name in ("EROFS", "EACCES", "EPERM", "ENOSPC", "EDQUOT") if hasattr(errno, name)}

# Caches this process has checked against torch: (folder, export id, its files' sizes, times and inodes).
_VERIFIED: set[tuple] = set()


class OnnxModel:
    """A CLIP-style model whose towers run in ONNX Runtime, behind the ``Backend`` interface.

    ``threads``: ONNX Runtime's intra-op threads for each forward pass (None: one per core), so
    the pipeline can give the model N cores and its decode workers the rest. ``precision``:
    ``fp32`` or ``int8`` (dynamic quantisation of the exported fp32 towers, cached beside them).
    ``fingerprint``: the model's identity (``encoder.model_fingerprint``), computed when not given.
    ``half`` is accepted for the interface and ignored: the towers run in fp32 (or int8).
    After loading, ``exported`` says whether this load made the export and ``cache_dir`` where it lies.
    """

    kind = "onnx"

    def __init__(self, model: str, device: str = "cpu", half: bool = False, *, threads: int | None = None,
                 precision: str = "fp32", fingerprint: str | None = None, cache_root: str | os.PathLike | None = None,
                 trust_code: bool = False, torch_backend: SentenceTransformerModel | None = None,
                 temporary_cache: bool = True):
        runtime = import_runtime()
        if precision not in PRECISIONS:
            raise ModelError(f"unknown model precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        self.providers = _providers(runtime, device)
        self.device, self.threads, self.precision = device, threads, precision
        self.name = model

        # The torch model: preprocessing, the reference, and the oracle for the export. Kept on the CPU in fp32.
        self.torch_backend = twin = torch_backend or SentenceTransformerModel(model, "cpu", half=False,
                                                                             trust_code=trust_code)
        self._towers = _towers_of(twin, model)
        self.module, self.modalities, self.dim, self.text_rule = twin.module, twin.modalities, twin.dim, twin.text_rule
        self.fingerprint = fingerprint or _fingerprint(model, twin.module)
        self.cache_dir = cache_folder(cache_root or default_cache_root(), self.fingerprint, precision)
        self.exported = self.temporary = False
        try:
            self.sessions = self._load()
        except OSError as error:  # a cache folder that cannot be written (read-only, a file in the way, full)
            if not temporary_cache:
                raise ModelError(f"the ONNX cache {self.cache_dir} cannot be written ({type(error).__name__}: "
                                 f"{error}); set MMINDEX_CACHE to a writable folder, or use --backend torch") from error
            self.sessions = self._load_without_cache(error)

    def _load_without_cache(self, error: OSError) -> dict[str, Any]:
        """Export into a temporary folder for this process alone (removed when it ends), saying so once."""
        log.warning("the ONNX cache %s cannot be written (%s: %s): exporting into a temporary folder for this run "
                    "only; set MMINDEX_CACHE to a writable folder to keep the export", self.cache_dir,
                    type(error).__name__, error)
        self._scratch = tempfile.TemporaryDirectory(prefix="mmindex-onnx-")
        self.cache_dir = cache_folder(self._scratch.name, self.fingerprint, self.precision)
        self.temporary = True
        try:
            return self._load()
        except OSError as again:
            raise ModelError(f"model {self.name!r}: no folder to export it into ({type(again).__name__}: {again}); "
                             "set MMINDEX_CACHE to a writable folder with free space, or use --backend torch") from again

    # -- Backend -------------------------------------------------------------------------------------------
    @property
    def image_size(self) -> int | None:
        return self.torch_backend.image_size

    @property
    def image_steps(self):
        """The torch model's CLIP image steps (``st_model.ClipImageSteps``) or None: the same decode on both backends."""
        return getattr(self.torch_backend, "image_steps", None)

    @property
    def center_crop(self) -> bool:
        """The torch model's answer (CLIP's processor crops the centre): ingest decodes alike on both backends."""
        return self.torch_backend.center_crop

    @property
    def tolerance(self) -> float:
        """``check_backend``'s bar (max abs difference of unit vectors against transformers' reference).

        fp32: the coordinate bar the export is held to (``onnx_cache.MAX_ABS_FP32``, set from measured noise
        across thread counts and CPU kernels). int8: the bar its cosine bar implies: for unit vectors
        |u - v|∞ ≤ |u - v|₂ = √(2(1 - cos)), so 1 - cos ≤ COSINE_BAR allows at most √(2·COSINE_BAR) = 0.2 in any
        coordinate. The cosine bar itself is enforced per vector by this backend's own check against torch at
        export and first load.
        """
        return MAX_ABS_FP32 if self.precision == "fp32" else math.sqrt(2 * COSINE_BAR[self.precision])

    def preprocess_images(self, images: Sequence[Any]) -> dict[str, Any]:
        return self.torch_backend.preprocess_images(images)

    def preprocess_texts(self, texts: Sequence[str]) -> dict[str, Any]:
        return self.torch_backend.preprocess_texts(texts)

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        return self.torch_backend.token_counts(texts)

    def embed(self, features: dict[str, Any], modality: str) -> Any:
        # torch takes seconds to import: only code that runs a model loads it
        import torch

        return torch.from_numpy(run_tower(self.sessions[modality], features, modality, self.precision,
                                          padding=self.text_rule.padding if self.text_rule else None))

    def replica(self, device: str) -> "OnnxModel":
        """The same towers in new sessions (their own thread pools) on ``device``; the torch model is shared. The
        files are opened again, so they are checked again unless unchanged since this process checked them."""
        twin = copy.copy(self)
        twin.device, twin.providers = device, _providers(import_runtime(), device)
        try:
            twin.sessions = twin._open_checked(self.cache_dir)
        except (_BrokenCache, OSError, ValueError) as error:
            raise ModelError(f"model {self.name!r}: its ONNX cache {self.cache_dir} changed since it was loaded "
                             f"({error}); start again to rebuild it") from error
        return twin

    def reference(self, items: Sequence[Any], modality: str) -> np.ndarray | None:
        return self.torch_backend.reference(items, modality)

    # -- the cache ----------------------------------------------------------------------------------------
    def _folder(self, precision: str) -> Path:
        return self.cache_dir.parent / precision

    def _load(self) -> dict[str, Any]:
        """Sessions for the cached towers, exporting (or rebuilding a broken cache) first when needed."""
        if self.precision != "fp32":  # int8 is quantised from the fp32 export (locked only to build it)
            fp32 = self._folder("fp32")
            if cache_problem(fp32, self.fingerprint) is not None:
                with export_lock(fp32):
                    if cache_problem(fp32, self.fingerprint) is not None:
                        self._build("fp32")
        problem = cache_problem(self.cache_dir, self.fingerprint)
        if problem is None:
            try:
                return self._open_checked(self.cache_dir)
            except _BrokenCache as error:
                problem = str(error)
        with export_lock(self.cache_dir):
            if problem == "missing" and cache_problem(self.cache_dir, self.fingerprint) is None:
                try:  # another process built it while this one waited for the lock
                    return self._open_checked(self.cache_dir)
                except _BrokenCache as error:
                    problem = str(error)
            if problem != "missing":
                log.warning("rebuilding the ONNX cache %s: %s", self.cache_dir, problem)
            self._build(self.precision)
        return self._open_checked(self.cache_dir)

    def _open_checked(self, folder: Path) -> dict[str, Any]:
        """Sessions for ``folder``, checked against torch unless this process already did."""
        try:
            manifest = read_manifest(folder)
            # The files' sizes, times and inodes too: files rewritten in place since (and dated back) are checked again.
            key = (str(folder.resolve()), str(manifest.get("export_id")), folder_state(folder, manifest))
            sessions = self._sessions(folder)
        except Exception as error:  # ONNX Runtime's own errors (a truncated or foreign file), a file gone meanwhile
            raise _BrokenCache(f"ONNX Runtime cannot load it ({type(error).__name__}: {error})") from error
        if key not in _VERIFIED:
            try:
                expected = read_probes(folder)
            except (OSError, ValueError, KeyError) as error:
                raise _BrokenCache(f"its probe vectors cannot be read ({type(error).__name__})") from error
            failure = self._check(sessions, manifest.get("precision", self.precision), expected)
            if failure:
                raise _BrokenCache(failure)
            _VERIFIED.add(key)
        return sessions

    def _sessions(self, folder: Path) -> dict[str, Any]:
        return {modality: open_session(folder / f"{modality}.onnx", self.threads, self.providers)
                for modality in self._towers}

    def _build(self, precision: str) -> None:
        """Export (fp32) or quantise (int8) into a temporary folder, check it, then rename it into place.

        The caller holds the folder's lock, so temporary folders of earlier exports are left by killed
        processes and are removed here.
        """
        target = self._folder(precision)
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(f".{precision}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        scratch = target.parent / f".{precision}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        scratch.mkdir()
        try:
            started = time.monotonic()
            if precision == "fp32":
                log.warning("exporting model %s to ONNX Runtime, once (a minute for ViT-B/32 on 2 cores; cached in "
                            "%s)", model_display_name(self.name), target)
                inputs = self._export(scratch)
            else:
                log.info("quantising %s to %s once, into %s", self.name, precision, target)
                inputs = self._quantise(scratch)
            # torch's vectors for the probes: computed now for fp32, the same ones for a quantised copy.
            expected = self._torch_probes() if precision == "fp32" else read_probes(self._folder("fp32"))
            failure = self._check(self._sessions(scratch), precision, expected)
            if failure:
                raise ModelError(f"model {self.name!r} cannot run in ONNX Runtime ({precision}): {failure}; "
                                 "use --backend torch")
            np.savez(scratch / PROBES, **expected)
            export_id = write_manifest(scratch, self.fingerprint, self.name, precision, inputs,
                                       time.monotonic() - started)
            publish(scratch, target)
            # checked above: no second check on opening
            _VERIFIED.add((str(target.resolve()), export_id, folder_state(target, read_manifest(target))))
            self.exported = True
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _export(self, folder: Path) -> dict[str, list[str]]:
        """Both towers with torch.onnx (the dynamo exporter), batch and sequence axes dynamic."""
        # torch takes seconds to import: only code that runs a model loads it
        import torch

        quiet_exporter()
        examples = {"image": self._features(probe_images(), "image"),
                    "text": self._features(["a photo of a red circle on a dark background", "a cat"], "text")}
        names = {}
        for modality, method in self._towers.items():
            example = examples[modality]
            names[modality] = list(example)
            axes = {name: ({0: torch.export.Dim("batch")} if value.dim() < 2 or modality == "image"
                           else {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")})
                    for name, value in example.items()}
            tower = _tower(self.torch_backend.st[0].auto_model, method, names[modality]).eval()
            try:
                # Also when the caller is in inference mode (torch.export cannot trace there).
                with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(tower, tuple(example.values()), str(folder / f"{modality}.onnx"),
                                      input_names=names[modality], output_names=["embeds"],
                                      dynamic_shapes=(tuple(axes[name] for name in names[modality]),),
                                      opset_version=OPSET, dynamo=True, external_data=True, verbose=False)
            except ImportError as error:
                raise ModelError(f"exporting to ONNX needs onnx and onnxscript ({error}): {INSTALL_HINT}") from error
            except Exception as error:
                disk = disk_error(error)
                if disk is not None:  # the cache folder, not the model: handled as a cache that cannot be written
                    raise disk from error
                raise ModelError(f"model {self.name!r}: its {modality} tower cannot be exported to ONNX "
                                 f"({_export_failure(error)}); use --backend torch") from error
        return names

    def _quantise(self, folder: Path) -> dict[str, list[str]]:
        """int8 weights, activations quantised per batch at run time (onnxruntime.quantization.quantize_dynamic)."""
        # ONNX Runtime: loaded when a model runs on it
        from onnxruntime.quantization import QuantType, quantize_dynamic

        source = self._folder("fp32")
        advice = _DropAdvice()  # quantize_dynamic logs advice on the root logger; mmindex users cannot act on it
        logging.getLogger().addFilter(advice)
        try:
            for modality in self._towers:
                # reduce_range: 7-bit weights, so u8×s8 products cannot saturate on CPUs without VNNI (AVX2).
                quantize_dynamic(source / f"{modality}.onnx", folder / f"{modality}.onnx",
                                 weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                                 use_external_data_format=True)
        finally:
            logging.getLogger().removeFilter(advice)
        return read_manifest(source)["inputs"]

    # -- the check against torch ----------------------------------------------------------------------------
    def _features(self, items: list, modality: str) -> dict[str, Any]:
        # torch takes seconds to import: only code that runs a model loads it
        import torch

        backend = self.torch_backend
        raw = backend.preprocess_images(items) if modality == "image" else backend.preprocess_texts(items)
        return {key: value for key, value in raw.items() if isinstance(value, torch.Tensor)}

    def _probes(self) -> dict[str, list]:
        return {"image": probe_images(), "text": probe_texts(self.text_rule)}

    def _torch_probes(self) -> dict[str, np.ndarray]:
        """torch's vectors (the sentence-transformers forward pass) for the probes, by modality."""
        # torch takes seconds to import: only code that runs a model loads it
        import torch

        vectors = {}
        for modality, items in self._probes().items():
            if modality in self._towers:
                features = dict(self._features(items, modality), modality=modality)
                with torch.inference_mode():
                    vectors[modality] = self.torch_backend.embed(features, modality).float().numpy()
        return vectors

    def _check(self, sessions: dict[str, Any], precision: str, torch_vectors: dict[str, np.ndarray]) -> str | None:
        """What is wrong with ``sessions`` against torch's vectors for the probes, or None.

        Each probe vector, in a batch and alone (other batch sizes and caption lengths than the
        export's), within COSINE_BAR of torch's on the same preprocessed inputs.
        """
        for modality, items in self._probes().items():
            if modality not in self._towers:
                continue
            features = self._features(items, modality)
            expected = torch_vectors.get(modality)
            if expected is None:
                return f"torch's vectors for its {modality} probes are missing"
            try:
                together = run_tower(sessions[modality], features, modality, precision)
                alone = run_tower(sessions[modality], self._features(items[:1], modality), modality, precision)
            except Exception as error:
                return f"its {modality} tower fails in ONNX Runtime ({type(error).__name__}: {error})"
            for got, want, how in ((together, expected, "in a batch"), (alone, expected[:1], "alone")):
                failure = probe_gap(got, want, precision)
                if failure:
                    return f"{modality} vectors {how} {failure}"
        return None


class _DropAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


class _BrokenCache(Exception):
    """A cached export that cannot be used as it is (rebuilt once, then refused)."""


def _tower(model, method: str, names: list[str]):
    """One tower of a transformers CLIP-style model as a module: its inputs by position → the projected embeds
    (what ``get_image_features`` / ``get_text_features`` return, as sentence-transformers uses them)."""
    # torch takes seconds to import: only code that runs a model loads it
    import torch

    class Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            output = getattr(self.model, method)(**dict(zip(names, inputs)))
            return getattr(output, "pooler_output", output)

    return Tower()


def import_runtime():
    """onnxruntime, or a ModelError saying how to install it."""
    try:
        # ONNX Runtime: loaded when a model runs on it
        import onnxruntime
    except ImportError as error:
        raise ModelError(f"--backend onnx needs ONNX Runtime, which is not installed: {INSTALL_HINT}") from error
    return onnxruntime


def quiet_exporter() -> None:
    """Hide torch.onnx's per-step messages and its notes about torchvision ops it does not need."""
    for name in ("torch.onnx", "torch.onnx._internal.exporter._registration", "onnxscript", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _providers(runtime, device: str) -> list:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in runtime.get_available_providers():
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    raise ModelError(f"ONNX Runtime here cannot run on {device!r} (providers: "
                     f"{', '.join(runtime.get_available_providers())}); use --backend torch, or --device cpu")


def open_session(path: Path, threads: int | None, providers: list):
    runtime = import_runtime()
    options = runtime.SessionOptions()
    options.graph_optimization_level = runtime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = runtime.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = int(threads or 0)  # 0: ONNX Runtime's default, one per physical core
    options.inter_op_num_threads = 1
    if threads:
        # Idle model threads sleep instead of spinning, leaving their cores to the decode workers.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return runtime.InferenceSession(str(path), options, providers=providers)


CAPTION_CHUNK = 16  # fp32 captions per forward pass once sorted by length (bench/README.md #7, "Issue 27, after the
# review": the text tower 28 % faster on 13–22-token captions, chunks of 16 measured against 8, 32 and 64)


def run_tower(session, features: dict[str, Any], modality: str, precision: str,
              output: str | None = None, padding: str | None = None) -> np.ndarray:
    """(n, dim) raw embeddings of a batch of ``features`` through one tower (its output ``output``, else its first).

    int8 captions run one at a time, each without the batch's padding: dynamic quantisation takes its
    activation ranges from the whole input of a run, so a caption run among others would get another
    vector than alone (measured up to 0.06 in one coordinate), and a query's answer would depend on the
    queries that shared its forward pass. Images are batched (ingest's speed is in them): an int8 image
    vector depends slightly on its batch-mates (docs/throughput-and-gpus.md, "ONNX Runtime and int8").

    fp32 captions of a model padded to the batch's longest (``padding="longest"``, ``TextRule.padding``) run
    sorted by length, ``CAPTION_CHUNK`` at a time, each chunk cut to its own longest caption
    (``by_length``): the padding is masked, so each vector is the padded batch's, for less work. Any other
    ``padding`` (None, ``"max_length"``: models that pool a fixed position) keeps the batch as it is.
    Raises what ONNX Runtime raises for inputs the graph refuses.
    """
    size = min((len(value) for value in features.values() if hasattr(value, "shape")), default=0)
    if modality != "text" or size <= 1:  # one caption alone has no batch padding
        return run_session(session, features, output)
    if precision == "fp32":
        if padding == "longest" and "attention_mask" in features and size > CAPTION_CHUNK:
            return by_length(session, features, output)
        return run_session(session, features, output)
    keep_length = padding == "max_length"  # a graph of fixed length (SigLIP, a fixed-length export) takes its padding
    return np.concatenate([run_session(session, _one_caption(features, row, keep_length), output)
                           for row in range(size)])


def by_length(session, features: dict[str, Any], output: str | None = None,
              chunk: int = CAPTION_CHUNK) -> np.ndarray:
    """``run_session`` over a padded caption batch sorted by length (its ``attention_mask``'s row sums), ``chunk``
    rows at a time, each chunk keeping only the token columns one of its rows attends to (what the tokenizer
    makes of that chunk alone, padded on either side); rows come back in the batch's order.

    On captions of 13–22 tokens (bench/peers.py's) the text tower's time falls by about a fifth; on alt texts of
    5–77 tokens by more. Same vectors: the columns dropped are padding every row of the chunk masks.
    """
    arrays = {name: _as_numpy(value) for name, value in features.items() if hasattr(value, "shape")}
    mask = arrays["attention_mask"].astype(bool)
    order = np.argsort(mask.sum(axis=1), kind="stable")
    parts, step = [], max(1, chunk)
    for start in range(0, len(order), step):
        rows = order[start:start + step]
        keep = mask[rows].any(axis=0)
        parts.append(run_session(session, {name: _rows_and_columns(value, rows, keep) for name, value in arrays.items()},
                                 output))
    vectors = np.concatenate(parts)
    result = np.empty_like(vectors)
    result[order] = vectors
    return result


def _as_numpy(value) -> np.ndarray:
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)


def _rows_and_columns(value: np.ndarray, rows: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``value``'s ``rows``, and of a (n, tokens) input only the ``keep`` columns."""
    value = value[rows]
    return value[:, keep] if value.ndim == 2 and value.shape[1] == keep.shape[0] else value


def _one_caption(features: dict[str, Any], row: int, keep_length: bool = False) -> dict[str, Any]:
    """Row ``row`` of a caption batch as the tokenizer makes it alone: without the batch's padding, unless the model
    pads every caption to a fixed length (``keep_length``, or no attention mask): alone it is padded the same way."""
    one = {name: _as_numpy(value)[row:row + 1] for name, value in features.items() if hasattr(value, "shape")}
    mask = one.get("attention_mask")
    if mask is None or keep_length:
        return one
    return {name: _rows_and_columns(value, np.arange(1), mask[0].astype(bool)) for name, value in one.items()}


def run_session(session, features: dict[str, Any], output: str | None = None) -> np.ndarray:
    """The output ``output`` (else the first) of ``session`` fed the features it takes, cast to its input types."""
    feed = {}
    for spec in session.get_inputs():
        value = features[spec.name]
        value = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        feed[spec.name] = value.astype(np.int64 if "int64" in spec.type else np.float32, copy=False)
    return session.run([output] if output else None, feed)[0]


def disk_error(error: BaseException) -> OSError | None:
    """The OSError behind ``error`` (its causes and contexts) that says a folder cannot be written, or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in UNWRITABLE:
            return error
        error = error.__cause__ or error.__context__
    return None


def _export_failure(error: Exception) -> str:
    """The line of a torch.onnx error that says what failed (its message starts with generic advice)."""
    text = str(error)
    if "## Exception summary" in text:
        text = text.split("## Exception summary", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:400]


def _towers_of(backend, model: str) -> dict[str, str]:
    """The tower methods to export, or a ModelError for a model that is not one transformers two-tower model."""
    inner = getattr(backend.st[0], "auto_model", None)
    towers = {m: TOWERS[m] for m in sorted(backend.modalities) if m in TOWERS}
    if len(backend.st) != 1 or inner is None or not all(hasattr(inner, method) for method in towers.values()):
        raise ModelError(f"model {model!r}: --backend onnx exports CLIP-style models (one transformers model with "
                         "get_image_features / get_text_features); this one is not, so use --backend torch")
    return towers


def _fingerprint(model: str, module) -> str:
    """The model folder's fingerprint, or for a Hub id a digest of its loaded weights."""
    found = model_fingerprint(model)
    if found:
        return found
    # torch takes seconds to import: only code that runs a model loads it
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}\0{tuple(tensor.shape)}\0{tensor.dtype}\n".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return "weights-sha256:" + digest.hexdigest()


def probe_images() -> list:
    rng = np.random.default_rng(11)
    sizes = ((61, 93), (240, 200))
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


def probe_texts(rule) -> list[str]:
    limit = rule.max_length if rule and rule.max_length else 64
    return ["a red circle", "蓝色的三角形", " ".join(["a large purple ring at the top"] * (limit // 3 + 2)), "x"]
