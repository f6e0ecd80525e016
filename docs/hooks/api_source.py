"""MkDocs hook: let mkdocstrings (griffe) find ``mmindex.pipeline`` and ``mmindex.connectors``.

pyproject.toml maps the top-level folders ``pipeline/`` and ``connectors/`` into the ``mmindex``
package (``[tool.setuptools.package-dir]``). Python's import system follows that mapping (an
editable install's finder, or a wheel), but griffe reads source folders and sees only
``mmindex/`` itself, so ``mmindex.pipeline.*`` cannot be found from the checkout or from the
editable install. This hook builds, for each build, a folder in which the mapping is real
(``mmindex/`` holding links to this repository's ``mmindex/*`` files and to ``pipeline/`` and
``connectors/``), read from pyproject.toml itself, and hands it to the python handler as its only
search path. The source is not copied: griffe reads the repository's files through the links.
"""
from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

from mkdocs.plugins import event_priority

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def package_dirs(root: Path = ROOT) -> dict[str, Path]:
    """Import name → source folder, as ``[tool.setuptools.package-dir]`` maps them."""
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    mapping = config["tool"]["setuptools"]["package-dir"]
    return {name: (root / folder).resolve() for name, folder in mapping.items()}


def _link(target: Path, link: Path) -> None:
    try:
        link.symlink_to(target, target_is_directory=target.is_dir())
    except OSError:  # no symlinks (some Windows setups): copy instead
        if target.is_dir():
            shutil.copytree(target, link, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(target, link)


def build_tree(dest: Path, root: Path = ROOT) -> Path:
    """Lay out every mapped package under ``dest`` by its import name; returns ``dest``."""
    mapped = package_dirs(root)
    for name in sorted(mapped, key=lambda n: n.count(".")):
        folder, here = mapped[name], dest.joinpath(*name.split("."))
        inner = [other for other in mapped if other.startswith(name + ".")]
        if not inner:
            here.parent.mkdir(parents=True, exist_ok=True)
            if not here.exists():
                _link(folder, here)
            continue
        # A package with packages mapped inside it: a real folder of links to its own entries.
        here.mkdir(parents=True, exist_ok=True)
        for entry in folder.iterdir():
            if entry.name != "__pycache__" and not (here / entry.name).exists():
                _link(entry, here / entry.name)
    return dest


# Before mkdocstrings' own on_config, which creates the python handler with the paths it finds.
@event_priority(100)
def on_config(config, **kwargs):
    dest = Path(tempfile.mkdtemp(prefix="mmindex-api-source-"))
    atexit.register(shutil.rmtree, dest, ignore_errors=True)
    build_tree(dest)
    handlers = config.plugins["mkdocstrings"].config.handlers
    handlers.setdefault("python", {})["paths"] = [os.fspath(dest)]
    return config
