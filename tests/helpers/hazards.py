"""A Parquet file of ugly rows, each with the outcome an ingest must give it.

Images sit in a Hugging Face ``{bytes, path}`` struct column, so one file can hold inline
images and paths. ``EXPECTED`` maps each row's ``case`` to ``("ok",)`` or
``("rejected", stage, words the reason must contain)``.
"""
from __future__ import annotations

import datetime as dt
import io
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

MAX_PIXELS = 10_000_000  # the bomb below has 16M pixels
MAX_PAYLOAD = 64 * 1024

EXPECTED: dict[str, tuple] = {
    "cmyk": ("ok",), "sixteen_bit": ("ok",), "palette_alpha": ("ok",), "rgba": ("ok",), "animated": ("ok",),
    "exif_rotated": ("ok",), "one_pixel": ("ok",), "wide_8000x8": ("ok",), "path_inside_root": ("ok",),
    "long_caption": ("ok",), "control_chars": ("ok",), "null_caption": ("ok",), "blank_caption": ("ok",),
    "bad_utf8_caption": ("ok",), "huge_int_payload": ("ok",), "nan_payload": ("ok",),
    "dup_first": ("ok",), "dup_last": ("ok",),
    "zero_bytes": ("rejected", "decode", "0 bytes"),
    "truncated_jpeg": ("rejected", "decode", "cannot be decoded"),
    "html": ("rejected", "decode", "HTML page"),
    "svg": ("rejected", "decode", "SVG"),
    "bomb": ("rejected", "decode", "over the limit"),
    "eps": ("rejected", "decode", "EPS images are not accepted"),
    "heic": ("rejected", "decode", "HEIC"),
    "missing_file": ("rejected", "read", "not found"),
    "dotdot_path": ("rejected", "read", "outside --image-root"),
    "absolute_outside": ("rejected", "read", "outside --image-root"),
    "symlink_escape": ("rejected", "read", "link that leads outside"),
    "url_path": ("rejected", "read", "is a URL"),
    "null_image": ("rejected", "read", "image cell is null"),
    "null_id": ("rejected", "read", "is null"),
    "blank_id": ("rejected", "read", "empty string"),
    "timestamp_out_of_range": ("rejected", "read", "cannot be read"),
    "oversize_payload": ("rejected", "read", "over the limit"),
}


def encoded(image: Image.Image, fmt: str, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def photo(size=(48, 40), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def odd_images() -> dict[str, bytes]:
    """Valid images in the modes and shapes that trip decoders."""
    palette = Image.new("P", (16, 16), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.putpixel((3, 3), 1)
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    animated = io.BytesIO()
    frames[0].save(animated, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    exif = Image.Exif()
    exif[0x0112] = 6
    sixteen = Image.fromarray((np.arange(32 * 24, dtype=np.uint16).reshape(24, 32) * 80).astype(np.uint16))
    return {
        "cmyk": encoded(Image.new("CMYK", (30, 20), (0, 255, 255, 0)), "JPEG"),
        "sixteen_bit": encoded(sixteen, "PNG"),
        "palette_alpha": encoded(palette, "PNG", transparency=0),
        "rgba": encoded(Image.new("RGBA", (24, 24), (0, 0, 255, 128)), "PNG"),
        "animated": animated.getvalue(),
        "exif_rotated": encoded(photo((40, 20), 1), "JPEG", exif=exif.tobytes()),
        "one_pixel": encoded(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"),
        "wide_8000x8": encoded(Image.new("RGB", (8000, 8), (200, 10, 10)), "PNG"),
    }


def write_hazards(folder: Path) -> tuple[Path, Path]:
    """Write ``hazards.parquet`` and its image folder under ``folder``; returns (parquet, image root)."""
    root = folder / "images"
    root.mkdir(parents=True)
    (root / "ok.png").write_bytes(encoded(photo(seed=2), "PNG"))
    outside = folder / "outside.png"
    outside.write_bytes(encoded(photo(seed=3), "PNG"))
    os.symlink(outside, root / "link.png")
    good = encoded(photo(seed=4), "JPEG")
    jpeg = encoded(photo((200, 200), 5), "JPEG")
    bomb = encoded(Image.new("L", (4000, 4000), 0), "PNG")
    eps = encoded(Image.new("RGB", (8, 8), (1, 2, 3)), "EPS")

    rows: list[dict] = []

    def add(case, image=None, path=None, caption="a photo", id=None, **extra):
        cell = None if image is None and path is None else {"bytes": image, "path": path}
        rows.append({"id": case if id is None else id, "case": case, "image": cell, "caption": caption,
                     "year": 2020 + len(rows) % 5, "score": 0.5, "big": 7,
                     "taken": dt.datetime(2021, 1, 1), "notes": "", **extra})

    for case, data in odd_images().items():
        add(case, data, caption=f"a {case.replace('_', ' ')} picture")
    add("path_inside_root", path="ok.png")
    add("long_caption", encoded(photo(seed=6), "PNG"), caption="a long description " * 400)
    add("control_chars", encoded(photo(seed=7), "PNG"), caption="a red\x00 circle\x07 on\x1b blue\u2028")
    add("null_caption", encoded(photo(seed=8), "PNG"), caption=None)
    add("blank_caption", encoded(photo(seed=9), "PNG"), caption="   \t ")
    add("bad_utf8_caption", encoded(photo(seed=10), "PNG"), caption="PLACEHOLDER-BAD-UTF8")
    add("huge_int_payload", encoded(photo(seed=12), "PNG"), big=2**64 - 1)
    add("nan_payload", encoded(photo(seed=13), "PNG"), score=float("nan"))
    add("dup_first", good, caption="the first caption", id="dup")
    add("zero_bytes", b"")
    add("truncated_jpeg", jpeg[: len(jpeg) // 2])
    add("html", b"<!DOCTYPE html><html><body>404 Not Found</body></html>")
    add("svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>')
    add("bomb", bomb)
    add("eps", eps)
    add("heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic")
    add("missing_file", path="missing.png")
    add("dotdot_path", path="../outside.png")
    add("absolute_outside", path=str(outside))
    add("symlink_escape", path="link.png")
    add("url_path", path="https://example.com/cat.jpg")
    add("null_image")
    add("null_id", good, id="")
    rows[-1]["id"] = None
    add("blank_id", good, id="  ")
    add("timestamp_out_of_range", good, taken="OUT-OF-RANGE")
    add("oversize_payload", good, notes="x" * (MAX_PAYLOAD + 10))
    add("dup_last", good, caption="the last caption", id="dup")

    table = _table(rows)
    path = folder / "hazards.parquet"
    pq.write_table(table, path, row_group_size=8)
    return path, root


def _table(rows: list[dict]) -> pa.Table:
    """Arrow columns, with the values pyarrow would refuse to build written in at the buffer level."""
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    captions = []
    for row in rows:
        caption = row["caption"]
        captions.append({"PLACEHOLDER-BAD-UTF8": b"caf\xe9 au lait \xff"}.get(
            caption, caption.encode() if isinstance(caption, str) else None))
    caption_column = _string_from_bytes(captions)
    epoch = dt.datetime(1970, 1, 1)
    taken = pa.array([
        253_402_300_800_000 * 10 if row["taken"] == "OUT-OF-RANGE" else int((row["taken"] - epoch).total_seconds() * 1000)
        for row in rows
    ], pa.int64()).cast(pa.timestamp("ms"))
    return pa.table({
        "id": pa.array([r["id"] for r in rows], pa.string()),
        "case": pa.array([r["case"] for r in rows], pa.string()),
        "image": pa.array([r["image"] for r in rows], image_type),
        "caption": caption_column,
        "year": pa.array([r["year"] for r in rows], pa.int64()),
        "score": pa.array([r["score"] for r in rows], pa.float64()),
        "big": pa.array([r["big"] for r in rows], pa.uint64()),
        "taken": taken,
        "notes": pa.array([r["notes"] for r in rows], pa.string()),
    })


def _string_from_bytes(values: list[bytes | None]) -> pa.Array:
    """A string column from raw bytes, without UTF-8 validation (as a careless writer makes them)."""
    binary = pa.array(values, pa.binary())
    return pa.Array.from_buffers(pa.string(), len(binary), binary.buffers(), null_count=binary.null_count)
