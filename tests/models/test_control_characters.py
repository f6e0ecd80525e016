"""Every text embedded is cleaned as ingest cleans captions (control characters as spaces, ends stripped), so a query, an
/embed text or a label prompt with them gets the vector of the caption ingest stored from the same text."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mmindex.pipeline.ingest.records import clean_caption
from mmindex.pipeline.models.backend import cleaned_texts

# The oracle's list, written out: C0 but tab, line feed and carriage return; DEL and C1; U+2028 and U+2029.
CONTROLS = ([chr(c) for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)] + [chr(c) for c in range(0x7F, 0xA0)]
            + ["\u2028", "\u2029"])
texts = st.lists(st.sampled_from([*CONTROLS, "a", "b", "red", " ", "\t", "\n", "é", "🙂"]), max_size=12).map("".join)


@given(text=texts)
def test_cleaned_texts_is_the_oracle(text):
    assert cleaned_texts([text]) == ["".join(" " if ch in CONTROLS else ch for ch in text).strip()]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts)
def test_a_text_with_control_characters_embeds_as_the_caption_ingest_stores(encoder, text):
    stored, _ = clean_caption(text)
    assume(stored is not None)
    got, want = encoder.encode_texts([text, stored])
    assert float(np.abs(got - want).max()) < 1e-5


def test_the_reviewers_case(encoder):
    """/embed with "\\u0000nul\\u0000" differed from "nul" by up to 0.197 in a component."""
    got, want = encoder.encode_texts(["\u0000nul\u0000", "nul"])
    assert float(np.abs(got - want).max()) < 1e-5


def test_a_text_that_was_not_utf8_embeds_with_the_replacement_character(encoder):
    """A Latin-1 terminal's argv ('caf\\xe9' → 'caf\\udce9') failed in the tokenizer with a TypeError; it embeds as
    ingest stores bad UTF-8: U+FFFD in its place."""
    assert cleaned_texts(["a blue caf\udce9", "\ud800abc"]) == ["a blue caf\ufffd", "\ufffdabc"]
    got, want = encoder.encode_texts(["a blue caf\udce9", "a blue caf\ufffd"])
    assert float(np.abs(got - want).max()) < 1e-5
