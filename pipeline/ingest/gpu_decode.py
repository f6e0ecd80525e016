"""Ingest's ``--decode gpu``: JPEGs decoded by torchvision (nvJPEG) on the model's GPU and preprocessed there.

The decode workers only read the bytes and look at each JPEG's header (``sniff_jpeg``); the model's
thread decodes a batch's JPEGs in one ``torchvision.io.decode_jpeg`` call on its device, turns them
upright (EXIF) and resizes, crops and normalises them as the model's CLIP processor does
(``st_model.ClipImageSteps``). Other formats, and any JPEG torchvision does not take or fails on, are
decoded by Pillow exactly as on the CPU path, that image alone. ``GpuDecoder.check`` refuses the path
when its vectors stray from the CPU path's (another decoder and resize kernel: close, not equal).
"""
from __future__ import annotations

import functools
import io
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from mmindex.errors import InputError, ModelError, UsageError
from mmindex.pipeline.duplicates.signals import signals_of
from mmindex.pipeline.ingest.images import RejectedImage, decode_image, extreme_aspect_box, shrunk_size
from mmindex.pipeline.ingest.sample import make_row
from mmindex.pipeline.models.encoder import pick_device

DECODE_CHOICES = ("auto", "cpu", "gpu")
# Lowest cosine, image by image, between a probe's vector decoded by torchvision and by Pillow.
COSINE_BAR = 0.999
EXTRA = "pip install 'mmindex[gpu]' (torchvision, the build made for your torch)"
_EXIF_ORIENTATION = 0x0112
_RESIZE_MODES = {2: "bilinear", 3: "bicubic"}  # Pillow filter → torch.nn.functional.interpolate mode


@dataclass
class JpegBatch:
    """A job's images on their way from the workers to the model's thread, in row order.

    Per row either ``jpeg`` (the bytes as a uint8 tensor, for torchvision) or ``pixels`` (a CPU
    tensor: an image Pillow already decoded and preprocessed in the worker) is set.
    """

    jpeg: list[Any]
    orientation: list[int]
    size: list[tuple[int, int] | None]  # (width, height) from the header, to check what the decoder returns
    pixels: list[Any]
    raw: list[bytes]  # for Pillow, when torchvision fails on a JPEG


class GpuDecoder:
    """Decode and preprocess a batch's JPEGs with torchvision on ``device`` (None: each model replica's own)."""

    def __init__(self, encoder, max_pixels: int, device: str | None = None):
        # torch takes seconds to import: only code that runs a model loads it
        import torch

        self.steps = encoder.backend.image_steps
        self.center_crop = encoder.center_crop
        self.image_size = encoder.image_size
        self.max_pixels = max_pixels
        self.device = device
        self.mode = _RESIZE_MODES[self.steps.resample]
        self.mean = torch.tensor(self.steps.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(self.steps.std, dtype=torch.float32).view(1, 3, 1, 1)
        self._stats: dict[str, tuple[Any, Any]] = {}
        self.cosines: list[float] = []  # measured by ``check``, one per probe
        self.fallbacks = 0  # JPEGs handed to Pillow in the model's thread (torchvision failed on them)

    # -- in the decode workers -----------------------------------------------------------------------
    def read_rows(self, rows: list, encoder) -> tuple[list, JpegBatch | None, list]:
        """Sniff each row's image: JPEGs are kept as bytes; the rest are decoded and preprocessed by Pillow
        here (rejected as on the CPU path when they cannot be)."""
        # torch takes seconds to import: only code that runs a model loads it
        import torch

        kept, rejected = [], []
        batch = JpegBatch([], [], [], [], [])
        pillow: list[tuple[int, Any]] = []
        for row in rows:
            data = row.image.data
            header = sniff_jpeg(data, self.max_pixels)
            if header is None:
                try:
                    image = decode_image(data, self.image_size, self.max_pixels, self.center_crop)
                except RejectedImage as error:
                    rejected.append((row, error.message))
                    continue
                pillow.append((len(kept), image))
                row.payload.update(signals_of(image).to_payload())  # as decode_rows does; torchvision's JPEGs get none
            kept.append(row)
            batch.jpeg.append(torch.frombuffer(bytearray(data), dtype=torch.uint8) if header else None)
            batch.orientation.append(header[0] if header else 1)
            batch.size.append(header[1] if header else None)
            batch.pixels.append(None)
            batch.raw.append(data)
        if pillow:
            pixels = encoder.backend.preprocess_images([image for _, image in pillow])["pixel_values"]
            for (index, _), tensor in zip(pillow, pixels):
                batch.pixels[index] = tensor
        return kept, (batch if kept else None), rejected

    # -- in the model's thread -----------------------------------------------------------------------
    def features(self, batch: JpegBatch, encoder) -> tuple[dict[str, Any], dict[int, str]]:
        """Model inputs on the device for every row, and {row: reason} for images no decoder could read
        (their inputs are zeros; the caller rejects those rows at stage decode)."""
        # torch takes seconds to import: only code that runs a model loads it
        import torch

        device = self.device or encoder.device
        wanted = [i for i, data in enumerate(batch.jpeg) if data is not None]
        decoded = dict(zip(wanted, _decode_jpegs([batch.jpeg[i] for i in wanted], device)))
        side = (3, self.steps.crop_height, self.steps.crop_width)
        pixels, errors = [], {}
        for index, tensor in enumerate(batch.pixels):
            image = decoded.get(index)
            if image is not None and tuple(image.shape[-2:]) == batch.size[index][::-1]:
                try:
                    pixels.append(self._preprocess(image, batch.orientation[index]))
                    continue
                except torch.OutOfMemoryError:
                    raise
                except Exception:  # noqa: BLE001 - one image must not fail its batch: Pillow below
                    pass
            if tensor is None:  # a JPEG torchvision failed on, or decoded otherwise than its header says
                self.fallbacks += 1
                tensor, error = self._pillow(batch.raw[index], encoder)
                if error:
                    errors[index] = error
                    tensor = torch.zeros(side)
            pixels.append(tensor.to(device))  # the backend's own preprocessing, normalised
        stacked = torch.stack(pixels) if pixels else torch.zeros((0, *side), device=device)
        return {"pixel_values": stacked, "modality": "image"}, errors

    def _pillow(self, data: bytes, encoder) -> tuple[Any, str | None]:
        """The CPU path's input for one image, or the reason it is rejected."""
        try:
            image = decode_image(data, self.image_size, self.max_pixels, self.center_crop)
        except RejectedImage as error:
            return None, error.message
        return encoder.backend.preprocess_images([image])["pixel_values"][0], None

    def _preprocess(self, image, orientation: int):
        """A decoded uint8 (3, H, W) image → the model's normalised input, by the CPU path's steps: the reduced
        scale Pillow's ``draft`` asks libjpeg for (here a box average), ``decode_image``'s upright turn, long-side
        cut and shrink to twice the model's side, then the processor's resize and centre crop."""
        # torch takes seconds to import: only code that runs a model loads it
        import torch

        pixels = image.unsqueeze(0).float()
        scale = _draft_scale(*pixels.shape[-2:][::-1], self.image_size)
        if scale > 1:
            pixels = torch.nn.functional.avg_pool2d(pixels, scale, ceil_mode=True).round_()
        pixels = upright(pixels, orientation)
        height, width = pixels.shape[-2:]
        box = extreme_aspect_box(width, height) if self.center_crop else None
        if box is not None:
            left, top, right, bottom = box
            pixels = pixels[..., top:bottom, left:right]
            width, height = right - left, bottom - top
        if min(width, height) > 2 * self.image_size:
            width, height = shrunk_size((width, height), 2 * self.image_size)
            pixels = self._resize(pixels, width, height, "bicubic")
        size = self.steps.resized(width, height)
        if size != (width, height):
            pixels = self._resize(pixels, *size, self.mode)
        left, top = self.steps.crop_origin(*size)
        pixels = pixels[..., top:top + self.steps.crop_height, left:left + self.steps.crop_width]
        return self._normalise(pixels)[0]

    @staticmethod
    def _resize(pixels, width: int, height: int, mode: str):
        """Antialiased, as Pillow's resize; rounded to 8 bits, as Pillow's result."""
        # torch takes seconds to import: only code that runs a model loads it
        import torch

        return torch.nn.functional.interpolate(pixels, size=(height, width), mode=mode, antialias=True,
                                               align_corners=False).clamp_(0, 255).round_()

    def _normalise(self, pixels):
        device = str(pixels.device)
        if device not in self._stats:  # copied to each device once, not per image
            self._stats[device] = self.mean.to(pixels.device), self.std.to(pixels.device)
        mean, std = self._stats[device]
        return (pixels * self.steps.scale - mean) / std

    # -- at load -------------------------------------------------------------------------------------
    def check(self, encoder) -> float:
        """Embed probe JPEGs (photo-like scenes: sizes, aspect ratios, grayscale, EXIF-rotated) by this path
        and by the CPU path; raise ModelError when any pair's cosine is under ``COSINE_BAR``. Returns the lowest."""
        probes = probe_jpegs()
        images = [decode_image(data, self.image_size, self.max_pixels, self.center_crop) for data in probes]
        expected = encoder.forward(encoder.preprocess(images))
        rows = [_ProbeRow(data) for data in probes]
        _, batch, _ = self.read_rows(rows, encoder)
        if any(data is None for data in batch.jpeg):
            raise ModelError("--decode gpu: the probe JPEGs were not taken for torchvision; please report it")
        features, errors = self.features(batch, encoder)
        got = encoder.forward(features)
        self.cosines = [float(c) for c in np.sum(np.asarray(expected, np.float64) * np.asarray(got, np.float64), 1)]
        lowest = min(self.cosines)
        if errors or not lowest >= COSINE_BAR:
            raise ModelError(
                f"--decode gpu: images decoded and resized by torchvision give other vectors than Pillow's on the CPU "
                f"path (lowest cosine {lowest:.5f} < {COSINE_BAR} over {len(probes)} probe photos"
                + (f"; {len(errors)} did not decode" if errors else "") + "); use --decode cpu")
        return lowest


@dataclass
class _ProbeRow:
    data: bytes
    payload: dict = field(default_factory=dict)

    @property
    def image(self):
        return self


def sniff_jpeg(data: bytes, max_pixels: int) -> tuple[int, tuple[int, int]] | None:
    """(EXIF orientation, (width, height)) of a JPEG torchvision should decode as Pillow does: whole (it ends
    with its end marker), baseline, RGB or grayscale, within ``max_pixels``. None for anything else (Pillow
    decodes it, or rejects it)."""
    if data[:3] != b"\xff\xd8\xff" or not data[-64:].rstrip(b"\0").endswith(b"\xff\xd9"):
        return None  # not a JPEG, or one cut short or with a tail (Pillow decides whether it is whole)

    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:  # reads the header only
            if (image.format != "JPEG" or image.mode not in ("RGB", "L") or image.info.get("progressive")
                    or image.width * image.height > max_pixels):
                return None  # MPO, CMYK/YCCK, progressive (Pillow's way is kept), or one to reject
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
            return (orientation if orientation in range(1, 9) else 1), image.size
    except Exception:  # noqa: BLE001 - whatever it is, Pillow decodes it or says why not
        return None


def _draft_scale(width: int, height: int, side: int | None) -> int:
    """The reduction (8, 4, 2 or 1) Pillow's JPEG ``draft`` picks for a ``side``-square request (``decode_image``)."""
    if not side:
        return 1
    scale = min(width // side, height // side)
    return next((a for a in (8, 4, 2) if scale >= a), 1)


def upright(image, orientation: int):
    """A (C, H, W) tensor turned as Pillow's ``ImageOps.exif_transpose`` turns the image (EXIF values 1-8)."""
    # torch takes seconds to import: only code that runs a model loads it
    import torch

    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-1, -2)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-1, -2)
    if orientation == 6:
        return torch.rot90(image, -1, (-2, -1))
    if orientation == 7:
        return image.transpose(-1, -2).flip(-1, -2)
    if orientation == 8:
        return torch.rot90(image, 1, (-2, -1))
    return image


def _decode_jpegs(tensors: list, device: str) -> list:
    """Decoded uint8 (3, H, W) images, None for each one torchvision fails on (a failure fails the whole
    batched call, so the batch is then decoded one by one)."""
    if not tensors:
        return []
    # the gpu/openclip extra's torchvision: only GPU decoding and open_clip load it
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return list(decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device))
    except Exception:  # noqa: BLE001 - narrowed down to the images below
        pass
    decoded = []
    for tensor in tensors:
        try:
            decoded.append(decode_jpeg(tensor, mode=ImageReadMode.RGB, device=device))
        except Exception:  # noqa: BLE001 - Pillow takes it, or rejects it with its reason
            decoded.append(None)
    return decoded


@functools.lru_cache(maxsize=1)
def probe_jpegs() -> tuple[bytes, ...]:
    """Photo-like JPEGs for the load check: landscape, portrait, large, small, a long panorama, a grayscale
    one and two with EXIF orientations (6: turned 90°, 3: 180°)."""
    probes = []
    shapes = ((640, 480, "RGB", 1), (480, 640, "RGB", 1), (1600, 1200, "RGB", 1), (300, 200, "RGB", 1),
              (1500, 300, "RGB", 1), (800, 600, "L", 1), (640, 480, "RGB", 6), (500, 700, "RGB", 3))
    for index, (width, height, mode, orientation) in enumerate(shapes):
        image = make_row(random.Random(index), index, width, height).image.convert(mode)
        exif = Image.Exif()
        if orientation != 1:
            exif[_EXIF_ORIENTATION] = orientation
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90, exif=exif.tobytes())
        probes.append(buffer.getvalue())
    return tuple(probes)


def torchvision_problem() -> str | None:
    """Why torchvision's JPEG decoder cannot be used here, or None."""
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except Exception as error:  # noqa: BLE001 - ImportError, or a torchvision built for another torch
        return f"torchvision cannot be imported ({type(error).__name__}: {str(error).strip()[:200]}); {EXTRA}"
    return None


def _no_cuda(where: str) -> str:
    return f"{where}, and GPU decoding needs CUDA (and torchvision: {EXTRA})"


def decode_problem(encoder, device: str | None = None) -> str | None:
    """Why ``encoder``'s images cannot be decoded by torchvision on ``device`` (default: the model's), or None."""
    where = device or getattr(encoder, "device", "cpu")
    if device is None and not str(where).startswith("cuda"):
        return _no_cuda(f"the model runs on {where}")
    problem = torchvision_problem()
    if problem:
        return problem
    backend = getattr(encoder, "backend_name", None)
    if backend != "torch":
        return f"GPU decoding feeds the torch backend, and this run uses --backend {backend}"
    steps = getattr(encoder.backend, "image_steps", None)
    if steps is None or steps.resample not in _RESIZE_MODES or max(steps.crop_height, steps.crop_width) > steps.shortest:
        return (f"model {encoder.name!r} does not preprocess images as CLIP does (shortest-edge resize, centre "
                "crop), the only preprocessing GPU decoding reproduces")
    return None


def check_gpu_decode_possible(device: str | None, engine: str = "local", pipelined: bool = True) -> None:
    """Refuse ``--decode gpu`` before a model loads when it cannot run: no CUDA, no torchvision, or a run
    that does not decode in the pipeline (``--engine ray``, ``--no-pipeline``). Raises ModelError or InputError."""
    if engine != "local" or not pipelined:
        raise UsageError("--decode gpu decodes in the local pipelined ingest; "
                         + ("--engine ray decodes with Pillow in its own tasks" if engine != "local"
                            else "--no-pipeline is the Pillow reference path"))
    where = pick_device(device)
    problem = _no_cuda(f"the model would run on {where}") if not where.startswith("cuda") else torchvision_problem()
    if problem:
        raise ModelError(f"--decode gpu cannot run: {problem}")


def choose_decoder(choice: str, encoder, max_pixels: int, device: str | None = None) -> tuple[GpuDecoder | None, str | None]:
    """The decoder for ``--decode choice`` and a note saying which decodes and why.

    ``auto``: torchvision on the GPU when the model runs on CUDA, torchvision imports and the load check
    passes, else Pillow. ``gpu``: the same, or ModelError saying what is missing. ``device`` runs the
    torchvision path on another device than the model's (tests and benchmarks: ``"cpu"``).
    """
    if choice not in DECODE_CHOICES:
        raise InputError(f"unknown decode {choice!r}; choose one of {', '.join(DECODE_CHOICES)}")
    if choice == "cpu":
        return None, None
    problem = decode_problem(encoder, device)
    if problem is None:
        decoder = GpuDecoder(encoder, max_pixels, device)
        try:
            lowest = decoder.check(encoder)
        except ModelError as error:
            if choice == "gpu":
                raise
            problem = str(error)
        else:
            return decoder, (f"JPEGs decoded by torchvision on {device or encoder.device} (load check: lowest "
                             f"cosine {lowest:.5f} against Pillow's, bar {COSINE_BAR})")
    if choice == "gpu":
        raise ModelError(f"--decode gpu cannot run: {problem}")
    if device is None and not str(getattr(encoder, "device", "cpu")).startswith("cuda"):
        return None, None  # the usual CPU run: nothing to say
    return None, f"images decoded by Pillow (--decode auto: {problem})"
