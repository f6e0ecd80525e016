"""Turn an image cell into an RGB Pillow image, or a rejection with a reason.

Cells hold raw bytes, a Hugging Face ``{bytes, path}`` struct, or a path (relative paths
resolve against the Parquet file's folder, on the same filesystem). Decoding never raises
anything but ``RejectedImage``.
"""
from __future__ import annotations

import io
import posixpath
import warnings
from dataclasses import dataclass
from typing import Any, Callable

from PIL import Image, ImageFile, ImageOps

from pipeline.errors import MmindexError

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb limit


@dataclass
class Rejection:
    """A row that was not ingested, and why."""

    file: str
    row: int
    id: str | None
    stage: str  # read, decode, embed or write
    reason: str


class RejectedImage(MmindexError):
    """An image cell that cannot become an image; the message is the reason."""


@dataclass
class ImageBytes:
    """The encoded bytes of one image and where they came from."""

    data: bytes
    path: str | None = None


def image_bytes(cell: Any, kind: str, parquet_file: str, open_file: Callable[[str], Any]) -> ImageBytes:
    """Get the encoded image bytes out of a cell of the image column."""
    if cell is None:
        raise RejectedImage("image cell is null")
    if kind == "bytes":
        return ImageBytes(bytes(cell))
    if kind == "struct":
        data, path = cell.get("bytes"), cell.get("path")
        if data:
            return ImageBytes(bytes(data), path)
        if path:
            return _read_path(path, parquet_file, open_file)
        raise RejectedImage("image struct has neither bytes nor path")
    return _read_path(str(cell), parquet_file, open_file)


def _read_path(path: str, parquet_file: str, open_file: Callable[[str], Any]) -> ImageBytes:
    if not path.strip():
        raise RejectedImage("image path is empty")
    if "://" in path:
        raise RejectedImage(f"image path {path!r} is a URL; mmindex reads files, it does not download")
    resolved = path if posixpath.isabs(path) else posixpath.normpath(
        posixpath.join(posixpath.dirname(parquet_file), path)
    )
    try:
        with open_file(resolved) as handle:
            return ImageBytes(handle.read(), path)
    except FileNotFoundError:
        raise RejectedImage(f"image file not found: {resolved}") from None
    except (OSError, ValueError) as error:
        raise RejectedImage(f"cannot read image file {resolved}: {error}") from None


def decode_image(data: bytes, target_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode bytes into an upright RGB image no larger than needed for ``target_size``."""
    if not data:
        raise RejectedImage("image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise RejectedImage(
                    f"image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}"
                )
            if target_size and image.format == "JPEG":
                # Let libjpeg decode at a reduced scale (1/2, 1/4, 1/8 — never below the model's
                # input size): several times less work for large photos.
                image.draft("RGB", (target_size, target_size))
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)
            image.load()
            image = ImageOps.exif_transpose(image)
            image = to_rgb(image)
    except RejectedImage:
        raise
    except Image.DecompressionBombError as error:
        raise RejectedImage(f"image rejected as a decompression bomb: {error}") from None
    except Image.UnidentifiedImageError:
        raise RejectedImage(f"not an image Pillow can read (starts with {data[:12]!r})") from None
    except Exception as error:  # Pillow raises many kinds on corrupt data
        raise RejectedImage(f"image cannot be decoded: {type(error).__name__}: {error}") from None
    if target_size and min(image.size) > 2 * target_size:
        image = image.resize(_shrunk(image.size, 2 * target_size), Image.BICUBIC)
    return image


def _shrunk(size: tuple[int, int], shortest: int) -> tuple[int, int]:
    width, height = size
    scale = shortest / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; transparency is composited onto white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _high_depth_to_rgb(image)
    if mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    import numpy as np

    array = np.asarray(image.convert("I") if image.mode.startswith("I;16") else image, dtype=np.float64)
    low, high = float(array.min()), float(array.max())
    if image.mode.startswith("I;16") or (image.mode == "I" and high > 255):
        # 16-bit data: scale the full range, not the observed one, so brightness is kept.
        peak = 65535.0 if high > 255 or image.mode.startswith("I;16") else 255.0
        scaled = array / peak * 255.0
    elif high > low:
        scaled = (array - low) / (high - low) * 255.0
    else:
        scaled = np.zeros_like(array)
    gray = Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8))
    return gray.convert("RGB")


ImageFile.LOAD_TRUNCATED_IMAGES = False
