"""Turn an image cell into an RGB Pillow image, or a rejection with a reason.

Cells hold raw bytes, a Hugging Face ``{bytes, path}`` struct, or a path. Relative paths
resolve against ``image_root`` when one is given, else against the Parquet file's folder, on
the same filesystem; with an ``image_root`` no path may lead outside it. Reading and decoding
never raise anything but ``RejectedImage``.
"""
from __future__ import annotations

import base64
import io
import os
import posixpath
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, PngImagePlugin

from mmindex.errors import MmindexError

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb limit
# Pillow refuses PNGs whose text or ICC-profile chunks decompress past 1 MiB (64 MiB in all), a
# limit the user cannot change: valid photos with a large profile or XMP block were rejected.
# Metadata is bounded still (a chunk's size is on disk), and pixels keep --max-pixels.
PngImagePlugin.MAX_TEXT_CHUNK = max(PngImagePlugin.MAX_TEXT_CHUNK, 64 * 1024 * 1024)
PngImagePlugin.MAX_TEXT_MEMORY = max(PngImagePlugin.MAX_TEXT_MEMORY, 256 * 1024 * 1024)
# Raster formats read from data files. Others Pillow knows (EPS runs Ghostscript, PSD, …) are refused.
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "DIB", "TIFF", "MPO", "AVIF", "ICO", "PPM", "TGA", "JPEG2000",
           "PCX", "QOI")
# Beyond this aspect ratio a centre-cropping model (CLIP) sees only the middle; cut the rest before
# resizing. Only for such models: SigLIP and Chinese-CLIP resize the whole image (no crop).
MAX_ASPECT = 4
_SIGNATURES = (
    (b"<svg", "an SVG drawing (vector graphics are not supported)"),
    (b"<?xml", "XML text (SVG drawings are not supported)"),
    (b"<!doctype html", "an HTML page"),
    (b"<html", "an HTML page"),
    (b"%pdf", "a PDF document"),
    (b"{", "JSON text"),
)


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


def image_bytes(cell: Any, kind: str, parquet_file: str, open_file: Callable[[str], Any],
                image_root: str | None = None) -> ImageBytes:
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
            return _read_path(path, parquet_file, open_file, image_root)
        if data is not None:
            return ImageBytes(b"")  # rejected when decoded, as "0 bytes"
        raise RejectedImage("image struct has neither bytes nor path")
    return _read_path(str(cell), parquet_file, open_file, image_root)


def resolve_image_path(path: str, parquet_file: str, image_root: str | None = None) -> str:
    """Where an image path points; with ``image_root`` it must stay inside that folder."""
    if not path.strip():
        raise RejectedImage("image path is empty")
    if "\x00" in path:
        raise RejectedImage("image path contains a NUL character")
    if "://" in path:
        raise RejectedImage(f"image path {path!r} is a URL; mmindex reads files, it does not download")
    base = image_root if image_root is not None else posixpath.dirname(parquet_file)
    resolved = posixpath.normpath(path if posixpath.isabs(path) else posixpath.join(base, path))
    if image_root is not None:
        root = posixpath.normpath(image_root)
        if not _inside(resolved, root):
            raise RejectedImage(f"image path {path!r} leads outside --image-root {image_root}")
        real, real_root = _real_local_path(resolved), _real_local_path(root)
        if real is not None and real_root is not None and not _inside(real, real_root):
            raise RejectedImage(f"image path {path!r} is a link that leads outside --image-root {image_root}")
    return resolved


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _real_local_path(path: str) -> str | None:
    """The symlink-free form of an absolute local path; None for other filesystems' paths."""
    return os.path.realpath(path) if path.startswith("/") and os.path.exists(path) else None


def _read_path(path: str, parquet_file: str, open_file: Callable[[str], Any], image_root: str | None) -> ImageBytes:
    resolved = resolve_image_path(path, parquet_file, image_root)
    try:
        with open_file(resolved) as handle:
            return ImageBytes(handle.read(), path)
    except FileNotFoundError:
        raise RejectedImage(f"image file not found: {resolved}") from None
    except (OSError, ValueError) as error:
        raise RejectedImage(f"cannot read image file {resolved}: {error}") from None


def decode_image(data: bytes, target_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 center_crop: bool = False) -> Image.Image:
    """Decode bytes into an upright RGB image no larger than needed for ``target_size``.

    ``center_crop``: the model resizes the shortest edge and crops the centre square (CLIP's
    processor), so the far ends of a very long image (beyond ``MAX_ASPECT``:1) can be cut here;
    False keeps the whole image (models that squash or pad it). Raises RejectedImage.

    The returned image's ``info["source_size"]`` is (width, height) in px as stored in the file, upright (EXIF
    orientation applied), whatever reduced size it was decoded or resized to: the size duplicate keepers compare.
    """
    if not data:
        raise RejectedImage("image is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data), formats=known_formats())
        width, height = image.size
        if width * height > max_pixels:
            raise RejectedImage(
                f"image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}"
            )
        source_size = upright_size(image)
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
        raise RejectedImage(f"not a supported image: {sniff(data)}") from None
    except Exception as error:  # Pillow raises many kinds on corrupt data
        raise RejectedImage(f"image cannot be decoded: {type(error).__name__}: {error}") from None
    if target_size:
        if center_crop:
            image = _crop_extreme_aspect(image)
        if min(image.size) > 2 * target_size:
            image = image.resize(shrunk_size(image.size, 2 * target_size), Image.BICUBIC)
    image.info["source_size"] = source_size
    return image


def upright_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) in px of an opened image as stored in its file, turned as ``ImageOps.exif_transpose`` turns
    it: EXIF orientations 5–8 (transposed or rotated by 90°/270°, EXIF 2.32 tag 0x0112) swap the two."""
    width, height = image.size
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def known_formats() -> list[str]:
    """The accepted formats (``FORMATS``) this Pillow build can open, found once (plugins load on first use)."""
    global _KNOWN
    if _KNOWN is None:
        Image.init()
        _KNOWN = [name for name in FORMATS if name in Image.OPEN]
    return _KNOWN


_KNOWN: list[str] | None = None


def sniff(data: bytes) -> str:
    """Say what non-image bytes look like, for a rejection reason."""
    head = data[:512].lstrip().lower()
    for signature, name in _SIGNATURES:
        if head.startswith(signature) or (signature == b"<svg" and b"<svg" in head):
            return f"the data is {name}"
    if data[4:8] == b"ftyp":
        brand = data[8:12].decode("ascii", "replace")
        return f"an ISO media file (brand {brand!r}: HEIC/AVIF/MP4); this Pillow cannot read it"
    try:
        with Image.open(io.BytesIO(data)) as other:
            return f"{other.format} images are not accepted (accepted: {', '.join(FORMATS)})"
    except Exception:  # noqa: BLE001 - unknown to Pillow altogether
        pass
    return f"unknown format (starts with {data[:12]!r})"


def _crop_extreme_aspect(image: Image.Image) -> Image.Image:
    """Keep the centre of very long or very tall images (the model's centre crop is inside it)."""
    box = extreme_aspect_box(*image.size)
    return image if box is None else image.crop(box)


def extreme_aspect_box(width: int, height: int) -> tuple[int, int, int, int] | None:
    """The centre box (left, top, right, bottom) kept of an image over ``MAX_ASPECT``:1, else None."""
    if max(width, height) <= MAX_ASPECT * min(width, height):
        return None
    if width > height:
        keep = MAX_ASPECT * height
        left = (width - keep) // 2
        return left, 0, left + keep, height
    keep = MAX_ASPECT * width
    top = (height - keep) // 2
    return 0, top, width, top + keep


THUMBNAIL_KEY = "_thumbnail"


def thumbnail(image: Image.Image, size: int = 128) -> str:
    """A small JPEG of ``image`` (longest side ``size``) as base64, to store in the payload (~3–6 KB)."""
    small = image.copy()
    small.thumbnail((size, size), Image.BICUBIC)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=80, optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def shrunk_size(size: tuple[int, int], shortest: int) -> tuple[int, int]:
    """(width, height) scaled so that the shortest side is ``shortest``."""
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
# Pillow warns about corrupt metadata (EXIF, TIFF tags) it then ignores; a data file with
# millions of images would flood the log. (warnings.catch_warnings is not thread-safe, and
# decoding runs in worker threads, so the filter is set once, for Pillow's modules only.)
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
