"""Decoding: every common mode becomes upright RGB; broken data becomes a RejectedImage."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mmindex.pipeline.ingest.images import RejectedImage, decode_image, image_bytes


def encoded(image: Image.Image, fmt: str, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def test_cmyk_jpeg_becomes_rgb():
    data = encoded(Image.new("CMYK", (20, 10), (0, 255, 255, 0)), "JPEG")
    image = decode_image(data)
    assert image.mode == "RGB" and image.size == (20, 10)
    r, g, b = image.getpixel((10, 5))
    assert r > 200 and g < 60 and b < 60  # cyan 0, magenta+yellow full → red


def test_palette_with_transparency_is_composited_on_white():
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.putpixel((0, 0), 1)
    data = encoded(image, "PNG", transparency=0)
    decoded = decode_image(data)
    assert decoded.mode == "RGB"
    assert decoded.getpixel((5, 5)) == (255, 255, 255)  # transparent → white
    assert decoded.getpixel((0, 0)) == (255, 0, 0)


def test_sixteen_bit_grayscale_keeps_brightness():
    array = np.full((6, 6), 65535 // 2, dtype=np.uint16)
    data = encoded(Image.fromarray(array), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    r, g, b = decode_image(data).getpixel((1, 1))
    assert r == g == b and 120 <= r <= 135


def test_alpha_and_grayscale_and_bilevel():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 255, 0))
    assert decode_image(encoded(rgba, "PNG")).getpixel((0, 0)) == (255, 255, 255)
    la = Image.new("LA", (4, 4), (0, 255))
    assert decode_image(encoded(la, "PNG")).getpixel((0, 0)) == (0, 0, 0)
    assert decode_image(encoded(Image.new("L", (3, 3), 200), "PNG")).getpixel((0, 0)) == (200, 200, 200)
    assert decode_image(encoded(Image.new("1", (3, 3), 1), "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (0, 200, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    decoded = decode_image(encoded(image, "JPEG", exif=exif.tobytes()))
    assert decoded.size == (20, 40)


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    r, g, b = decode_image(buffer.getvalue()).getpixel((5, 5))
    assert r > 200 and b < 50


def test_large_jpeg_is_decoded_small_for_the_model():
    big = Image.new("RGB", (2400, 1600), (10, 120, 200))
    image = decode_image(encoded(big, "JPEG"), target_size=64)
    assert 64 <= min(image.size) <= 2 * 64  # draft() scale, then shrink; never below the model's size
    assert image.size[0] / image.size[1] == pytest.approx(1.5, rel=0.02)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "0 bytes"),
        (b"<html><body>not found</body></html>", "an HTML page"),
        (b"\n  <!DOCTYPE html><html>", "an HTML page"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG drawing"),
        (b'<?xml version="1.0"?><svg/>', "SVG"),
        (b"%PDF-1.7\n", "PDF document"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "HEIC"),
        (b"\x01\x02\x03 random", "unknown format"),
    ],
)
def test_broken_data_is_rejected_with_a_reason(data, reason):
    with pytest.raises(RejectedImage, match=reason):
        decode_image(data)


def test_truncated_jpeg_is_rejected():
    data = encoded(Image.effect_noise((200, 200), 50).convert("RGB"), "JPEG")
    with pytest.raises(RejectedImage, match="cannot be decoded"):
        decode_image(data[: len(data) // 2])


def test_pixel_limit_rejects_decompression_bombs():
    data = encoded(Image.new("RGB", (300, 300)), "PNG")
    with pytest.raises(RejectedImage, match="over the limit"):
        decode_image(data, max_pixels=10_000)


def test_image_bytes_reads_cells_of_each_kind(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"PNGDATA")
    parquet = str(tmp_path / "data.parquet")
    opener = open  # the local filesystem: same signature as pyarrow's open_input_file for reading

    def open_file(path):
        return opener(path, "rb")

    assert image_bytes(b"raw", "bytes", parquet, open_file).data == b"raw"
    assert image_bytes({"bytes": b"s", "path": "x.png"}, "struct", parquet, open_file).data == b"s"
    assert image_bytes({"bytes": None, "path": "img/a.png"}, "struct", parquet, open_file).data == b"PNGDATA"
    got = image_bytes("img/a.png", "path", parquet, open_file)
    assert got.data == b"PNGDATA" and got.path == "img/a.png"
    with pytest.raises(RejectedImage, match="not found"):
        image_bytes("img/missing.png", "path", parquet, open_file)
    with pytest.raises(RejectedImage, match="null"):
        image_bytes(None, "bytes", parquet, open_file)
    with pytest.raises(RejectedImage, match="URL"):
        image_bytes("https://example.com/a.png", "path", parquet, open_file)


def test_the_encoder_knows_its_image_size(encoder):
    # Decoding shrinks large images to what the model needs; it must know the size.
    assert encoder.image_size == 32
