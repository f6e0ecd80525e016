"""Which model is which: display names, file fingerprints, open_clip spec parsing, which model a collection loads,
and the checks that refuse a model that cannot fill a collection before it is loaded (minutes, for a large one).

Light: no model library is imported here, so the CLI, the fast query path and the stores' callers use it freely.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, replace
from stat import S_ISDIR, S_ISREG
from typing import Any, Callable

from mmindex.connectors.base import CollectionSpec, model_mismatch
from mmindex.errors import CollectionMismatchError, ModelError

DEFAULT_MODEL = "clip-ViT-B-32"

log = logging.getLogger("mmindex.models")

# What a fingerprint reads at most: a model folder holding more is refused (a wrong folder, or a file that is no
# model's). The largest CLIP-style checkpoints are tens of GB (EVA-CLIP 18B: 36 GB in fp16).
MAX_FILE_BYTES = 64 << 30
MAX_TOTAL_BYTES = 256 << 30
MAX_FILES = 20_000
CHUNK = 1 << 22


def model_fingerprint(model: str) -> str | None:
    """A digest of a local model folder's files, or None for a Hub id (recorded by its name).

    SHA-256 over every file's path (relative to the folder), size and SHA-256 of its bytes, in
    path order: config, tokenizer, preprocessor and weights. Hidden files and folders and
    Markdown files (the model card) are left out, so a copy or a moved folder has the same
    fingerprint and the same path with other weights has another. About 1 s per GB of weights.
    Only regular files are read, each at most ``MAX_FILE_BYTES`` and all together ``MAX_TOTAL_BYTES``
    (``model_files``); a SIGTERM or SIGINT stops the reading at once (``stoppable``).
    """
    if not os.path.isdir(model):
        return None
    # Hashed once per process while no file changes size, times or inode (ingest checks the model before loading).
    signature = file_signature(model)
    key = (os.path.abspath(model), json.dumps(signature))
    if key in _FINGERPRINTS:
        return _FINGERPRINTS[key]
    total = hashlib.sha256()
    with stoppable(f"fingerprinting the model folder {model}"):
        for relative, path in model_files(model):
            size, digest = hash_file(path, model)
            total.update(f"{relative}\0{size}\0{digest}\n".encode())
    fingerprint = "sha256:" + total.hexdigest()
    if not any(racy(stamp[1]) for stamp in signature.values()):
        _FINGERPRINTS[key] = fingerprint
    return fingerprint


_FINGERPRINTS: dict[tuple, str] = {}


def hash_file(path: str, model: str) -> tuple[int, str]:
    """(size, SHA-256 hex) of a regular file, read in chunks; ModelError when it is not a regular file any more or
    its size changed while it was read (a folder being written into is not a model yet)."""
    with open_regular(path, model) as stream:
        stat = os.fstat(stream.fileno())
        digest, size = hashlib.sha256(), 0
        while size <= stat.st_size and (chunk := stream.read(min(CHUNK, stat.st_size + 1 - size))):
            digest.update(chunk)
            size += len(chunk)
            check_stop()
    if size != stat.st_size:
        raise ModelError(f"model folder {model}: {path} changed size while it was read ({stat.st_size:,} bytes, then "
                         f"{size:,}); fingerprint it again once it is written")
    return size, digest.hexdigest()


def open_regular(path: str, model: str):
    """``path`` opened for reading in binary, or ModelError when it is not a regular file (any more)."""
    # O_NONBLOCK: a file swapped for a named pipe since it was listed must not block the open
    handle = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    stream = os.fdopen(handle, "rb")
    if not S_ISREG(os.fstat(handle).st_mode):
        stream.close()
        raise ModelError(f"model folder {model}: {path} is not a regular file any more")
    return stream


def file_signature(folder: str) -> dict[str, list[int]]:
    """{relative path: [size, mtime_ns, ctime_ns, inode]} of the files a model fingerprint covers (``model_files``):
    what says, without reading them, that they are still the files a fingerprint was made of (unless ``racy``).
    The change time and inode are the kernel's: a file rewritten in place and dated back (``touch -r``) keeps its
    size and mtime but gets a new ctime, which no program can set back."""
    signature = {}
    for relative, path in model_files(folder):
        stat = os.stat(path)
        signature[relative] = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
    return signature


def racy(mtime_ns: int) -> bool:
    """Whether a file's time is within 2 s of now: it may still change without its time moving (the clock's
    granularity), so a signature made of it proves nothing yet. Times in the future are fine: a change
    would set the time to now."""
    return abs(time.time_ns() - mtime_ns) < 2_000_000_000


def model_files(folder: str) -> list[tuple[str, str]]:
    """(path relative to ``folder`` with ``/``, path) of the files a model fingerprint covers, in path order (a
    folder's files, then its sub-folders): hidden files and folders, ``__pycache__`` and Markdown files (the model
    card) are left out, and so is whatever is not a regular file (a named pipe, a device such as /dev/zero, a
    socket, a dangling link). Symbolic links are followed inside the folder only (and, for a snapshot in the
    Hugging Face cache, into its repository's blobs), never round a loop. ModelError for a link out of the
    folder, a file over ``MAX_FILE_BYTES``, more than ``MAX_FILES`` files or ``MAX_TOTAL_BYTES`` in all."""
    root = os.path.realpath(folder)
    walk = _Walk(folder, _link_bounds(root))
    walk.visit(root, "", frozenset([root]))
    return walk.found


class _Walk:
    """One bounded walk of a model folder (``model_files``)."""

    def __init__(self, folder: str, bounds: tuple[str, ...]):
        self.folder, self.bounds = folder, bounds
        self.found: list[tuple[str, str]] = []
        self.total = 0

    def visit(self, directory: str, relative: str, ancestors: frozenset[str]) -> None:
        folders = []
        for name in sorted(os.listdir(directory)):
            check_stop()
            if name.startswith("."):
                continue
            path = os.path.join(directory, name)
            target = os.path.realpath(path) if os.path.islink(path) else path
            if target != path and not any(target == b or target.startswith(b + os.sep) for b in self.bounds):
                raise ModelError(f"model folder {self.folder}: {relative}{name} is a link to {target}, outside the "
                                 "folder; a fingerprint reads only the folder's own files, so copy the file in "
                                 "(cp -L) or pass the folder it lies in")
            try:
                stat = os.stat(target)
            except OSError:
                _skipped(self.folder, relative + name, "a dangling link")
                continue
            if S_ISDIR(stat.st_mode):
                if target not in ancestors and name != "__pycache__":  # a link to a folder above it: a loop
                    folders.append((name, target))
            elif not S_ISREG(stat.st_mode):
                _skipped(self.folder, relative + name, "not a regular file (a pipe, device or socket)")
            elif not name.lower().endswith(".md"):
                self._add(relative + name, path, stat.st_size)
        for name, target in folders:
            self.visit(target, f"{relative}{name}/", ancestors | {target})

    def _add(self, relative: str, path: str, size: int) -> None:
        self.total += size
        if size > MAX_FILE_BYTES or self.total > MAX_TOTAL_BYTES or len(self.found) >= MAX_FILES:
            limit = (f"{relative} holds {size:,} bytes, over the {MAX_FILE_BYTES:,} a model file may"
                     if size > MAX_FILE_BYTES else
                     f"its files hold over {MAX_TOTAL_BYTES:,} bytes" if self.total > MAX_TOTAL_BYTES else
                     f"it holds over {MAX_FILES:,} files")
            raise ModelError(f"model folder {self.folder}: {limit}; is it a model's folder? (only the files the "
                             "model needs belong there)")
        self.found.append((relative, path))


def _link_bounds(root: str) -> tuple[str, ...]:
    """Where links in a model folder may point: the folder, and for a snapshot in the Hugging Face cache
    (``models--ORG--NAME/snapshots/REV``) its repository folder, whose ``blobs/`` hold the files."""
    return (root, os.path.dirname(os.path.dirname(root))) if hub_snapshot_of(root) else (root,)


_SKIPPED: set[tuple[str, str]] = set()


def _skipped(folder: str, relative: str, why: str) -> None:
    if (folder, relative) not in _SKIPPED:  # said once per process: the fast query path lists the folder each time
        _SKIPPED.add((folder, relative))
        log.warning("model folder %s: %s is left out of its fingerprint: %s", folder, relative, why)


class _Stop:
    signal: int | None = None


_STOP = _Stop()


@contextlib.contextmanager
def stoppable(what: str):
    """While reading a model's files: a SIGTERM or SIGINT stops at once, exiting with 128 + the signal's number
    (a graceful-stop handler waiting for batches that do not exist yet would leave a long read running); Ctrl-C
    where Python's own handler was raises KeyboardInterrupt, as ever. Outside the main thread nothing is
    installed."""
    if threading.current_thread() is not threading.main_thread() or _STOP.signal is not None:
        yield
        return
    signals = [s for s in (signal.SIGTERM, signal.SIGINT) if signal.getsignal(s) not in (signal.SIG_IGN, None)]
    previous = {s: signal.signal(s, _record_stop) for s in signals}
    try:
        yield
        check_stop()  # a signal after the last check
    except _Stopped:
        number = _STOP.signal or signal.SIGTERM
        log.warning("%s: stopped while %s; nothing was written", signal.Signals(number).name, what)
        if previous.get(number) is signal.default_int_handler:
            raise KeyboardInterrupt from None  # Ctrl-C where Python's own handler was: as Python does
        raise SystemExit(128 + number) from None
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _STOP.signal = None


class _Stopped(Exception):
    pass


def _record_stop(number, frame) -> None:
    _STOP.signal = number


def check_stop() -> None:
    """Raise inside ``stoppable`` once a stop signal came (called between chunks of a long read; the handlers are
    the main thread's, and so is the stop)."""
    if _STOP.signal is not None and threading.current_thread() is threading.main_thread():
        raise _Stopped


def model_folder(model: str) -> str | None:
    """The local folder ``model`` loads from: itself (absolute) when it is a folder, else the Hub model's
    snapshot in the local Hugging Face cache (``ORG/NAME``, or ``sentence-transformers/NAME`` for a bare
    name, as sentence-transformers resolves it); None when neither is there."""
    if os.path.isdir(model):
        return os.path.abspath(model)
    if model.startswith(("/", ".", "~")) or model.count("/") > 1 or ":" in model:
        return None
    # loaded with the model libraries, only when a model is looked up
    from huggingface_hub import try_to_load_from_cache

    for repo in ([model] if "/" in model else [f"sentence-transformers/{model}", model]):
        for name in ("modules.json", "config.json"):
            try:
                found = try_to_load_from_cache(repo, name)
            except Exception:  # noqa: BLE001 - an id the Hub library refuses is simply not cached
                found = None
            if isinstance(found, str):
                return os.path.dirname(found)
    return None


def hub_snapshot_of(folder: str) -> tuple[str, str] | None:
    """(Hub id, revision) when ``folder`` is a snapshot in a Hugging Face cache (``…/models--ORG--NAME/snapshots/REV``,
    as the Hub library lays it out; ``models--NAME`` for an id without an owner), else None. The one reading of that
    layout: fingerprints (``_link_bounds``), ready-made repositories (``layouts.cached_repo``) and revisions use it."""
    snapshots = os.path.dirname(os.path.abspath(folder))
    repo = os.path.basename(os.path.dirname(snapshots))
    if os.path.basename(snapshots) != "snapshots" or not repo.startswith("models--"):
        return None
    return repo[len("models--"):].replace("--", "/", 1), os.path.basename(os.path.abspath(folder))


def hub_revision(model: str) -> str | None:
    """The revision (commit) of the Hugging Face cache snapshot ``model`` loads from: a Hub id's current snapshot
    in the local cache, or a snapshot folder given as such. None for any other folder, an open_clip spec, or a Hub
    id not in the cache (sentence-transformers downloads it)."""
    if is_open_clip(model):
        return None
    folder = os.path.abspath(model) if os.path.isdir(model) else model_folder(model)
    snapshot = hub_snapshot_of(folder) if folder else None
    return snapshot[1] if snapshot else None


def check_hub_revision(meta: dict[str, Any] | None, model: str | None, collection: str, key: str = "model") -> None:
    """Refuse a Hub id whose local cache now holds another revision than the one the collection was made with
    (``<key>_revision``, recorded once; a Hub id is otherwise recorded by its name, so a newer download would mix
    two models' vectors in one collection unseen). Raises CollectionMismatchError."""
    recorded = (meta or {}).get(f"{key}_revision")
    snapshot = hub_snapshot_of(model) if model and os.path.isdir(model) else None
    if not recorded or not model or (snapshot[0] if snapshot else model) != (meta or {}).get(key):
        return
    now = hub_revision(model)
    if now and now != recorded:
        what, option = ("text model", "--text-model") if key == "text_model" else ("model", "--model")
        given = (f"this run passes the snapshot folder of revision {now[:12]} ({model})" if snapshot else
                 f"the local Hugging Face cache now loads revision {now[:12]} of it (a newer download)")
        raise CollectionMismatchError(
            f"collection {collection!r} was made with {what} {meta.get(key)!r} at revision {recorded[:12]}, but "
            f"{given}: its vectors would not be the collection's. Pass {option} with that revision's snapshot folder "
            f"(…/snapshots/{recorded}), or ingest into a new collection")


def model_to_load(meta: dict[str, Any] | None, given: str | None = None) -> str:
    """What to load for a collection: ``given`` (--model), else the folder or Hub id it records.

    Raises ModelError when the recorded folder is gone, naming it and what to do.
    """
    if given is not None:  # an empty --model is refused by the Encoder, not taken for the default
        return given
    if meta is None:
        return DEFAULT_MODEL
    return _recorded_location(meta, "model", "--model")


def text_model_to_load(meta: dict[str, Any] | None, given: str | None = None) -> str | None:
    """The separate text model for a collection: ``given`` (--text-model), else the one it records, else None."""
    if given is not None:
        return given
    if meta is None or not meta.get("text_model"):
        return None
    return _recorded_location(meta, "text_model", "--text-model")


def precision_to_load(meta: dict[str, Any] | None, given: str | None = None) -> str:
    """The towers' precision for a collection: ``given`` (--model-precision), else the one it records, else fp32."""
    return given or (meta or {}).get("model_precision", "fp32")


def _recorded_location(meta: dict[str, Any], key: str, option: str) -> str:
    path = meta.get(f"{key}_path") or (meta[key] if _is_path(meta[key]) else None)
    if path is None:
        return meta[key]
    if os.path.exists(path) or (is_open_clip(path) and os.path.exists(parse_spec(path).local_path or "")):
        return path
    what = "text model" if key == "text_model" else "model"
    where = (f"{option} open_clip:ARCH/NEW_PATH with the checkpoint's new place" if is_open_clip(path)
             else f"{option} with the model's folder")
    raise ModelError(
        f"the collection's {what} {model_display_name(meta[key])!r} was loaded from {path}, which is not there "
        f"any more; pass {where} (a moved or copied model is accepted: the files are checked by fingerprint, "
        "not by path)"
    )


def recorded_model_changed(meta: dict[str, Any], loaded_from: str, fingerprint: str | None,
                           collection: str, key: str = "model") -> Exception:
    """The error for a collection whose recorded model folder now holds another model."""
    what, option = ("text model", "--text-model") if key == "text_model" else ("model", "--model")
    return CollectionMismatchError(
        f"collection {collection!r} loads its {what} {meta.get(key)!r} from {loaded_from}, but the files there are "
        f"no longer that model (fingerprint {str(fingerprint)[:19]}…, recorded "
        f"{str(meta.get(key + '_fingerprint'))[:19]}…); pass {option} with the folder of the model the "
        "collection was made with"
    )


def _is_path(identity: str) -> bool:
    return identity.startswith(("/", "\\")) or (len(identity) > 2 and identity[1] == ":" and identity[2] in "/\\")


def model_display_name(identity: str) -> str:
    """How a recorded model is shown to people: a local folder by its name, a Hub id as it is.

    ``/home/ana/models/shapes-clip`` → ``shapes-clip``; ``clip-ViT-B-32`` → ``clip-ViT-B-32``.
    The recorded identity may be a path on another machine, so this never touches the disk.
    """
    if _is_path(identity):
        name = identity.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        return name or identity
    return identity


def check_model_spec(model: str, option: str = "--model") -> None:
    """Refuse at once, naming ``option``, a model spec that can only fail: empty, a local path that is not
    there, or a file that is not an open_clip checkpoint. (A Hub id is looked up by the library.)"""
    if not model or not model.strip():
        raise ModelError(f"{option} is empty; give a model folder, a Hub id or an open_clip name")
    if is_open_clip(model):
        return
    if os.path.isfile(model):
        raise ModelError(f"{option} {model!r} is a file; give the model's folder (the one holding its config), or "
                         "open_clip:ARCH/FILE for an open_clip checkpoint")
    looks_local = model.startswith(("/", "./", "../", "~", "\\")) or _is_path(model) or (
        os.sep in model and os.path.isdir(os.path.dirname(model)))
    if looks_local and not os.path.exists(model):
        raise ModelError(f"{option} {model!r}: no such folder ({os.path.abspath(os.path.expanduser(model))})")


def model_source(model: str, known: Callable[[str], str | None] | None = None) -> tuple[str | None, str, str | None]:
    """(where it loads from: an absolute folder or a loadable open_clip spec, else None; the name shown and
    recorded; its fingerprint, or None for a Hub id or pretrained tag). A Hugging Face cache snapshot folder is its
    Hub id (``hub_snapshot_of``): named and recorded as the id, its revision checked (``check_hub_revision``).
    ``known(folder)``: the fingerprint of the folder's current files by other means (``quick.remembered_fingerprint``:
    a record that vouches for them, else hashed and recorded), or None to hash them here (``model_fingerprint``)."""
    if is_open_clip(model):
        spec = parse_spec(model)
        return (spec.loadable if spec.local_path else None), spec.name, spec.fingerprint()
    path = os.path.abspath(model) if os.path.isdir(model) else None
    snapshot = hub_snapshot_of(path) if path else None
    if snapshot:  # a Hugging Face cache snapshot is its Hub id at a revision (check_hub_revision), known by name
        return path, snapshot[0], None
    return path, model_display_name(path or model), (known and path and known(path)) or model_fingerprint(model)


PREFIX = "open_clip:"


HUB_PREFIX = "hf-hub:"  # open_clip's scheme for a Hub repository in its layout


LOCAL_PREFIX = "local-dir:"  # open_clip's scheme for a local folder in that layout


CONFIG_NAME = "open_clip_config.json"


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".npz")


def is_open_clip(model: str) -> bool:
    """Whether ``--model`` names an open_clip model: ``open_clip:…``, ``hf-hub:…``, ``local-dir:…``, or a local
    folder holding ``open_clip_config.json``. Touches the disk only for the folder check; imports nothing."""
    return (model.startswith((PREFIX, HUB_PREFIX, LOCAL_PREFIX))
            or os.path.isfile(os.path.join(model, CONFIG_NAME)))


@dataclass(frozen=True)
class OpenClipSpec:
    """A parsed open_clip ``--model``: what open_clip is called with, and what this machine holds of it.

    ``model_name``: an architecture (``ViT-B-32``), ``hf-hub:ORG/NAME`` or ``local-dir:/abs/folder``;
    ``pretrained``: a pretrained tag or an absolute checkpoint path (with an architecture only);
    ``local_path``: the folder or checkpoint file on this machine, absolute (None for tags and Hub ids).
    """

    model_name: str
    pretrained: str | None = None
    local_path: str | None = None

    @property
    def is_checkpoint(self) -> bool:
        return self.local_path is not None and self.pretrained is not None

    @property
    def name(self) -> str:
        """How the model is shown and recorded: a folder by its name, a checkpoint with its architecture."""
        if self.local_path is None:
            return self.model_name if self.pretrained is None else f"{PREFIX}{self.model_name}/{self.pretrained}"
        if self.is_checkpoint:
            return f"{PREFIX}{self.model_name}/{os.path.basename(self.local_path)}"
        return os.path.basename(self.local_path.rstrip("/\\")) or self.local_path

    @property
    def loadable(self) -> str:
        """A ``--model`` that loads this model again from any working folder (absolute paths)."""
        if self.is_checkpoint:
            return f"{PREFIX}{self.model_name}/{self.local_path}"
        return self.local_path or self.name

    def fingerprint(self) -> str | None:
        """A digest of the local files, or None for a pretrained tag / Hub id (recorded by name).

        A folder is fingerprinted like any model folder (``model_fingerprint``). A checkpoint
        file is hashed together with its architecture name: the same weights under ``ViT-B-32`` and
        ``ViT-B-32-quickgelu`` load alike but embed differently.
        """
        if self.local_path is None or not os.path.exists(self.local_path):
            return None
        if not self.is_checkpoint:
            return model_fingerprint(self.local_path)
        stat = os.stat(self.local_path)
        if not S_ISREG(stat.st_mode) or stat.st_size > MAX_FILE_BYTES:
            raise ModelError(f"model {self.name!r}: {self.local_path} is not a checkpoint file (a regular file of at "
                             f"most {MAX_FILE_BYTES:,} bytes)")
        with stoppable(f"fingerprinting the checkpoint {self.local_path}"):
            size, digest = hash_file(self.local_path, self.local_path)
        total = hashlib.sha256(f"open_clip:{self.model_name}\0{size}\0{digest}\n".encode())
        return "sha256:" + total.hexdigest()


def parse_spec(model: str) -> OpenClipSpec:
    """Split an open_clip ``--model`` into what open_clip's ``create_model_and_transforms`` takes; no import, no I/O
    beyond checking whether a path exists. Raises ModelError for a spelling that names no model."""
    rest = model[len(PREFIX):] if model.startswith(PREFIX) else model
    if rest.startswith(HUB_PREFIX):
        if not rest[len(HUB_PREFIX):].strip("/"):
            raise ModelError(f"model {model!r}: name a Hub repository after hf-hub:, e.g. "
                             "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
        return OpenClipSpec(rest)
    if rest.startswith(LOCAL_PREFIX) or os.path.isdir(rest):
        folder = rest[len(LOCAL_PREFIX):] if rest.startswith(LOCAL_PREFIX) else rest
        if not folder:
            raise ModelError(f"model {model!r}: name a folder after local-dir:")
        folder = os.path.abspath(os.path.expanduser(folder))
        return OpenClipSpec(LOCAL_PREFIX + folder, local_path=folder)
    architecture, _, pretrained = rest.partition("/")
    if not architecture or not pretrained:
        raise ModelError(
            f"model {model!r}: give an open_clip architecture and its pretrained weights, "
            "e.g. open_clip:ViT-B-32/laion2b_s34b_b79k (a pretrained tag) or open_clip:ViT-B-32/path/to/epoch_32.pt "
            "(a checkpoint file); without weights open_clip would make a randomly initialised model"
        )
    if os.path.exists(pretrained) or "/" in pretrained or os.sep in pretrained or \
            pretrained.lower().endswith(WEIGHT_SUFFIXES):
        path = os.path.abspath(os.path.expanduser(pretrained))
        return OpenClipSpec(architecture, pretrained=path, local_path=path)
    return OpenClipSpec(architecture, pretrained=pretrained)


@dataclass(frozen=True)
class ModelChoice:
    """What the user asked for (``--model``, ``--text-model``, ``--model-precision``), each None when not given, and
    what a collection's record turns that into (``resolve``): the models and precision to load."""

    model: str | None = None
    text_model: str | None = None
    precision: str | None = None

    def resolve(self, meta: dict[str, Any] | None) -> "ModelPlan":
        """The plan for a collection recording ``meta`` (None: a new collection). Raises ModelError for a recorded
        folder that is gone, and for a given spec that can only fail (``check_model_spec``)."""
        model = model_to_load(meta, self.model)
        text_model = text_model_to_load(meta, self.text_model)
        check_model_spec(model, "--model")
        if text_model is not None:
            check_model_spec(text_model, "--text-model")
        return ModelPlan(model, text_model, precision_to_load(meta, self.precision), self)


@dataclass(frozen=True)
class ModelPlan:
    """The models and precision a run loads (``ModelChoice.resolve``), and the choice they came from."""

    model: str
    text_model: str | None
    precision: str
    choice: ModelChoice

    def spec(self) -> CollectionSpec:
        """The collection spec these models would fill, from their files alone (the vector size is unknown: -1)."""
        _, name, fingerprint = model_source(self.model)
        _, text_name, text_fingerprint = model_source(self.text_model) if self.text_model else (None, None, None)
        return CollectionSpec(name, -1, fingerprint=fingerprint, text_model=text_name,
                              text_fingerprint=text_fingerprint, precision=self.precision)

    def check_fills(self, meta: dict[str, Any], existing: CollectionSpec, collection: str) -> None:
        """Refuse, before anything loads, models that cannot write into the collection ``existing`` describes.

        A model that was not given (the collection's own, by its recorded folder) whose files changed is named as
        such; given ones that differ get the mismatch itself. Raises CollectionMismatchError.
        """
        check_hub_revision(meta, self.model, collection)
        check_hub_revision(meta, self.text_model, collection, key="text_model")
        ours = self.spec()
        if self.precision != existing.precision:  # only the precision differs: say so, not "the files changed"
            ours.check_matches(existing, collection)
        if not self.choice.model and not ours.same_image_model(existing):
            raise recorded_model_changed(meta, self.model, ours.fingerprint, collection)
        if self.text_model and not self.choice.text_model and not ours.same_model(existing) \
                and ours.same_image_model(existing):
            raise recorded_model_changed(meta, self.text_model, ours.text_fingerprint, collection, key="text_model")
        ours.check_matches(existing, collection)

    def check_answers(self, meta: dict[str, Any], recorded: CollectionSpec, collection: str) -> None:
        """Refuse, before anything loads, an image model (or precision) that cannot answer queries on the collection
        ``recorded`` describes (a query's own text model only has to agree in vector size, checked after loading).
        Raises CollectionMismatchError."""
        if self.precision != recorded.precision:
            raise CollectionMismatchError(model_mismatch(recorded, replace(recorded, precision=self.precision),
                                                         collection))
        check_hub_revision(meta, self.model, collection)
        _, name, fingerprint = model_source(self.model)
        ours = CollectionSpec(name, -1, fingerprint=fingerprint, precision=self.precision)
        if not ours.same_image_model(replace(recorded, dim=-1)):
            if self.choice.model:
                raise CollectionMismatchError(model_mismatch(recorded, ours, collection))
            raise recorded_model_changed(meta, self.model, fingerprint, collection)
