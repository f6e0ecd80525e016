"""An input the model's forward pass fails on affects only itself: in a query, an eval, a served batch.

The kind: whatever the model raises on (a token past its embedding table, a shape it cannot take),
the other inputs of the same forward pass get their vectors, and the failing one gets one clear
error naming it (ingest's side of this is in tests/ingest/test_stages.py: rejected at stage embed).
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

from mmindex.errors import EncodeError


def test_encode_names_the_failing_input_and_keeps_the_others(poisoned):
    texts = ["a red circle", "a purple ring", "a blue star"]
    with pytest.raises(EncodeError, match="the model failed on text 'a purple ring'.*IndexError") as caught:
        poisoned.encode_texts(texts)
    assert set(caught.value.failures) == {1}
    good = poisoned.encode_texts(["a red circle", "a blue star"])
    assert np.abs(caught.value.vectors[[0, 2]] - good).max() < 1e-6
    vectors, failures = poisoned.encode_each(texts)
    assert set(failures) == {1} and np.isnan(vectors[1]).all()


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
