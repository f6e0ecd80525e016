"""Query images as clients send them: every common spelling of base64 decodes to the bytes that were encoded (a plain
decode is the oracle), anything else is a 400 that says which alphabet is expected; and decoding a query image holds
a bounded amount of memory (16-bit PNGs included) and gives what the ingest decoder gives."""
from __future__ import annotations

import base64
import io
import os
import random
import struct
import zlib

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mmindex.pipeline.ingest.images import decode_image
from mmindex.pipeline.serve.errors import ApiError
from mmindex.pipeline.serve.images import base64_bytes, decode_cost, decode_query_image

MIB = 1024 * 1024


# -- base64 as clients write it ---------------------------------------------------------------------------------------

@st.composite
def spelled(draw):
    """(bytes, the base64 text a client might send for them)."""
    data = draw(st.binary(min_size=1, max_size=300))  # no bytes at all is "empty", tested below
    urlsafe = draw(st.booleans())
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(data).decode()
    if draw(st.booleans()):
        text = text.rstrip("=")
    width = draw(st.sampled_from([None, 76, 64]))
    if width:
        newline = draw(st.sampled_from(["\n", "\r\n"]))
        text = newline.join(text[i:i + width] for i in range(0, len(text), width)) + draw(st.sampled_from(["", newline]))
    if draw(st.booleans()):
        media = draw(st.sampled_from(["image/png", "IMAGE/PNG", "image/jpeg", "", "application/octet-stream"]))
        params = draw(st.lists(st.sampled_from([";charset=utf-8", ";name=q.png", ";CHARSET=US-ASCII"]), max_size=2))
        scheme = "".join(c.upper() if draw(st.booleans()) else c for c in "data")
        marker = "".join(c.upper() if draw(st.booleans()) else c for c in "base64")
        text = f"{scheme}:{media}{''.join(params)};{marker},{text}"
    around = st.text(alphabet=" \t\r\n", max_size=3)
    return data, draw(around) + text + draw(around)


@given(spelled())
@settings(max_examples=400, deadline=None)
@example((b"\x89PNG", "data:image/png;base64,iVBORw=="))
@example((b"\xfb\xff", "+/8"))
@example((b"\xfb\xff", "-_8"))
def test_every_spelling_of_base64_gives_the_encoded_bytes(case):
    data, text = case
    assert base64_bytes(text) == data


@pytest.mark.parametrize("text", [
    base64.encodebytes(b"\x89PNG\r\n\x1a\n" * 40).decode(),  # MIME: lines of 76 and a final newline
    "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" * 4).decode(),
    "DATA:Image/PNG;Base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" * 4).decode(),
    base64.urlsafe_b64encode(b"\xfb\xff\xfe" * 30).decode(),
])
def test_the_spellings_of_the_issue_are_read(text):
    assert base64_bytes(text)


@st.composite
def broken(draw):
    """Base64 text with one thing no spelling allows: a foreign character, both alphabets, or '=' inside."""
    data = draw(st.binary(min_size=3, max_size=120))
    text = base64.b64encode(data).decode().rstrip("=")
    kind = draw(st.sampled_from(["character", "alphabets", "equals"]))
    at = draw(st.integers(0, len(text)))
    if kind == "character":
        return text[:at] + draw(st.sampled_from(list("!@#$^&*~`<>?.,:;é€\x00\\'\"%") + ["\u00a0"])) + text[at:]
    if kind == "alphabets":
        return text[:at] + "+" + text[at:] + "_"
    return text[:at] + "=" + text[at:] + "A"


@given(broken())
@settings(max_examples=300, deadline=None)
def test_anything_else_is_a_400_that_names_the_expected_alphabet(text):
    with pytest.raises(ApiError) as error:
        base64_bytes(text, "images[2]")
    assert error.value.status == 400 and error.value.code == "bad_image"
    assert error.value.message.startswith("images[2] ") and "URL-safe" in error.value.message


@pytest.mark.parametrize("text, says", [
    ("data:image/png,iVBORw0KGgo=", "without ';base64,'"),
    ("data:image/png;base64", "without ';base64,'"),
    ("", "empty"),
    ("  \r\n ", "empty"),
    ("QUJD=", "cut short"),
    ("QUJDR", "cut short"),
    ("QQ===", "cut short"),
])
def test_malformed_values_say_what_is_wrong(text, says):
    with pytest.raises(ApiError) as error:
        base64_bytes(text)
    assert says in error.value.message


def test_the_search_route_reads_a_data_url_and_mime_lines(app_client):
    """The HTTP routes take these spellings: /embed of the same PNG three ways gives the same vector."""
    png = _png_bytes("RGB", 40, 30)
    forms = [base64.b64encode(png).decode(), "data:image/png;base64," + base64.b64encode(png).decode(),
             base64.encodebytes(png).decode(), base64.urlsafe_b64encode(png).decode().rstrip("=")]
    answer = app_client.post("/embed", json={"images": forms})
    assert answer.status_code == 200, answer.text
    vectors = answer.json()["images"]
    assert all(vector == pytest.approx(vectors[0], abs=1e-6) for vector in vectors)
    search = app_client.post("/search", json={"image": forms[1], "limit": 3})
    assert search.status_code == 200 and search.json()["hits"], search.text
    bad = app_client.post("/search", json={"image": "data:image/png;base64,iVBOR!!"})
    assert bad.status_code == 400 and "alphabet" in bad.json()["error"]["message"]


# -- decoding within a memory bound ---------------------------------------------------------------------------------

def png16(width: int, height: int, color_type: int, value: int = 0x1234) -> bytes:
    """A 16-bit PNG (colour type 0 grey, 2 RGB, 4 grey and alpha, 6 RGBA), every sample ``value``: compresses to
    almost nothing, decodes to width × height × channels × 2 bytes."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + struct.pack(">H", value) * (channels * width)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def _png_bytes(mode: str, width: int, height: int, seed: int = 0, orientation: int | None = None,
               fmt: str = "PNG") -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    # smooth content (a gradient and a few blocks), so that resampling differences stay small
    y, x = np.mgrid[0:height, 0:width]
    base = ((x * 255 // max(width - 1, 1) + y * 127 // max(height - 1, 1)) % 256).astype(np.uint8)
    channels = np.stack([base, base[::-1, ::-1], np.full_like(base, rng.integers(0, 255))], axis=-1)
    image = Image.fromarray(channels, "RGB")
    if mode == "I;16":
        image = Image.fromarray((base.astype(np.uint16) * 257), "I;16")
    elif mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE)
    elif mode != "RGB":
        image = image.convert(mode)
        if mode in ("RGBA", "LA"):
            alpha = (y * 255 // max(height - 1, 1)).astype(np.uint8)
            image.putalpha(Image.fromarray(alpha, "L"))
    buffer = io.BytesIO()
    extra = {}
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        extra["exif"] = exif.tobytes()
    image.save(buffer, format=fmt, **extra)
    return buffer.getvalue()


@pytest.mark.parametrize("seed", range(12))
def test_decoding_gives_what_the_ingest_decoder_gives(seed):
    """Differential against ``decode_image`` (the decode ingest and the CLI use): the same size, and pixels equal
    but for resampling's rounding, over modes, sizes (below and above the model's 448-pixel working size) and EXIF
    orientations."""
    import numpy as np

    rng = random.Random(seed)
    mode = rng.choice(["RGB", "RGBA", "L", "LA", "P", "I;16", "1"])
    width, height = rng.choice([(40, 30), (300, 500), (1000, 700), (1500, 1100)])
    fmt = "JPEG" if mode in ("RGB", "L") and rng.random() < 0.3 else "PNG"
    raw = _png_bytes(mode, width, height, seed, rng.choice([None, 1, 3, 6, 8]), fmt)
    ours = decode_query_image(raw, "image", 16_777_216, 128 * MIB)
    theirs = decode_image(raw, 224, 16_777_216)
    assert ours.mode == "RGB" and ours.size == theirs.size, (mode, width, height)
    difference = np.abs(np.asarray(ours, dtype=np.int16) - np.asarray(theirs, dtype=np.int16))
    assert difference.mean() < 2.0 and np.percentile(difference, 99) <= 16, (mode, fmt, difference.mean())


def test_an_image_that_would_decode_past_the_memory_bound_is_refused_from_its_header():
    raw = png16(3000, 3000, 6)  # RGBA: 4 bytes a pixel, and its premultiplied copy to resize
    assert decode_cost("RGBA", 3000, 3000) == 3000 * 3000 * 8
    with pytest.raises(ApiError) as error:
        decode_query_image(raw, "images[0]", 16_777_216, 64 * MIB)
    assert error.value.status == 400 and "69 MiB" in error.value.message and "--max-decode-mib" in error.value.message
    assert decode_query_image(png16(3000, 3000, 0), "images[0]", 16_777_216, 64 * MIB).size == (448, 448)


def peak_growth_mib(function) -> float:
    """How far this process's peak memory rose while ``function`` ran (the kernel's high-water mark, reset first)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset VmHWM to the current RSS

    def status(key: str) -> float:
        with open("/proc/self/status") as handle:
            return next(int(line.split()[1]) for line in handle if line.startswith(key)) / 1024

    before = status("VmRSS")
    function()
    return status("VmHWM") - before


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="reads the peak memory from /proc")
@pytest.mark.parametrize("color_type, mode", [(0, "I;16"), (4, "LA"), (6, "RGBA")])
def test_a_16_bit_png_decodes_within_what_its_mode_costs(color_type, mode):
    """A 2048×2048 16-bit PNG (under every limit) decodes holding at most its ``decode_cost`` and a few MiB; the
    ingest decoder holds ~34 bytes a pixel for 16-bit grey (a float64 copy and more), 140 MiB here."""
    from mmindex.pipeline.serve.checks import decode_base64_image

    raw = png16(2048, 2048, color_type)
    text = base64.b64encode(raw).decode()
    decode_base64_image(text, "image")  # warm up (Pillow's plugins, the first arena)
    grown = peak_growth_mib(lambda: decode_base64_image(text, "image"))
    bound = decode_cost(mode, 2048, 2048) / MIB
    assert grown <= bound * 1.1 + 12, (mode, round(grown), bound)


def server_memory_mib(pid: int) -> tuple[float, float]:
    """(resident, highest resident) of process ``pid``, in MiB."""
    with open(f"/proc/{pid}/status") as handle:
        fields = {line.split(":")[0]: int(line.split()[1]) / 1024 for line in handle if line.startswith("Vm")}
    return fields["VmRSS"], fields["VmHWM"]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the server's memory from /proc")
def test_embed_of_large_16_bit_pngs_leaves_the_servers_memory_where_it_was(live_site):
    """The issue's case: /embed with 16 large 16-bit PNGs (4096×4096 grey and RGBA, under every limit) raised the
    server's memory by ~700 MiB for good. Now its peak rises by at most one image's decode (128 MiB for RGBA at
    4096², decoded one image at a time) and its resident memory ends within 40 MiB of where it began."""
    import httpx

    pid = live_site.process.pid
    images = [base64.b64encode(png16(4096, 4096, 0)).decode()] * 12 + \
        [base64.b64encode(png16(4096, 4096, 6)).decode()] * 4
    warm = httpx.post(f"{live_site.url}/embed", json={"images": images[:1] + images[-1:]}, timeout=300)
    assert warm.status_code == 200, warm.text
    before, peak_before = server_memory_mib(pid)
    for _ in range(2):
        answer = httpx.post(f"{live_site.url}/embed", json={"images": images}, timeout=300)
        assert answer.status_code == 200 and len(answer.json()["images"]) == 16, answer.text
    after, peak_after = server_memory_mib(pid)
    print(f"\nserver RSS {before:.0f} → {after:.0f} MiB, peak {peak_before:.0f} → {peak_after:.0f} MiB")
    assert after - before < 40 and peak_after - before < 128 + 48
