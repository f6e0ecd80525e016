"""Query images as HTTP clients send them: base64 in the spellings clients use (a ``data:`` URL, MIME line breaks,
the URL-safe alphabet, padding left off) → bytes, and bytes → an RGB image decoded within a memory bound (the
pixels and what decoding them costs are read from the header; large images are shrunk before any conversion)."""
from __future__ import annotations

import base64
import binascii
import ctypes
import ctypes.util
import io
import re
import string
from urllib.parse import unquote_to_bytes

from PIL import Image

from mmindex.pipeline.ingest.images import known_formats, shrunk_size, sniff, to_rgb
from mmindex.pipeline.serve.errors import ApiError

MIB = 1024 * 1024
STANDARD = set(string.ascii_letters + string.digits + "+/")
URL_SAFE = set(string.ascii_letters + string.digits + "-_")
ALPHABETS = "the standard base64 alphabet (A-Z a-z 0-9 + /) or the URL-safe one (- _), '=' padding optional"
SPACES = " \t\r\n\f\v"  # ASCII whitespace, which base64 decoders skip (MIME breaks lines every 76 characters)
WHITESPACE = re.compile(f"[{re.escape(SPACES)}]+")

# Bytes per pixel a decode holds at its peak, by the mode Pillow decodes into: Pillow keeps 1 byte per pixel for
# L and P, 2 for 16-bit grey, 4 for everything else (RGB too); resizing RGBA and LA goes through a premultiplied
# copy of the whole image; palette and 1-bit images are converted before they are resized.
PEAK_BYTES_PER_PIXEL = {"1": 2, "L": 1, "P": 5, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "I": 4, "F": 4,
                        "RGB": 4, "CMYK": 4, "YCbCr": 4, "LAB": 4, "HSV": 4, "RGBa": 4, "La": 4, "RGBA": 8, "LA": 8,
                        "PA": 8}
TRIM_ABOVE = 16 * MIB  # decodes that held more than this hand their memory back to the system (``release_memory``)
OTHER_MODE_BYTES = 8  # any other mode is converted to RGB (4 bytes a pixel) before resizing
# EXIF orientation → the transposition that makes the image upright (the EXIF specification's table).
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}


def base64_bytes(data: str, field_name: str = "image") -> bytes:
    """The bytes of base64 text as clients write it, or ApiError 400 naming what is wrong and where.

    Accepted: standard or URL-safe alphabet (not both in one value), with or without ``=`` padding, any ASCII
    whitespace anywhere (MIME line breaks of 76 or 64 characters, ``\\n`` or ``\\r\\n``), and a ``data:`` URL
    around it (scheme and parameters in any case, ``;base64`` required, percent-escapes decoded).
    """
    text, offset = data, 0
    stripped = text.lstrip()
    if stripped[:5].lower() == "data:":
        comma = stripped.find(",")
        parameters = [p.strip().lower() for p in stripped[5:comma].split(";")] if comma >= 0 else []
        if comma < 0 or "base64" not in parameters[1:]:
            raise ApiError(400, "bad_image", f"{field_name} is a data: URL without ';base64,' before its data; "
                                             "send data:image/png;base64,… (or the base64 text alone)")
        offset = len(text) - len(stripped) + comma + 1
        text = text[offset:]
        if "%" in text:  # a data: URL may percent-escape its data (%2B for +)
            text = unquote_to_bytes(text).decode("latin-1")
    body = WHITESPACE.sub("", text)
    core = body.rstrip("=")
    padding = len(body) - len(core)
    chars = set(core)
    alphabet = STANDARD if chars <= STANDARD else URL_SAFE if chars <= URL_SAFE else None
    if alphabet is None:
        raise ApiError(400, "bad_image", _not_base64(field_name, text, offset, chars))
    if not core:
        raise ApiError(400, "bad_image", f"{field_name} is empty: no base64 data")
    if len(core) % 4 == 1 or (padding and (len(core) + padding) % 4) or padding > 2:
        raise ApiError(400, "bad_image", f"{field_name} is not valid base64: {len(core):,} characters and "
                                         f"{padding} '=' cannot end a base64 value (is it cut short?)")
    if alphabet is URL_SAFE:
        core = core.translate(str.maketrans("-_", "+/"))
    try:
        return base64.b64decode(core + "=" * (-len(core) % 4), validate=True)
    except (binascii.Error, ValueError):  # not reached for the checked text; kept as the last word
        raise ApiError(400, "bad_image", f"{field_name} is not valid base64 ({ALPHABETS})") from None


def _not_base64(field_name: str, text: str, offset: int, chars: set[str]) -> str:
    """What makes ``text`` (the data, after any ``data:`` prefix at ``offset``) not base64."""
    if chars <= STANDARD | URL_SAFE:
        return (f"{field_name} mixes the standard base64 alphabet (+ /) with the URL-safe one (- _); use one: "
                f"{ALPHABETS}")
    for index, char in enumerate(text):
        if char not in STANDARD and char not in URL_SAFE and char not in SPACES and char != "=":
            return (f"{field_name} is not valid base64: {char!r} at character {offset + index:,}; expected "
                    f"{ALPHABETS}")
    return f"{field_name} is not valid base64: '=' inside the data (padding only ends it); expected {ALPHABETS}"


def decode_query_image(raw: bytes, field_name: str, max_pixels: int, max_decode_bytes: int,
                       target_size: int = 224) -> Image.Image:
    """Bytes → an upright RGB image whose shortest side is at most ``2 × target_size`` (as ``decode_image``
    gives), holding at most ``max_decode_bytes`` while it decodes.

    The size and mode are read from the header: over ``max_pixels``, or decoding into more than
    ``max_decode_bytes`` (pixels × ``PEAK_BYTES_PER_PIXEL``), is ApiError 400 before any pixel is decoded. A JPEG
    decodes at a reduced scale; anything else is shrunk in the mode it decodes into (16-bit grey stays 2 bytes a
    pixel), then made upright and converted to RGB at the small size.
    """
    cost = 0
    try:
        image = Image.open(io.BytesIO(raw), formats=known_formats())
        cost = check_decode_size(image, field_name, max_pixels, max_decode_bytes, target_size)
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        image.load()
        orientation = image.getexif().get(0x0112)  # read after load: a PNG may keep its EXIF after the pixels
        image = shrink(image, 2 * target_size)
        if orientation in UPRIGHT:
            image = image.transpose(UPRIGHT[orientation])
        image = to_rgb(image)
    except ApiError:
        raise
    except Image.DecompressionBombError as error:
        raise ApiError(400, "bad_image", f"{field_name}: image rejected as a decompression bomb: {error}") from None
    except Image.UnidentifiedImageError:
        raise ApiError(400, "bad_image", f"{field_name}: not a supported image: {sniff(raw)}") from None
    except Exception as error:  # noqa: BLE001 - Pillow raises many kinds on corrupt data
        raise ApiError(400, "bad_image", f"{field_name}: image cannot be decoded: {type(error).__name__}: "
                                         f"{error}") from None
    finally:
        if cost > TRIM_ABOVE:
            release_memory()
    if min(image.size) > 2 * target_size:  # a conversion above can leave it larger (a mode that cannot shrink)
        image = image.resize(shrunk_size(image.size, 2 * target_size), Image.BICUBIC)
    return image


def check_decode_size(image: Image.Image, field_name: str, max_pixels: int, max_decode_bytes: int,
                      target_size: int) -> int:
    """Refuse, from the header, an image over ``max_pixels`` or one whose decode would hold more than
    ``max_decode_bytes``; a JPEG is first set to decode at the smallest scale the model allows. Returns what the
    decode will hold (``decode_cost``)."""
    width, height = image.size
    if width * height > max_pixels:
        raise ApiError(400, "bad_image", f"{field_name}: image is {width}x{height} = {width * height:,} pixels, "
                                         f"over the limit of {max_pixels:,} (--max-query-pixels)")
    if image.format == "JPEG":
        image.draft("RGB", (target_size, target_size))  # libjpeg decodes at 1/2, 1/4 or 1/8 scale
    cost = decode_cost(image.mode, *image.size, palette_alpha="transparency" in image.info)
    if cost > max_decode_bytes:
        raise ApiError(400, "bad_image", f"{field_name}: a {width}x{height} image in mode {image.mode} needs "
                                         f"{cost / MIB:,.0f} MiB to decode, over the {max_decode_bytes / MIB:,.0f} "
                                         "MiB one image may take (--max-decode-mib)")
    return cost


def decode_cost(mode: str, width: int, height: int, palette_alpha: bool = False) -> int:
    """Bytes a decode of a ``width × height`` image in Pillow ``mode`` holds at its peak (``decode_query_image``)."""
    per_pixel = PEAK_BYTES_PER_PIXEL.get(mode, OTHER_MODE_BYTES)
    if mode == "P" and palette_alpha:
        per_pixel = 8  # a palette with transparency becomes RGBA, resized through its premultiplied copy
    return width * height * per_pixel


def shrink(image: Image.Image, shortest: int) -> Image.Image:
    """``image`` with its shortest side at most ``shortest``, resized in the mode it decoded into where resizing
    means something there (palette indices and 1-bit pixels are converted first)."""
    if min(image.size) <= shortest:
        return image
    if image.mode == "1":
        image = image.convert("L")
    elif image.mode in ("P", "PA"):
        image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
    elif image.mode not in PEAK_BYTES_PER_PIXEL:
        image = image.convert("RGB")
    return image.resize(shrunk_size(image.size, shortest), Image.BICUBIC)


def release_memory() -> None:
    """Hand the memory a large decode freed back to the system (glibc keeps freed blocks of worker threads'
    arenas otherwise, and the server's memory stays at its highest); nothing where the C library has no
    ``malloc_trim``."""
    if LIBC is not None:
        LIBC.malloc_trim(0)


def _libc():
    try:
        library = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return library if hasattr(library, "malloc_trim") else None
    except OSError:
        return None


LIBC = _libc()
