"""The duplicate signals kept in each point's payload (pipeline/duplicates/signals.py): they read back as written,
damaged fields read as none (never an exception), the same pixels under another encoding or metadata give the
same pixel hash, and the fingerprint has its documented size."""
from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.duplicate_data import EXACT_KINDS, NEAR_KINDS, make_duplicate_set
from mmindex.pipeline.duplicates.signals import (HEIGHT_KEY, PIXELS_KEY, PRINT_BYTES, PRINT_KEY, SIGNAL_KEYS,
                                                 WIDTH_KEY, ImageSignals, has_signals, signals_from_payload,
                                                 signals_of)
from mmindex.pipeline.ingest.images import decode_image


@pytest.fixture(scope="module")
def dataset():
    return make_duplicate_set(originals=3, seed=1)


@pytest.fixture(scope="module")
def signals(dataset):
    return {image_id: signals_of(decode_image(data)) for image_id, data in dataset.images.items()}


def test_the_fingerprint_is_1536_bytes(signals):
    assert PRINT_BYTES == 32 * 32 + 2 * 16 * 16 == 1536
    for found in signals.values():
        assert len(found.fingerprint) == 1536
        assert len(base64.b64decode(found.to_payload()[PRINT_KEY])) == 1536


def test_payload_round_trip(signals):
    for found in signals.values():
        payload = found.to_payload()
        assert set(payload) == set(SIGNAL_KEYS) and has_signals(payload)
        assert signals_from_payload(payload) == found


@settings(max_examples=60, deadline=None)
@given(pixels=st.text(min_size=1, max_size=40), width=st.integers(1, 100_000), height=st.integers(1, 100_000),
       fingerprint=st.binary(min_size=PRINT_BYTES, max_size=PRINT_BYTES))
def test_payload_round_trip_of_any_signals(pixels, width, height, fingerprint):
    signals = ImageSignals(pixels, width, height, fingerprint)
    assert signals_from_payload(signals.to_payload()) == signals


def damaged_payloads(payload: dict) -> dict[str, dict]:
    """Each way a stored point's signal fields can be damaged, by name."""
    fingerprint = base64.b64decode(payload[PRINT_KEY])
    cases = {f"missing {key}": {k: v for k, v in payload.items() if k != key} for key in SIGNAL_KEYS}
    cases.update({
        "fingerprint one byte short": {**payload, PRINT_KEY: base64.b64encode(fingerprint[:-1]).decode()},
        "fingerprint one byte long": {**payload, PRINT_KEY: base64.b64encode(fingerprint + b"\0").decode()},
        "empty fingerprint": {**payload, PRINT_KEY: ""},
        "fingerprint not base64": {**payload, PRINT_KEY: "!!" + payload[PRINT_KEY][2:]},
        "fingerprint with bad padding": {**payload, PRINT_KEY: payload[PRINT_KEY][:-1]},
        "fingerprint a number": {**payload, PRINT_KEY: 12345},
        "fingerprint null": {**payload, PRINT_KEY: None},
        "fingerprint a list": {**payload, PRINT_KEY: [1, 2]},
        "width not a number": {**payload, WIDTH_KEY: "wide"},
        "width null": {**payload, WIDTH_KEY: None},
        "height a dict": {**payload, HEIGHT_KEY: {"px": 3}},
    })
    return cases


def test_damaged_signals_read_as_none(signals):
    payload = next(iter(signals.values())).to_payload()
    for name, damaged in damaged_payloads(payload).items():
        assert signals_from_payload(damaged) is None, name
    assert signals_from_payload({}) is None
    assert not has_signals({PIXELS_KEY: "x", WIDTH_KEY: 1, HEIGHT_KEY: 1})


@settings(max_examples=80, deadline=None)
@given(length=st.integers(0, 3 * PRINT_BYTES).filter(lambda n: n != PRINT_BYTES))
def test_a_fingerprint_of_any_other_length_reads_as_none(length):
    payload = {PIXELS_KEY: "ab", WIDTH_KEY: 4, HEIGHT_KEY: 4, PRINT_KEY: base64.b64encode(b"\7" * length).decode()}
    assert signals_from_payload(payload) is None


def test_the_same_pixels_under_another_encoding_give_the_same_pixel_hash(dataset, signals):
    for pair in dataset.pairs:
        if pair.kind in EXACT_KINDS:  # byte copy, the decoded JPEG as PNG, the JPEG with a comment segment
            assert dataset.images[pair.left] != dataset.images[pair.right] or pair.kind == "byte-copy"
            assert signals[pair.left].pixels == signals[pair.right].pixels, pair
            assert signals[pair.left].fingerprint == signals[pair.right].fingerprint, pair
        elif pair.kind in NEAR_KINDS or pair.tier in ("similar", "different"):
            assert signals[pair.left].pixels != signals[pair.right].pixels, pair


def test_the_size_is_the_decoded_size(dataset, signals):
    for image_id, data in dataset.images.items():
        image = decode_image(data)
        assert (signals[image_id].width, signals[image_id].height) == image.size
        assert signals[image_id].area == image.width * image.height
