"""A labelled duplicates data set (issue 25): originals of varied content, each with exact copies, near
duplicates (the same photo transformed) and similar-but-different shots, and the true tier of every pair.

Originals are the sample generator's shapes (``mmindex sample``) on textured backgrounds, and photo-like
images (smooth 1/f random fields over a colour gradient). Seeded: the same seed gives the same bytes.
``truth(a, b)`` gives the tier of any two ids of the set, not only the listed pairs, so a whole-collection
``duplicates`` run can be scored too. ``write_parquet`` writes a file ``mmindex ingest`` takes.
"""
from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

# The sample generator's palette and drawing, so the shapes look like `mmindex sample`'s.
from mmindex.pipeline.ingest.sample import BACKGROUNDS, COLORS, SHAPES, SIZES
from mmindex.pipeline.ingest.sample import _background, _draw_shape

TIERS = ("exact", "near", "similar", "different")
# The transforms of one original and their tier against it (and against each other).
EXACT_KINDS = ("byte-copy", "png-same-pixels", "jpeg-comment")
NEAR_KINDS = ("resize", "recompress", "crop", "colour", "text", "mirror")
SIZES_WH = ((160, 120), (128, 128), (144, 192), (192, 128))
OVERLAY_TEXTS = ("© 2024 J. Doe", "holiday", "SAMPLE", "IMG_0412", "stock photo")


@dataclass(frozen=True)
class Pair:
    """Two ids of the set, their true tier and what made the second from the first."""
    left: str
    right: str
    tier: str
    kind: str


@dataclass
class DuplicateSet:
    """Every image (id → encoded bytes, id → caption), the labelled pairs, and the labels that decide
    the tier of any two ids: ``group`` (id → the original it was made from), ``exact_ids`` (ids whose
    decoded pixels equal their original's) and ``similar_groups`` (pairs of groups that are similar)."""
    images: dict[str, bytes] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)
    pairs: list[Pair] = field(default_factory=list)
    group: dict[str, str] = field(default_factory=dict)
    exact_ids: set[str] = field(default_factory=set)
    similar_groups: set[frozenset[str]] = field(default_factory=set)

    def add(self, image_id: str, data: bytes, caption: str, group: str, exact: bool) -> None:
        self.images[image_id] = data
        self.captions[image_id] = caption
        self.group[image_id] = group
        if exact:
            self.exact_ids.add(image_id)

    def truth(self, a: str, b: str) -> str:
        """The tier of ids ``a`` and ``b``: exact, near, similar or different."""
        if self.group[a] == self.group[b]:
            return "exact" if a in self.exact_ids and b in self.exact_ids else "near"
        if frozenset((self.group[a], self.group[b])) in self.similar_groups:
            return "similar"
        return "different"


def make_duplicate_set(originals: int = 60, seed: int = 0, photo_share: float = 0.4) -> DuplicateSet:
    """``originals`` originals (``photo_share`` of them photo-like), each with its exact copies, near
    duplicates and one similar shot, plus two different pairs per original."""
    rng = random.Random(f"duplicates-{seed}")
    data = DuplicateSet()
    ids = []
    for index in range(originals):
        photo = rng.random() < photo_share
        scene = _photo_scene(rng) if photo else _shape_scene(rng)
        base = f"dup-{seed}-{index:04d}"
        ids.append(base)
        original = _render(scene)
        data.add(base, _jpeg(original, 90), scene["caption"], base, exact=True)
        _add_exact(data, base, scene["caption"])
        _add_near(data, base, original, scene["caption"], rng)
        _add_similar(data, base, scene, rng)
    for base in ids:
        for other in rng.sample([i for i in ids if i != base], min(2, len(ids) - 1)):
            data.pairs.append(Pair(base, other, "different", "other original"))
    return data


# -- originals --------------------------------------------------------------------------------------
def _shape_scene(rng: random.Random) -> dict:
    width, height = rng.choice(SIZES_WH)
    scene = {
        "kind": "shape", "width": width, "height": height, "color": rng.choice(list(COLORS)),
        "shape": rng.choice(SHAPES), "size": rng.choice(list(SIZES)), "background": rng.choice(list(BACKGROUNDS)),
        "center": (rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)), "texture_seed": rng.randrange(2**31),
        "second": None,
    }
    if rng.random() < 0.4:
        scene["second"] = (rng.choice(list(COLORS)), rng.choice(SHAPES),
                           rng.choice([(0.15, 0.15), (0.85, 0.15), (0.15, 0.85), (0.85, 0.85)]))
    return _captioned(scene)


def _captioned(scene: dict) -> dict:
    if scene["kind"] == "shape":
        scene["caption"] = f"a {scene['size']} {scene['color']} {scene['shape']} on a {scene['background']} background"
    else:
        scene["caption"] = "a photo-like texture"
    return scene


def _photo_scene(rng: random.Random) -> dict:
    width, height = rng.choice(SIZES_WH)
    return _captioned({
        "kind": "photo", "width": width, "height": height, "field_seed": rng.randrange(2**31),
        "slope": rng.uniform(1.6, 2.6), "gradient": [rng.uniform(-80, 80) for _ in range(6)],
        "base": [rng.uniform(70, 190) for _ in range(3)], "offset": (0, 0),
    })


def _render(scene: dict) -> Image.Image:
    return _render_shape(scene) if scene["kind"] == "shape" else _render_photo(scene)


def _render_shape(scene: dict) -> Image.Image:
    width, height = scene["width"], scene["height"]
    texture_rng = random.Random(scene["texture_seed"])
    image = _background(texture_rng, scene["background"], width, height)
    # A smooth, faint texture over every background, so no two backgrounds are flat copies.
    texture = _smooth_field(np.random.default_rng(scene["texture_seed"]), height, width, 2.2)
    pixels = np.asarray(image, dtype=np.float32) + 18 * texture[..., None]
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    shape_rng = random.Random(scene["texture_seed"] + 1)
    if scene["second"]:
        color, shape, corner = scene["second"]
        _draw_shape(draw, shape, COLORS[color], corner, 0.14, width, height, shape_rng)
    _draw_shape(draw, scene["shape"], COLORS[scene["color"]], scene["center"], SIZES[scene["size"]], width, height,
                shape_rng)
    return image


def _render_photo(scene: dict) -> Image.Image:
    """A 1/f random field (as natural photos' spectra fall) per channel, correlated, over a gradient.

    ``offset`` pans the view over a field twice the image's size: another shot of the same scene."""
    width, height = scene["width"], scene["height"]
    rng = np.random.default_rng(scene["field_seed"])
    shared = _smooth_field(rng, 2 * height, 2 * width, scene["slope"])
    channels = [0.7 * shared + 0.3 * _smooth_field(rng, 2 * height, 2 * width, scene["slope"]) for _ in range(3)]
    dy, dx = scene["offset"]
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.empty((height, width, 3), np.float32)
    for c in range(3):
        window = channels[c][height // 2 + dy:height // 2 + dy + height, width // 2 + dx:width // 2 + dx + width]
        gx, gy = scene["gradient"][2 * c], scene["gradient"][2 * c + 1]
        pixels[..., c] = scene["base"][c] + 55 * window + gx * (x / width - 0.5) + gy * (y / height - 0.5)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _smooth_field(rng: np.random.Generator, height: int, width: int, slope: float) -> np.ndarray:
    """Zero-mean, unit-variance noise with a 1/f**slope amplitude spectrum."""
    noise = rng.standard_normal((height, width))
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    radius[0, 0] = 1.0
    spectrum = np.fft.fft2(noise) / radius**slope
    spectrum[0, 0] = 0
    result = np.real(np.fft.ifft2(spectrum))
    return (result / (result.std() + 1e-9)).astype(np.float32)


# -- the three tiers ---------------------------------------------------------------------------------
def _add_exact(data: DuplicateSet, base: str, caption: str) -> None:
    jpeg = data.images[base]
    # The decoded JPEG's pixels as PNG: other bytes, other format, the same pixels.
    decoded = Image.open(io.BytesIO(jpeg)).convert("RGB")
    variants = {"byte-copy": jpeg, "png-same-pixels": _png(decoded), "jpeg-comment": _with_comment(jpeg, base)}
    for kind in EXACT_KINDS:
        data.add(f"{base}-{kind}", variants[kind], caption, base, exact=True)
        data.pairs.append(Pair(base, f"{base}-{kind}", "exact", kind))


def _add_near(data: DuplicateSet, base: str, original: Image.Image, caption: str, rng: random.Random) -> None:
    for kind in NEAR_KINDS:
        image, quality = _transform(original, kind, rng)
        data.add(f"{base}-{kind}", _jpeg(image, quality), caption, base, exact=False)
        data.pairs.append(Pair(base, f"{base}-{kind}", "near", kind))


def _transform(image: Image.Image, kind: str, rng: random.Random) -> tuple[Image.Image, int]:
    """The near-duplicate transform ``kind`` and the JPEG quality to save it at."""
    width, height = image.size
    if kind == "resize":
        scale = rng.uniform(0.5, 0.8)
        return image.resize((round(width * scale), round(height * scale)), Image.BICUBIC), 90
    if kind == "recompress":
        return image, rng.randint(25, 50)
    if kind == "crop":
        # At most 10% off each dimension, split at random between the two sides.
        cut_x, cut_y = rng.uniform(0.03, 0.10) * width, rng.uniform(0.03, 0.10) * height
        left, top = rng.uniform(0, cut_x), rng.uniform(0, cut_y)
        return image.crop((round(left), round(top), round(width - (cut_x - left)), round(height - (cut_y - top)))), 90
    if kind == "colour":
        image = ImageEnhance.Brightness(image).enhance(rng.choice((-1, 1)) * rng.uniform(0.04, 0.10) + 1)
        return ImageEnhance.Color(image).enhance(rng.choice((-1, 1)) * rng.uniform(0.04, 0.12) + 1), 90
    if kind == "text":
        return _overlay_text(image, rng), 90
    if kind == "mirror":
        return ImageOps.mirror(image), 90
    raise ValueError(f"unknown transform {kind!r}")


def _overlay_text(image: Image.Image, rng: random.Random) -> Image.Image:
    image = image.copy()
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(10, image.height // 10))
    text = rng.choice(OVERLAY_TEXTS)
    box = draw.textbbox((0, 0), text, font=font)
    x = rng.choice((4, max(4, image.width - (box[2] - box[0]) - 4)))
    y = rng.choice((4, max(4, image.height - (box[3] - box[1]) - 6)))
    draw.text((x, y), text, font=font, fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))
    return image


def _add_similar(data: DuplicateSet, base: str, scene: dict, rng: random.Random) -> None:
    """Another shot of the same scene: the shape elsewhere or on another background; the photo panned."""
    other = dict(scene)
    if scene["kind"] == "shape":
        if rng.random() < 0.5:
            kind = "other position"
            cx, cy = scene["center"]
            # At least 0.2 of the frame away, so it is a different shot, not a crop; the same background
            # texture (the hard case: an object moved in a still scene).
            other["center"] = (_away(rng, cx), _away(rng, cy))
        else:
            kind = "other background"
            other["background"] = rng.choice([b for b in BACKGROUNDS if b != scene["background"]])
            other["texture_seed"] = rng.randrange(2**31)
    else:
        kind = "panned view"
        other["offset"] = (round(rng.choice((-1, 1)) * rng.uniform(0.2, 0.35) * scene["height"]),
                           round(rng.choice((-1, 1)) * rng.uniform(0.2, 0.35) * scene["width"]))
    image_id = f"{base}-similar"
    data.add(image_id, _jpeg(_render(_captioned(other)), 90), other["caption"], image_id, exact=True)
    data.similar_groups.add(frozenset((base, image_id)))
    data.pairs.append(Pair(base, image_id, "similar", kind))


def _away(rng: random.Random, value: float) -> float:
    choices = [v for v in (0.25, 0.35, 0.45, 0.55, 0.65, 0.75) if abs(v - value) >= 0.2]
    return rng.choice(choices)


# -- encoding ---------------------------------------------------------------------------------------
def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _with_comment(jpeg: bytes, text: str) -> bytes:
    """The same JPEG with a COM segment after SOI: other bytes (metadata), the same coded pixels."""
    payload = f"copied from {text}".encode()
    segment = b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload
    return jpeg[:2] + segment + jpeg[2:]


def write_parquet(data: DuplicateSet, path: str | Path) -> Path:
    """One Parquet file for `mmindex ingest`: id, image bytes, caption, group (the original it was made from),
    tier (against that original) and similar_to (the group that is a similar shot of its group)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = list(data.images)
    table = pa.table({
        "id": pa.array(ids, pa.string()),
        "image": pa.array([data.images[i] for i in ids], pa.binary()),
        "caption": pa.array([data.captions[i] for i in ids], pa.string()),
        "group": pa.array([data.group[i] for i in ids], pa.string()),
        "tier": pa.array([data.truth(data.group[i], i) for i in ids], pa.string()),
        "similar_to": pa.array([_similar_to(data, i) for i in ids], pa.string()),
    })
    pq.write_table(table, path)
    return path


def _similar_to(data: DuplicateSet, image_id: str) -> str | None:
    return next((other for pair in data.similar_groups if data.group[image_id] in pair
                 for other in pair if other != data.group[image_id]), None)
