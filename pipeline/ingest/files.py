"""Find the input files: files, folders (searched recursively, hidden and ``_`` entries skipped), globs and
object-store URIs (anything ``pyarrow.fs.FileSystem.from_uri`` knows), all on one filesystem.

Folders are searched for Parquet files; a file named directly is taken whatever its name (an Arrow shard of a
``datasets`` folder, ``pipeline/ingest/arrow_shards.py``). Folders that ``datasets`` wrote are found before
this, by ``pipeline/ingest/hf_layout.py``.
"""
from __future__ import annotations

import fnmatch
import glob
import os
import posixpath
from typing import Sequence

import pyarrow as pa
import pyarrow.fs as pafs

from mmindex.errors import InputError

PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")


def discover(inputs: Sequence[str]) -> tuple[pafs.FileSystem, list[str], dict[str, str], dict[str, str]]:
    """``find_files``, plus each file's root: the folder it was found under (for Hive partition keys)."""
    if not inputs:
        raise InputError("no input given: pass Parquet files, directories or globs")
    filesystem: pafs.FileSystem | None = None
    files: list[str] = []
    display: dict[str, str] = {}
    roots: dict[str, str] = {}
    for item in inputs:
        fs, paths, prefix, root = _expand(item)
        if filesystem is None:
            filesystem = fs
        elif type(fs) is not type(filesystem):
            raise InputError(f"all inputs must be on one filesystem; {item!r} is on another")
        if not paths:
            raise InputError(f"no Parquet files found for {item!r}")
        for path in paths:
            if path not in display:
                files.append(path)
                display[path] = prefix + path
                roots[path] = root
    return filesystem, files, display, roots


def _expand(item: str) -> tuple[pafs.FileSystem, list[str], str, str]:
    """(filesystem, Parquet files, display prefix, the folder the files were found under)."""
    if "://" in item:
        try:
            fs, path = pafs.FileSystem.from_uri(item)
        except (pa.ArrowException, ValueError, OSError) as error:
            raise InputError(f"cannot open {item!r}: {error}") from error
        prefix = item.split("://", 1)[0] + "://"
        return fs, _expand_on(fs, path), prefix, _root(path)
    local = item
    fs = pafs.LocalFileSystem()
    if glob.has_magic(local):
        matches = sorted(glob.glob(local, recursive=True))
        paths: list[str] = []
        for match in matches:
            paths.extend(_expand_on(fs, os.path.abspath(match)))
        return fs, paths, "", _root(os.path.abspath(local))
    if not os.path.exists(local):
        raise InputError(f"input not found: {item}")
    return fs, _expand_on(fs, os.path.abspath(local)), "", _root(os.path.abspath(local))


def _root(path: str) -> str:
    """The folder above which folder names are not partition keys: the input's fixed part."""
    if glob.has_magic(path):
        return _glob_base(path)
    return path if not path.endswith(PARQUET_SUFFIXES) else posixpath.dirname(path)


def _glob_base(path: str) -> str:
    """The folder a glob starts in: ``/d/year=*/x.parquet`` → ``/d``."""
    return path[: min(path.index(c) for c in "*?[" if c in path)].rsplit("/", 1)[0]


def _expand_on(fs: pafs.FileSystem, path: str) -> list[str]:
    base, pattern = path, None
    if glob.has_magic(path):
        base = _glob_base(path)
        pattern = path
    info = fs.get_file_info(base)
    if info.type == pafs.FileType.File:
        return [base]
    if info.type != pafs.FileType.Directory:
        raise InputError(f"input not found: {path}")
    found = []
    for entry in fs.get_file_info(pafs.FileSelector(base, recursive=True)):
        relative = entry.path[len(base):].lstrip("/")
        # Skip hidden and bookkeeping files (_SUCCESS, .crc, _delta_log/ …) as Spark and pyarrow do.
        if entry.type != pafs.FileType.File or any(p.startswith(("_", ".")) for p in relative.split("/")):
            continue
        if entry.path.endswith(PARQUET_SUFFIXES):
            found.append(entry.path)
    if pattern:
        found = [f for f in found if fnmatch.fnmatch(f, pattern)]
    return sorted(found)
