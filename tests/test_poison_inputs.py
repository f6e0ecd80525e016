"""An input the model's forward pass fails on affects only itself: in a query, an eval, a served batch.

The kind: whatever the model raises on (a token past its embedding table, a shape it cannot take),
the other inputs of the same forward pass get their vectors, and the failing one gets one clear
error naming it (ingest's side of this is in test_stages.py: rejected at stage embed).
"""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from mmindex.errors import EncodeError
from mmindex.pipeline.ingest.sample import write_sample


@pytest.fixture
def poisoned(encoder, monkeypatch):
    """Every text with the token 'purple' makes the model raise (as a token id past the embedding table does)."""
    ids = encoder.text_backend.tokenizer("purple", add_special_tokens=False)["input_ids"]
    assert len(ids) == 1
    model_class = type(encoder.model)
    real = model_class.forward

    def forward(self, features, *args, **kwargs):
        tokens = features.get("input_ids")
        if tokens is not None and bool((tokens == ids[0]).any()):
            raise IndexError("index out of range in self")
        return real(self, features, *args, **kwargs)

    monkeypatch.setattr(model_class, "forward", forward)
    return encoder


def test_encode_names_the_failing_input_and_keeps_the_others(poisoned):
    texts = ["a red circle", "a purple ring", "a blue star"]
    with pytest.raises(EncodeError, match="the model failed on text 'a purple ring'.*IndexError") as caught:
        poisoned.encode_texts(texts)
    assert set(caught.value.failures) == {1}
    good = poisoned.encode_texts(["a red circle", "a blue star"])
    assert np.abs(caught.value.vectors[[0, 2]] - good).max() < 1e-6
    vectors, failures = poisoned.encode_each(texts)
    assert set(failures) == {1} and np.isnan(vectors[1]).all()


def test_query_with_a_failing_text_is_one_clear_error(poisoned, tiny_model, sample_dir, cli):
    # ingest rejects the rows with "purple" captions at stage embed (exit 3: over the default reject rate)
    # --backend torch: the poison is in the torch model (the fast path's own case is in test_quick_query.py)
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


def test_a_served_batch_fails_only_the_request_the_model_fails_on(poisoned):
    from mmindex.pipeline.serve.service import Batcher

    batcher = Batcher(poisoned.encode_texts, window_ms=200, max_batch=16)
    futures: dict[str, object] = {}

    def ask(text):
        futures[text] = batcher.submit([text])[0]

    threads = [threading.Thread(target=ask, args=(t,)) for t in ("a red circle", "a purple ring", "a blue star")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert futures["a red circle"].result(10).shape == (poisoned.dim,)
        assert futures["a blue star"].result(10).shape == (poisoned.dim,)
        with pytest.raises(EncodeError, match="a purple ring"):
            futures["a purple ring"].result(10)
    finally:
        batcher.close()
