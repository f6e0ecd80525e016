"""The ONNX cache folder: where an export lies, what it is keyed by, the bars it is held to against torch, whether
it is whole, and how it is written (a temporary folder renamed into place, under a lock).

An export lies in ``$MMINDEX_CACHE/onnx/<fingerprint>-<versions>/<precision>/`` (``cache_folder``): ``versions``
is a digest of everything that changes an export (``export_versions``: mmindex, torch, transformers, onnx,
onnxscript and ONNX Runtime, the opset and this cache's format), so two environments sharing one cache (a
laptop's venv and a container, before and after an upgrade) each keep their own export instead of rebuilding
each other's. An export is held to two bars against torch's vectors for probe inputs (``probe_gap``): 1 - cosine
≤ 1e-3, and for fp32 at most 2e-3 in any coordinate — ten times the largest numeric noise seen across thread
counts and CPU kernels (2e-4; measured here at most 1.9e-7, the figures beside the constants). Nothing here
imports torch or ONNX Runtime: the fast query path reads caches too.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

import mmindex

FORMAT = 2  # bump when the exported graphs or the manifest change meaning: older caches are rebuilt
OPSET = 18
PROBES = "probes.npz"  # torch's vectors for the probe inputs, by modality
VERSIONED = ("torch", "transformers", "onnx", "onnxscript", "onnxruntime")

# How far an export's vectors may lie from torch's on the probes, when it is written and when a process first loads
# it. Two bars, both on L2-normalised vectors: 1 - cosine, and for fp32 the largest difference in one coordinate.
# Numeric noise, measured for issue #23 (AMD EPYC with AVX-512, torch 2.13.0, ONNX Runtime 1.32.0): torch with 1, 2 and 4 threads and its avx512 / avx2 / default kernels against ONNX
# Runtime with 1, 2 and 4 threads, on the demo model and fresh tiny, small and ViT-B/32-shaped CLIPs: at most
# 1.9e-7 in a coordinate, 1 - cosine at most 6e-13. A trained ViT-B/32 (larger activations) was seen at 2e-4 in
# a coordinate across thread counts (issue #23: the old bar of 1e-4 rebuilt its cache twice in an afternoon). The
# coordinate bar is 2e-3: ten times the largest noise seen, and twenty times under what the cosine bar alone
# allows in a coordinate (√(2·1e-3) ≈ 0.045); a damaged export misses it by orders of magnitude (tested).
# int8 trades accuracy for speed by design, its retrieval loss is for `eval` to measure.
COSINE_BAR = {"fp32": 1e-3, "int8": 2e-2}
MAX_ABS_FP32 = 2e-3


def default_cache_root() -> Path:
    """``$MMINDEX_CACHE``, else ``$XDG_CACHE_HOME/mmindex``, else ``~/.cache/mmindex``."""
    if os.environ.get("MMINDEX_CACHE"):
        return Path(os.environ["MMINDEX_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mmindex"


def export_versions() -> dict[str, str]:
    """The versions an export depends on: mmindex's, the exporter's and the runtime's, the opset and the format.
    Read from the installed packages' metadata (no import)."""
    versions = {"mmindex": mmindex.__version__, "format": str(FORMAT), "opset": str(OPSET)}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "none"
    return versions


def cache_folder(root: str | os.PathLike, fingerprint: str, precision: str) -> Path:
    """Where the export of the model with ``fingerprint`` at ``precision`` lies under ``root`` for these versions."""
    versions = hashlib.sha256(json.dumps(export_versions(), sort_keys=True).encode()).hexdigest()[:12]
    name = fingerprint.replace(":", "-").replace("/", "-")
    return Path(root) / "onnx" / f"{name}-v{versions}" / precision


# -- the bars --------------------------------------------------------------------------------------------------

def probe_gap(got: np.ndarray, expected: np.ndarray, precision: str) -> str | None:
    """How ``got`` (n, dim) differs from torch's ``expected`` beyond the precision's bars (``COSINE_BAR``, and
    ``MAX_ABS_FP32`` for fp32: set from measured noise, above), or None."""
    if got.shape != expected.shape:
        return f"have shape {got.shape}, torch's {expected.shape}"
    worst = float(1 - cosines(got, expected).min())
    if not worst <= COSINE_BAR[precision]:
        return f"differ from torch's by up to 1 - cosine = {worst:.2g} (allowed {COSINE_BAR[precision]:g})"
    if precision == "fp32":
        unit = lambda v: np.asarray(v, np.float64) / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
        largest = float(np.abs(unit(got) - unit(expected)).max()) if got.size else 0.0
        if not largest <= MAX_ABS_FP32:
            return f"differ from torch's by up to {largest:.2g} in a coordinate (allowed {MAX_ABS_FP32:g})"
    return None


def cosines(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1)
    return (got * expected).sum(axis=1) / np.maximum(norms, 1e-30)


# -- reading ---------------------------------------------------------------------------------------------------

def read_probes(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / PROBES, allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}


def read_manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def cache_problem(folder: Path, fingerprint: str) -> str | None:
    """Why ``folder`` is not a usable cache ("missing" when there is none), or None."""
    if not folder.exists():
        return "missing"
    try:
        manifest = read_manifest(folder)
    except (OSError, ValueError) as error:
        return f"its manifest cannot be read ({type(error).__name__})"
    if manifest.get("format") != FORMAT or manifest.get("fingerprint") != fingerprint:
        return f"it was written by another version (format {manifest.get('format')}) or for another model"
    if PROBES not in manifest.get("files", {}):
        return "it has no probe vectors to check it against"
    times = manifest.get("times", {})
    for name, size in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            return f"{name} is missing or has another size than when it was written"
        if name in times and path.stat().st_mtime_ns != times[name]:
            return f"{name} was modified after it was written"
    return None


def folder_state(folder: Path, manifest: dict[str, Any]) -> tuple:
    """The size, times and inode of each file of an export (its manifest's, and the manifest): what says, without
    reading them, that an export checked once is unchanged (a file rewritten in place and dated back gets a new
    change time, which no program can set back). The query bundle written beside it later is not part of it."""
    state = []
    for name in sorted([*manifest.get("files", {}), "manifest.json"]):
        stat = (folder / name).stat()
        state.append((name, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino))
    return tuple(state)


# -- writing ---------------------------------------------------------------------------------------------------

def write_manifest(folder: Path, fingerprint: str, model: str, precision: str, inputs: dict[str, list[str]],
                   seconds: float) -> str:
    """Written last: a folder whose manifest lists every file at its size is a finished export. Returns its id."""
    written = [p for p in sorted(folder.iterdir()) if p.is_file()]
    files = {p.name: p.stat().st_size for p in written}
    times = {p.name: p.stat().st_mtime_ns for p in written}  # a file changed in place keeps its size, not its time
    manifest = {"format": FORMAT, "fingerprint": fingerprint, "model": model, "precision": precision, "opset": OPSET,
                "inputs": inputs, "files": files, "times": times, "export_id": uuid.uuid4().hex,
                "seconds": round(seconds, 1), "versions": export_versions(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = folder / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    for file in [*folder.iterdir(), folder]:  # on disk before the rename makes it visible
        with contextlib.suppress(OSError):
            handle = os.open(file, os.O_RDONLY)
            try:
                os.fsync(handle)
            finally:
                os.close(handle)
    return manifest["export_id"]


def publish(scratch: Path, target: Path) -> None:
    """Rename ``scratch`` to ``target``, first moving aside a broken ``target`` (renames are atomic)."""
    if target.exists():
        aside = target.parent / f".{target.name}.broken-{uuid.uuid4().hex[:8]}"
        os.rename(target, aside)
        shutil.rmtree(aside, ignore_errors=True)
    try:
        os.rename(scratch, target)
    except OSError:
        # Only without file locks (another exporter published first): keep theirs if it is whole.
        if cache_problem(target, read_manifest(scratch)["fingerprint"]) is not None:
            raise


@contextlib.contextmanager
def export_lock(folder: Path):
    """One exporter at a time per cache folder, across processes (an OS file lock, released if killed)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # Windows: the atomic rename alone keeps the cache whole
        yield
        return
    with open(folder.parent / f".{folder.name}.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
