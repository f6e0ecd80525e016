"""The layout flags of `mmindex ingest` reach the collection; `query --exact` and
`--hnsw-ef` agree on the top hits."""
from __future__ import annotations

import json

from click.testing import CliRunner

from mmindex.pipeline.cli import main


def test_cli_layout_flags_reach_the_collection(tmp_path, tiny_model, sample_dir):
    args = ["--data-dir", str(tmp_path), "-c", "q"]
    result = CliRunner().invoke(main, ["ingest", str(sample_dir), *args, "--model", tiny_model, "--device", "cpu",
                                       "--quantization", "int8", "--hnsw-m", "8", "--on-disk", "-q"])
    assert result.exit_code == 0, result.output
    info = json.loads(CliRunner().invoke(main, ["info", *args, "--json"]).output)
    assert info["options"] == {"quantization": "int8", "hnsw_m": 8, "on_disk": True}
    exact = CliRunner().invoke(main, ["query", "a red circle", *args, "--exact", "--json", "--device", "cpu"])
    approx = CliRunner().invoke(main, ["query", "a red circle", *args, "--hnsw-ef", "128", "--json", "--device", "cpu"])
    assert exact.exit_code == approx.exit_code == 0, exact.output
    ids = lambda out: [json.loads(line)["id"] for line in out.splitlines()]  # noqa: E731
    assert ids(exact.output)[:3] == ids(approx.output)[:3]
