"""A record that a query bundle passed its probes on this machine, so that later starts do not repeat them.

Opening a bundle runs its probe captions and images through both towers and compares them with torch's probe
vectors (``quick.QuickEncoder.check``): for a ViT-B/32-shaped model that is 2–3 s of every ``ingest``,
``serve`` or image query's start on 2 cores. The outcome depends only on the files the check reads and on
the code that runs them, so it is recorded in ``checked.json`` beside the bundle, keyed by
- the size, modification and change times and inode of every file of the export, the bundle and its
  tokenizer (``onnx_cache.folder_state``: a file rewritten in place and dated back gets a new change time,
  which no program can set back), and
- the versions of ONNX Runtime, tokenizers, numpy and Pillow, the CPU and the Python that ran the check.
Any difference, or files changed within the last 2 s when the check ran (``identity.racy``: their times may
not move on the next change yet), and the probes run again. Images checked once cover later text-only opens.
"""
from __future__ import annotations

import json
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from mmindex.pipeline.models.identity import racy
from mmindex.pipeline.models.onnx_cache import folder_state

STAMP = "checked.json"
FORMAT = 1
COVERED = ("query.json", "tokenizer.json")  # beside the export's own files (its manifest's): what the check reads
PACKAGES = ("onnxruntime", "tokenizers", "numpy", "pillow")


def stamp_holds(cache_dir: Path, manifest: dict[str, Any], images: bool) -> bool:
    """Whether ``cache_dir``'s bundle passed its probes (images too when ``images``) with these very files and
    this code. Never raises: an unreadable stamp or a file gone is False."""
    try:
        stamp = json.loads((cache_dir / STAMP).read_text(encoding="utf-8"))
        return (isinstance(stamp, dict) and stamp.get("format") == FORMAT and (stamp.get("images") or not images)
                and stamp.get("key") == stamp_key(cache_dir, manifest))
    except (OSError, ValueError):
        return False


def write_stamp(cache_dir: Path, manifest: dict[str, Any], images: bool) -> None:
    """Record a passed check (best effort: a read-only cache keeps checking at each start). Nothing is written
    while a file it covers changed in the last 2 s."""
    try:
        key = stamp_key(cache_dir, manifest)
        if any(racy(entry[3]) or racy(entry[2]) for entry in key["files"]):
            return
        temporary = cache_dir / f".{STAMP}.tmp"
        temporary.write_text(json.dumps({"format": FORMAT, "images": bool(images), "key": key}), encoding="utf-8")
        temporary.replace(cache_dir / STAMP)
    except OSError:
        return


def stamp_key(cache_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The files' states ([name, size, mtime_ns, ctime_ns, inode]) and the code's versions. OSError when a file
    is gone."""
    files = [list(entry) for entry in folder_state(cache_dir, manifest or {})]
    for name in COVERED:
        stat = (cache_dir / name).stat()
        files.append([name, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino])
    return {"files": files, "versions": versions(), "cpu": cpu_name(), "python": sys.version.split()[0]}


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def cpu_name() -> str:
    """The CPU's model name (ONNX Runtime picks its kernels by the instructions it has), else the architecture."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine() or platform.processor()
