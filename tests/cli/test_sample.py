"""`mmindex sample`: Parquet with images, and the Chinese columns."""
from __future__ import annotations

import pyarrow.parquet as pq


def test_sample_writes_parquet(run, tmp_path):
    result = run("sample", tmp_path / "s", "--rows", "7", "--files", "2", "--image-kind", "path")
    assert result.exit_code == 0 and "wrote 7 rows to 2 file(s)" in result.stdout
    assert len(list((tmp_path / "s" / "images").iterdir())) == 7


def test_sample_cli_writes_chinese_columns(cli, tmp_path):
    result = cli("sample", "s", "--rows", "3", "--width", "16", "--height", "16", "--caption-lang", "both")
    assert result.exit_code == 0, result.output
    assert {"caption_zh", "short_caption_zh"} <= set(pq.read_schema(tmp_path / "s" / "part-00000.parquet").names)
