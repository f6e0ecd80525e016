"""Synthetic image–caption data: coloured shapes on backgrounds, with matching captions.

Deterministic for a seed, any size, written as Parquet with the image as raw bytes, a
Hugging Face ``{bytes, path}`` struct, or a relative path to a file beside the Parquet.
Captions in English, Chinese or both (the Chinese ones say the same thing as the English).
"""
from __future__ import annotations

import datetime as dt
import io
import math
import os
import random
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFilter

COLORS = {
    "red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 70, 220), "yellow": (240, 220, 30),
    "orange": (250, 140, 20), "purple": (140, 40, 180), "pink": (250, 120, 190), "white": (250, 250, 250),
    "black": (15, 15, 15), "cyan": (40, 220, 230),
}
SHAPES = ("circle", "square", "triangle", "star", "hexagon", "diamond", "cross", "ring")
SIZES = {"small": 0.22, "medium": 0.36, "large": 0.52}
POSITIONS = {"center": (0.5, 0.5), "left": (0.3, 0.5), "right": (0.7, 0.5), "top": (0.5, 0.3), "bottom": (0.5, 0.7)}
BACKGROUNDS = {
    "gray": (128, 128, 128), "beige": (225, 210, 180), "dark": (45, 45, 55), "sky": (170, 210, 240),
    "grass": (120, 170, 90), "noisy": None, "striped": None,
}


CAPTION_STYLES = ("full", "mixed")
# en: English captions (the default); zh: Chinese captions in the same columns; both: English
# in caption/short_caption and Chinese in caption_zh/short_caption_zh; mixed: each row's
# captions in English or Chinese at random (for training a bilingual model).
CAPTION_LANGS = ("en", "zh", "both", "mixed")

# The words of the Chinese captions, for the same scene as the English ones.
COLORS_ZH = {
    "red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "orange": "橙色", "purple": "紫色",
    "pink": "粉色", "white": "白色", "black": "黑色", "cyan": "青色",
}
SHAPES_ZH = {
    "circle": "圆形", "square": "正方形", "triangle": "三角形", "star": "五角星", "hexagon": "六边形",
    "diamond": "菱形", "cross": "十字形", "ring": "圆环",
}
SIZES_ZH = {"small": "小", "medium": "中等大小", "large": "大"}
POSITIONS_ZH = {"center": "位于画面中央", "left": "位于左侧", "right": "位于右侧", "top": "位于上方", "bottom": "位于下方"}
BACKGROUNDS_ZH = {
    "gray": "灰色", "beige": "米色", "dark": "深色", "sky": "天蓝色", "grass": "草绿色", "noisy": "噪点",
    "striped": "条纹",
}


@dataclass
class SampleRow:
    id: str
    caption: str
    short_caption: str
    color: str
    shape: str
    size: str
    position: str
    background: str
    second: str | None
    image: Image.Image
    caption_zh: str = ""
    short_caption_zh: str = ""


def make_row(rng: random.Random, index: int, width: int, height: int, caption_style: str = "full") -> SampleRow:
    """One random scene and its caption.

    ``full`` captions name everything in the scene; ``mixed`` ones sometimes name only some
    of it (colour and shape at least), as people write queries — better for training.
    """
    color = rng.choice(list(COLORS))
    shape = rng.choice(SHAPES)
    size = rng.choice(list(SIZES))
    position = rng.choice(list(POSITIONS))
    background = rng.choice(list(BACKGROUNDS))
    image = _background(rng, background, width, height)
    draw = ImageDraw.Draw(image)
    second = None
    if rng.random() < 0.4:
        second_color = rng.choice([c for c in COLORS if c != color])
        second_shape = rng.choice([s for s in SHAPES if s != shape])
        corner = rng.choice([(0.15, 0.15), (0.85, 0.15), (0.15, 0.85), (0.85, 0.85)])
        _draw_shape(draw, second_shape, COLORS[second_color], corner, 0.14, width, height, rng)
        second = f"{second_color} {second_shape}"
    jitter = (rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05))
    center = (POSITIONS[position][0] + jitter[0], POSITIONS[position][1] + jitter[1])
    _draw_shape(draw, shape, COLORS[color], center, SIZES[size] * rng.uniform(0.9, 1.1), width, height, rng)
    english = _captions_en(color, shape, size, position, background, second)
    chinese = _captions_zh(color, shape, size, position, background, second)
    # mixed: one draw picks which part of the scene the caption names, the same in both languages.
    pick = rng.choice(range(len(english))) if caption_style == "mixed" else 0
    return SampleRow(f"shape-{index:07d}", english[pick], english[2], color, shape, size, position, background,
                     second, image, chinese[pick], chinese[2])


def _captions_en(color, shape, size, position, background, second) -> list[str]:
    """The full caption, then the partial ones ``mixed`` picks from (index 2: colour and shape)."""
    where = "in the center" if position == "center" else f"at the {position}"
    caption = f"a {size} {color} {shape} {where} on a {background} background"
    if second:
        caption += f", with a small {second} in the corner"
    return [
        caption, caption, f"a {color} {shape}", f"a {size} {color} {shape}", f"a {color} {shape} {where}",
        f"a {color} {shape} on a {background} background",
    ]


def _captions_zh(color, shape, size, position, background, second) -> list[str]:
    """The same captions as ``_captions_en``, in Chinese, in the same order."""
    c, s, z = COLORS_ZH[color], SHAPES_ZH[shape], SIZES_ZH[size]
    where, ground = POSITIONS_ZH[position], BACKGROUNDS_ZH[background]
    caption = f"一个{z}的{c}{s}{where}，{ground}背景"
    if second:
        second_color, second_shape = second.split()
        caption += f"，角落里有一个小的{COLORS_ZH[second_color]}{SHAPES_ZH[second_shape]}"
    return [caption, caption, f"一个{c}的{s}", f"一个{z}的{c}{s}", f"一个{c}的{s}{where}", f"{ground}背景上的一个{c}{s}"]


def _background(rng: random.Random, name: str, width: int, height: int) -> Image.Image:
    fill = BACKGROUNDS[name]
    if fill is not None:
        shade = tuple(max(0, min(255, c + rng.randint(-12, 12))) for c in fill)
        return Image.new("RGB", (width, height), shade)
    if name == "noisy":
        # Gaussian noise (sigma 40 around mid-grey, as Image.effect_noise makes), but from a seed derived
        # from this generator's state without drawing from it: effect_noise's own C generator is not
        # seeded, which made samples differ from run to run.

        noise_seed = zlib.crc32(repr(rng.getstate()[1][:8]).encode())
        values = np.random.default_rng(noise_seed).normal(128, 40, (height, width))
        noise = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8)).convert("RGB")
        return Image.blend(noise, Image.new("RGB", (width, height), (150, 140, 130)), 0.5)
    image = Image.new("RGB", (width, height), (200, 200, 200))
    draw = ImageDraw.Draw(image)
    step = max(4, width // 12)
    for x in range(0, width, 2 * step):
        draw.rectangle([x, 0, x + step - 1, height], fill=(170, 170, 185))
    return image.filter(ImageFilter.GaussianBlur(0.5))


def _draw_shape(draw, shape, fill, center, scale, width, height, rng):
    cx, cy = center[0] * width, center[1] * height
    r = scale * min(width, height) / 2
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=max(2, int(r / 3)))
    elif shape == "square":
        draw.rectangle([cx - r * 0.85, cy - r * 0.85, cx + r * 0.85, cy + r * 0.85], fill=fill)
    elif shape == "cross":
        w = r * 0.35
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    else:
        points = {"triangle": 3, "diamond": 4, "hexagon": 6, "star": 10}[shape]
        start = -math.pi / 2
        vertices = []
        for k in range(points):
            radius = r if shape != "star" or k % 2 == 0 else r * 0.45
            angle = start + 2 * math.pi * k / points
            vertices.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        draw.polygon(vertices, fill=fill)


def _encode(image: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    if image_format == "jpeg":
        image.save(buffer, format="JPEG", quality=90)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_sample(
    output: str | os.PathLike,
    rows: int = 200,
    seed: int = 0,
    files: int = 1,
    width: int = 128,
    height: int = 128,
    image_kind: str = "bytes",
    image_format: str = "jpeg",
    start_index: int = 0,
    caption_style: str = "full",
    caption_lang: str = "en",
) -> list[Path]:
    """Write ``rows`` synthetic rows into ``files`` Parquet files under ``output``; returns their paths."""
    if image_kind not in ("bytes", "struct", "path"):
        raise ValueError("image_kind must be bytes, struct or path")
    if caption_style not in CAPTION_STYLES:
        raise ValueError(f"caption_style must be one of {', '.join(CAPTION_STYLES)}")
    if caption_lang not in CAPTION_LANGS:
        raise ValueError(f"caption_lang must be one of {', '.join(CAPTION_LANGS)}")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    # A generator of its own, so that the scenes (and English captions) of a seed are the same in every language.
    lang_rng = random.Random(f"caption-lang-{seed}")
    zh_columns = ["caption_zh", "short_caption_zh"] if caption_lang == "both" else []
    base_time = dt.datetime(2015, 1, 1, tzinfo=dt.timezone.utc)
    written = []
    per_file = math.ceil(rows / max(1, files))
    extension = "jpg" if image_format == "jpeg" else "png"
    for file_index in range(max(1, files)):
        first = file_index * per_file
        count = min(per_file, rows - first)
        if count <= 0:
            break
        columns: dict[str, list] = {k: [] for k in (
            "id", "image", "caption", "short_caption", *zh_columns, "color", "shape", "size", "position",
            "background", "second_object", "year", "score", "created", "tags")}
        for i in range(first, first + count):
            row = make_row(rng, start_index + i, width, height, caption_style)
            data = _encode(row.image, image_format)
            if image_kind == "bytes":
                columns["image"].append(data)
            elif image_kind == "struct":
                columns["image"].append({"bytes": data, "path": f"{row.id}.{extension}"})
            else:
                relative = f"images/{row.id}.{extension}"
                (out / "images").mkdir(exist_ok=True)
                (out / relative).write_bytes(data)
                columns["image"].append(relative)
            columns["id"].append(row.id)
            chinese = caption_lang == "zh" or (caption_lang == "mixed" and lang_rng.random() < 0.5)
            columns["caption"].append(row.caption_zh if chinese else row.caption)
            columns["short_caption"].append(row.short_caption_zh if chinese else row.short_caption)
            if zh_columns:
                columns["caption_zh"].append(row.caption_zh)
                columns["short_caption_zh"].append(row.short_caption_zh)
            columns["color"].append(row.color)
            columns["shape"].append(row.shape)
            columns["size"].append(row.size)
            columns["position"].append(row.position)
            columns["background"].append(row.background)
            columns["second_object"].append(row.second)
            columns["year"].append(2015 + rng.randrange(11))
            columns["score"].append(round(rng.random(), 4))
            columns["created"].append(base_time + dt.timedelta(days=rng.randrange(3650), seconds=rng.randrange(86400)))
            columns["tags"].append([row.color, row.shape] + ([row.second.split()[1]] if row.second else []))
        image_type = {"bytes": pa.binary(), "path": pa.string(),
                      "struct": pa.struct([("bytes", pa.binary()), ("path", pa.string())])}[image_kind]
        schema = pa.schema([
            ("id", pa.string()), ("image", image_type), ("caption", pa.string()), ("short_caption", pa.string()),
            *[(name, pa.string()) for name in zh_columns], ("color", pa.string()),
            ("shape", pa.string()), ("size", pa.string()), ("position", pa.string()), ("background", pa.string()),
            ("second_object", pa.string()), ("year", pa.int32()), ("score", pa.float64()),
            ("created", pa.timestamp("us", tz="UTC")), ("tags", pa.list_(pa.string())),
        ])
        table = pa.Table.from_pydict(columns, schema=schema)
        path = out / f"part-{file_index:05d}.parquet"
        pq.write_table(table, path, row_group_size=1024)
        written.append(path)
    return written
