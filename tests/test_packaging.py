"""Installed, mmindex is one import name: `mmindex`, with no top-level `pipeline` or `connectors`.

Builds a wheel from a copy of the checkout and installs it, then the copy as an editable
install, into a fresh virtualenv, and imports from a folder outside the checkout.
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
result["page"] = (importlib.resources.files("mmindex.pipeline.serve") / "web" / "index.html").is_file()
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A copy of the checkout, so that builds leave nothing behind in the real one."""
    folder = tmp_path_factory.mktemp("packaging-src") / "mmindex-src"
    shutil.copytree(ROOT, folder, ignore=SKIP)
    return folder


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
    if result.returncode and "No matching distribution found for setuptools" in result.stderr:
        pytest.skip("building needs setuptools>=69 from the package index, which cannot be reached")
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


def test_wheel_installs_only_mmindex(fresh_env, source, tmp_path):
    python, site, outside = fresh_env
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
        assert found["page"], "the search page (pipeline/serve/web/index.html) is missing from the wheel"
        version = command(python, outside, "--version")
        assert version.returncode == 0 and version.stdout.strip() == f"mmindex, version {found['version']}"
        # Started inside a checkout (the Docker image's /app), ./mmindex shadows the installed
        # package; its subpackages must still be found.
        inside = subprocess.run([python, "-m", "mmindex", "--version"], cwd=source, capture_output=True, text=True)
        assert inside.returncode == 0 and inside.stdout.strip() == version.stdout.strip(), inside.stderr[-2000:]
        assert probe(python, source)["pipeline"] == str(source / "pipeline" / "__init__.py")
    finally:
        pip(python, "uninstall", "-y", "mmindex")


def test_editable_install_maps_the_top_level_folders(fresh_env, source):
    python, site, outside = fresh_env
    added = installed(site, lambda: pip(python, "install", "--no-deps", "-e", str(source)))
    try:
        # The editable finder maps mmindex, mmindex.pipeline and mmindex.connectors to the checkout.
        assert {name for name in added if not name.startswith(("__editable__", "mmindex-", "__pycache__"))} == set()
        assert any(name.startswith("__editable__") for name in added)
        found = probe(python, outside)
        assert found["errors"] == {"pipeline": "ModuleNotFoundError", "connectors": "ModuleNotFoundError"}
        assert found["mmindex"] == str(source / "mmindex" / "__init__.py")
        assert found["pipeline"] == str(source / "pipeline" / "__init__.py")
        assert found["connectors"] == str(source / "connectors" / "__init__.py")
        assert command(python, outside, "--help").returncode == 0
    finally:
        pip(python, "uninstall", "-y", "mmindex")


def test_python_dash_m_mmindex_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "mmindex", "--version"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("mmindex, version ")


def test_every_subpackage_is_listed_for_the_wheel():
    """A new folder under pipeline/ must be in pyproject's package list, or the wheel ships without it (the fast
    check of the slow install tests above)."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"mmindex"} | {
        "mmindex." + ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("pipeline", "connectors") for init in (ROOT / top).rglob("__init__.py")
        if "__pycache__" not in init.parts and "web" not in init.parent.relative_to(ROOT).parts}
    assert found - listed == set(), f"add to [tool.setuptools] packages in pyproject.toml: {sorted(found - listed)}"
