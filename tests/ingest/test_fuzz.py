"""Property-based: whatever bytes arrive, decoding returns an RGB image or raises RejectedImage, quickly."""
from __future__ import annotations

import io
import signal
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mmindex.pipeline.ingest.images import RejectedImage, decode_image, image_bytes

FUZZ = settings(max_examples=600, deadline=3000, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def _seeds() -> list[bytes]:
    rng = np.random.default_rng(7)
    photo = Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    out = []
    for fmt, image, save in [
        ("JPEG", photo, {}),
        ("JPEG", photo, {"progressive": True}),
        ("PNG", photo, {}),
        ("PNG", photo.convert("P"), {"transparency": 0}),
        ("GIF", photo.convert("P"), {}),
        ("WEBP", photo, {}),
        ("BMP", photo, {}),
        ("TIFF", photo, {"compression": "tiff_lzw"}),
        ("ICO", photo, {}),
        ("PNG", Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30)), {}),
    ]:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **save)
        out.append(buffer.getvalue())
    return out


SEEDS = _seeds()


@contextmanager
def hard_limit(seconds: int):
    """Fail instead of hanging if one decode never returns to the interpreter's control."""
    def expire(signum, frame):
        raise AssertionError(f"decoding took over {seconds}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def check(data: bytes) -> None:
    with hard_limit(10):
        try:
            image = decode_image(data, target_size=64)
        except RejectedImage as error:
            assert error.message  # a reason, never an empty one
            return
    assert image.mode == "RGB" and image.width > 0 and image.height > 0


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(data):
    check(data)


@FUZZ
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                                        min_size=1, max_size=12))
def test_real_images_with_flipped_bytes(seed, flips):
    data = bytearray(seed)
    for where, value in flips:
        data[int(where * len(data))] = value
    check(bytes(data))


@FUZZ
@given(st.sampled_from(SEEDS), st.floats(0, 1), st.binary(max_size=64))
def test_real_images_cut_short_or_spliced(seed, where, junk):
    cut = int(where * len(seed))
    check(seed[:cut])
    check(seed[:cut] + junk + seed[cut:])


@FUZZ
@given(st.one_of(st.none(), st.binary(max_size=64), st.text(max_size=40),
                 st.fixed_dictionaries({"bytes": st.one_of(st.none(), st.binary(max_size=32)),
                                        "path": st.one_of(st.none(), st.text(max_size=30))})))
def test_any_cell_is_read_or_rejected(tmp_path_factory, cell):
    folder = tmp_path_factory.getbasetemp()
    kind = "struct" if isinstance(cell, dict) else "path" if isinstance(cell, str) else "bytes"

    def open_file(path):
        return open(path, "rb")

    try:
        image_bytes(cell, kind, str(folder / "data.parquet"), open_file, image_root=str(folder / "images"))
    except RejectedImage as error:
        assert error.message


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_every_seed_decodes(seed):
    assert decode_image(SEEDS[seed], target_size=64).mode == "RGB"
