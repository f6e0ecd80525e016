"""The Python API page's examples run as written, offline: the Hub model they name is swapped for the bundled demo
model and their data folder for a small sample, nothing else (docs/python-api.md)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from mmindex.pipeline.ingest.sample import write_sample

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "python-api.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def examples() -> list[str]:
    return BLOCK.findall(PAGE.read_text(encoding="utf-8"))


def test_the_page_has_examples():
    assert len(examples()) >= 2


@pytest.mark.parametrize("number", range(len(examples())))
def test_python_api_example_runs(number, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_sample(tmp_path / "data", rows=24, seed=3, width=48, height=40)
    code = examples()[number].replace('"clip-ViT-B-32"', repr(str(ROOT / "demo" / "shapes-clip")))
    assert "clip-ViT-B-32" not in code.replace("clip-ViT-B-32-multilingual", ""), "a Hub model left in the example"
    exec(compile(code, f"{PAGE.name} example {number + 1}", "exec"), {"__name__": "__docs__"})
    assert (tmp_path / "mmindex_data" / "photos").is_dir()
