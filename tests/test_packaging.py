"""Installed, mmindex is one import name: `mmindex`, with no top-level `pipeline` or `connectors`.

Builds a wheel from a copy of the checkout and installs it, then the checkout itself as an
editable install, into a fresh virtualenv, and imports from a folder outside the checkout.
The virtualenv borrows this environment's dependencies (torch, click, …) through a path
entry, so nothing heavy is installed twice.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "test-artifacts",
                              "mmindex_data", ".pytest_cache")

# Run inside the fresh virtualenv, from a folder outside the checkout.
PROBE = r"""
import importlib, importlib.resources, json, sys
result = {"errors": {}}
for name in ("pipeline", "connectors"):
    try:
        importlib.import_module(name)
        result["errors"][name] = None
    except ImportError as error:
        result["errors"][name] = type(error).__name__
import mmindex
from mmindex import ingest, search, open_store, Encoder, IngestOptions, IngestSummary, Hit, MmindexError
import mmindex.pipeline.cli, mmindex.connectors.qdrant_edge
result["version"] = mmindex.__version__
result["mmindex"] = mmindex.__file__
result["pipeline"] = mmindex.pipeline.__file__
result["connectors"] = mmindex.connectors.__file__
result["page"] = (importlib.resources.files("mmindex.pipeline") / "web" / "index.html").is_file()
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory):
    """A new virtualenv that sees this environment's packages after its own (never this mmindex)."""
    base = tmp_path_factory.mktemp("packaging")
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    own = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    # A plain path line: the outer site-packages' own .pth files (our editable finder) are not run.
    Path(own, "zz_outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    outside = base / "elsewhere"
    outside.mkdir()
    return python, Path(own), outside


def pip(python: Path, *args: str) -> None:
    result = subprocess.run([python, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def probe(python: Path, cwd: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run([python, "-c", PROBE], cwd=cwd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def command(python: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    script = python.parent / ("mmindex.exe" if os.name == "nt" else "mmindex")
    return subprocess.run([script, *args], cwd=cwd, capture_output=True, text=True)


def installed(site: Path, install) -> set[str]:
    """What ``install()`` added to ``site``."""
    before = set(os.listdir(site))
    install()
    return set(os.listdir(site)) - before


def test_wheel_installs_only_mmindex(fresh_env, tmp_path):
    python, site, outside = fresh_env
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=SKIP)
    pip(python, "wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(source))
    wheel = next((tmp_path / "dist").glob("mmindex-*.whl"))
    added = installed(site, lambda: pip(python, "install", "--no-deps", str(wheel)))
    try:
        version = probe(python, outside)["version"]
        assert added == {"mmindex", f"mmindex-{version}.dist-info"}
        found = probe(python, outside)
        assert found["errors"] == {"pipeline": "ModuleNotFoundError", "connectors": "ModuleNotFoundError"}
        assert found["pipeline"] == str(site / "mmindex" / "pipeline" / "__init__.py")
        assert found["connectors"] == str(site / "mmindex" / "connectors" / "__init__.py")
        assert found["page"], "the search page (pipeline/web/index.html) is missing from the wheel"
        version = command(python, outside, "--version")
        assert version.returncode == 0 and version.stdout.strip() == f"mmindex, version {found['version']}"
    finally:
        pip(python, "uninstall", "-y", "mmindex")


def test_editable_install_maps_the_top_level_folders(fresh_env):
    python, site, outside = fresh_env
    added = installed(site, lambda: pip(python, "install", "--no-deps", "-e", str(ROOT)))
    try:
        # The editable finder maps mmindex, mmindex.pipeline and mmindex.connectors to the checkout.
        assert {name for name in added if not name.startswith(("__editable__", "mmindex-", "__pycache__"))} == set()
        assert any(name.startswith("__editable__") for name in added)
        found = probe(python, outside)
        assert found["errors"] == {"pipeline": "ModuleNotFoundError", "connectors": "ModuleNotFoundError"}
        assert found["mmindex"] == str(ROOT / "mmindex" / "__init__.py")
        assert found["pipeline"] == str(ROOT / "pipeline" / "__init__.py")
        assert found["connectors"] == str(ROOT / "connectors" / "__init__.py")
        assert command(python, outside, "--help").returncode == 0
    finally:
        pip(python, "uninstall", "-y", "mmindex")


def test_python_dash_m_mmindex_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "mmindex", "--version"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("mmindex, version ")
