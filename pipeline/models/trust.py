"""What a model folder may run when it loads: nothing, unless the user says so (``--trust-model-code``).

``check_model_trust`` looks at a model's local files before any model library opens them, and refuses:
- Python files in the folder (``modeling_*.py``, ``configuration_*.py``, a custom sentence-transformers module);
- ``auto_map`` (transformers' pointer to such code) or ``trust_remote_code: true`` in any of its JSON files;
- a sentence-transformers module (``modules.json``) whose class is not sentence-transformers' own;
- pickle weights (``.bin``, ``.pt``, ``.pth``, ``.ckpt``, ``.pkl``) that torch's ``weights_only`` loader refuses:
  a pickle that builds objects other than tensors, which a plain ``torch.load`` would run. Pickles it accepts are
  loaded by the libraries with ``weights_only=True`` too (transformers, sentence-transformers, open_clip).
A Hub id not yet downloaded has no local files to look at: the libraries get ``trust_remote_code=False``, which
makes them refuse the same code. The user's word is ``trusting(True)`` (the CLI's ``--trust-model-code``) or
``Encoder(trust_model_code=True)``.
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
from typing import Any, Iterator

from mmindex.errors import ModelError
from mmindex.pipeline.models.identity import is_open_clip, model_files, model_folder, parse_spec

HINT = ("mmindex runs nothing from a model folder unless told to: if you trust the model's author, pass "
        "--trust-model-code (MMINDEX_TRUST_MODEL_CODE=1; in Python, trust_model_code=True)")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
MAX_CONFIG_BYTES = 64 << 20  # a JSON file past this is no config (and is not parsed)


class _Trust:
    allowed = False  # the process's default, set by ``trusting`` (the CLI's --trust-model-code)


_TRUST = _Trust()


@contextlib.contextmanager
def trusting(allowed: bool) -> Iterator[None]:
    """Within the block, models load with their own code when ``allowed`` (a process-wide default: a service
    loading another collection's model from a request thread sees it too)."""
    before, _TRUST.allowed = _TRUST.allowed, bool(allowed)
    try:
        yield
    finally:
        _TRUST.allowed = before


def code_trusted(given: bool | None = None) -> bool:
    """``given`` when it is a word from the caller, else the process's default (``trusting``)."""
    return _TRUST.allowed if given is None else bool(given)


def check_model_trust(model: str, trusted: bool) -> None:
    """Refuse (ModelError, naming each file and how to opt in) a model whose local files would run code or
    unpickle objects when it loads, unless ``trusted``. A Hub id is looked at in the local Hugging Face cache."""
    if trusted:
        return
    if is_open_clip(model):
        local = parse_spec(model).local_path
        if local is None or not os.path.exists(local):
            return
        folder = local if os.path.isdir(local) else None
        reasons = folder_reasons(local) if folder else pickle_reasons([(os.path.basename(local), local)])
    else:
        folder = model_folder(model)
        if folder is None:
            return
        reasons = folder_reasons(folder)
    if reasons:
        shown = "; ".join(reasons[:5]) + (f"; and {len(reasons) - 5} more" if len(reasons) > 5 else "")
        raise ModelError(f"model {model!r} would run code from its files when it loads ({shown}). {HINT}")


def folder_reasons(folder: str) -> list[str]:
    """What in a model folder would run when it loads (empty: nothing)."""
    files = model_files(folder)
    reasons = [f"{relative} is Python code" for relative, _ in files if relative.endswith(".py")]
    for relative, path in files:
        if relative.lower().endswith(".json"):
            reasons += [f"{relative}: {reason}" for reason in config_reasons(relative, path)]
    return reasons + pickle_reasons([(r, p) for r, p in files if r.lower().endswith(PICKLE_SUFFIXES)])


def config_reasons(relative: str, path: str) -> list[str]:
    """``auto_map``, ``trust_remote_code: true`` or foreign module classes in one JSON file."""
    if os.path.getsize(path) > MAX_CONFIG_BYTES:
        return []
    with open(path, "rb") as handle:
        data = handle.read()
    if b"auto_map" not in data and b"trust_remote_code" not in data and not relative.endswith("modules.json"):
        return []  # the common case: no parse (tokenizer.json files are megabytes)
    try:
        value = json.loads(data)
    except ValueError:
        return []  # not JSON: no library reads settings from it
    reasons = [f"{key} {detail}" for key, detail in _code_keys(value)]
    if relative.split("/")[-1] == "modules.json" and isinstance(value, list):
        reasons += [f"module {module.get('type')!r} is not sentence-transformers' own" for module in value
                    if isinstance(module, dict) and not str(module.get("type", "")).startswith("sentence_transformers.")]
    return reasons


def _code_keys(value: Any) -> list[tuple[str, str]]:
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "auto_map" and isinstance(item, (dict, list, str)) and item:
                found.append((key, "names code to import"))
            elif key == "trust_remote_code" and item is True:
                found.append((key, "is set"))
            else:
                found += _code_keys(item)
    elif isinstance(value, list):
        for item in value:
            found += _code_keys(item)
    return found


def pickle_reasons(files: list[tuple[str, str]]) -> list[str]:
    """Pickle files that torch's ``weights_only`` loader refuses (it builds tensors and plain containers only).
    Files of those suffixes that are no pickle (OpenVINO's ``.bin``, say) cannot be ``torch.load``-ed at all."""
    files = [(relative, path) for relative, path in files if _looks_pickled(path)]
    if not files:
        return []
    # torch takes seconds to import: only a model folder holding pickle weights needs it here
    import torch

    reasons = []
    for relative, path in files:
        try:
            _load_weights_only(torch, path)
        except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, ValueError, EOFError) as error:
            first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            reasons.append(f"{relative} is a pickle that holds more than tensors ({first})")
    return reasons


def _looks_pickled(path: str) -> bool:
    """A zip archive (torch.save's format) or a raw pickle (its protocol opcode first)."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _load_weights_only(torch, path: str) -> None:
    try:  # a zip checkpoint (torch.save since 1.6) is mapped, not read: only its structure is unpickled
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:
        if "mmap" not in str(error):
            raise
        torch.load(path, map_location="cpu", weights_only=True)  # the legacy format cannot be mapped
