"""Plain helper modules of the tests (fixtures live in conftest.py files). tests/ is on sys.path
(pyproject.toml: pythonpath = ["tests"]), so any test imports them as ``from helpers.serving import start``."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository root
