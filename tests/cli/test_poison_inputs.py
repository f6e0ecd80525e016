"""A query or eval text the model fails on is one clear error, or set aside, through the CLI (the
`poisoned` encoder: tests/conftest.py)."""
from __future__ import annotations

import json

from mmindex.pipeline.ingest.sample import write_sample


def test_query_with_a_failing_text_is_one_clear_error(poisoned, tiny_model, sample_dir, cli):
    # ingest rejects the rows with "purple" captions at stage embed (exit 3: over the default reject rate)
    # --backend torch: the poison is in the torch model (the fast path's own case is in models/test_quick_query.py)
    assert cli("ingest", sample_dir, "-c", "p", "--model", tiny_model, "-q", "--max-reject-rate", "1",
               "--backend", "torch").exit_code == 0
    result = cli("query", "a red circle", "a purple ring", "-c", "p", "--backend", "torch")
    assert result.exit_code == 1
    assert "the model failed on text 'a purple ring'" in result.output and "Traceback" not in result.output
    assert cli("query", "a red circle", "-c", "p", "--backend", "torch").exit_code == 0


def test_eval_sets_aside_the_rows_the_model_fails_on(poisoned, tiny_model, tmp_path, cli):
    data = tmp_path / "d"
    write_sample(data, rows=40, seed=2, width=32, height=32)
    import pyarrow.parquet as pq

    captions = [c for f in sorted(data.glob("*.parquet")) for c in pq.read_table(f).column("caption").to_pylist()]
    purple = sum("purple" in c for c in captions)
    assert 0 < purple < len(captions)
    result = cli("eval", data, "--model", tiny_model, "--json", "--backend", "torch")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["rejected"] == purple
    assert report["captions"] == len(captions) - purple and report["images"] == len(captions)
    assert report["exact"][0]["queries"] == len(captions) - purple
    assert any("the model failed on its caption" in warning for warning in report["warnings"])
