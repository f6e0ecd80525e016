"""Which ready-made ONNX layout a model folder holds (``layout_of``), and the files each layout needs checked up front
(``checked_file``): read by ``onnx_repos`` (which runs the towers) and by ``quick`` (whose query bundles such folders
never have), without importing either.

Layouts (``onnx_repos`` describes them): ``"fastembed"`` (``model.onnx`` at the top) and
``"transformers.js"`` (``onnx/vision_model*.onnx`` / ``onnx/text_model*.onnx``; a folder whose ``onnx/`` holds only
the combined graph ``onnx/model*.onnx`` counts too, so that its refusal says which files are needed). A folder with
torch weights is none of them: it loads the torch way. A file counts as present when its name is there, even as a
link to nothing (the Hugging Face cache after an interrupted download), so that its refusal names it.
"""
from __future__ import annotations

import os
from pathlib import Path

from mmindex.errors import ModelError
from mmindex.pipeline.models.identity import hub_snapshot_of, model_folder

TORCH_WEIGHTS = ("modules.json", "pytorch_model.bin")
STEMS = {"image": "vision_model", "text": "text_model"}  # transformers.js's file names, in onnx/
COMBINED = "model"  # transformers.js's onnx/model.onnx: both towers in one graph, not used


def ready_made_folder(model: str) -> str | None:
    """The local folder of ``model`` when it is a ready-made ONNX repository, else None."""
    folder = model_folder(model)
    return folder if folder is not None and layout_of(folder) is not None else None


def layout_of(folder: str | os.PathLike) -> str | None:
    """``"transformers.js"``, ``"fastembed"`` or None (not a ready-made ONNX repository, or one with torch weights)."""
    root = Path(folder)
    if any(os.path.lexists(root / name) for name in TORCH_WEIGHTS) or any(root.glob("*.safetensors")):
        return None
    onnx = root / "onnx"
    if any(next(onnx.glob(f"{stem}*.onnx"), None) for stem in [*STEMS.values(), COMBINED]):
        return "transformers.js"
    if os.path.lexists(root / "model.onnx"):  # its config.json is checked when it loads (``checked_file``)
        return "fastembed"
    return None


def checked_file(path: Path, repo: str | None = None) -> Path:
    """``path`` when it is a regular file (after following links) that can be opened for reading; else ModelError
    naming it and why: missing, a link to nothing (an interrupted download: fetch it again, with ``hf download
    REPO`` for a Hub id ``repo``), not a file, or unreadable."""
    if path.is_file():
        try:
            with open(path, "rb") as handle:
                handle.read(1)
            return path
        except OSError as error:
            reason = f"unreadable ({type(error).__name__}: {error.strerror or error})"
    elif path.is_symlink():
        repo = repo or cached_repo(path)
        reason = f"a link to {os.readlink(path)}, which is missing (an interrupted download?"
        reason += f" run `hf download {repo}` again)" if repo else " fetch the file again)"
    elif path.exists():
        reason = "not a file"
    else:
        reason = "missing"
    raise ModelError(f"{path}: {reason}; the ready-made ONNX layout needs it")


def cached_repo(path: Path) -> str | None:
    """The Hub id ``ORG/NAME`` of a file in the Hugging Face cache (``…/models--ORG--NAME/snapshots/REV/…``), else
    None."""
    for folder in Path(path).parents:
        snapshot = hub_snapshot_of(str(folder))
        if snapshot:
            return snapshot[0]
    return None
