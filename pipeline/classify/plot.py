"""The confusion matrices of ``eval --task classify --plot`` as one PNG, drawn with Pillow (no plotting library):
one panel per classifier, side by side, rows the true class and columns the predicted one, each cell shaded by its
share of the row (the class's recall on the diagonal) and marked with its count.

Class names are drawn with the first font that can draw them all: Pillow's own, then common system fonts (Noto CJK,
DejaVu Sans, the macOS and Windows CJK fonts; no font tool is needed). A name that no font here can draw is written
as its number (``#3``) in the image, and ``plot_legend`` gives those numbers' names for the command's output.
"""
from __future__ import annotations

import glob
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from PIL import Image, ImageDraw, ImageFont

from mmindex.errors import InputError

CELL = 32  # pixels per cell side
PAD = 12
GAP = 24  # between panels
LINE = 16  # a text line's height
WHITE, INK, DARK = (255, 255, 255), (20, 20, 20), (8, 48, 107)
FONT_SIZE = 11
# Fonts tried after Pillow's own (Latin only), in order: glob patterns of common places.
FONT_CANDIDATES = ("/usr/share/fonts/**/Noto*CJK*", "/usr/share/fonts/**/DejaVuSans.ttf", "/usr/share/fonts/**/wqy*",
                   "/usr/share/fonts/**/Droid*Fallback*", "/usr/local/share/fonts/**/*.tt[fc]",
                   "/System/Library/Fonts/PingFang.ttc", "/System/Library/Fonts/Supplemental/Arial Unicode.ttf",
                   "/Library/Fonts/Arial Unicode.ttf", "C:/Windows/Fonts/msyh.ttc", "C:/Windows/Fonts/arialuni.ttf")
MISSING = "\U0010fffd"  # a private-use character no font draws: what the font draws for a character it lacks


def _glyph(font: Any, char: str) -> bytes | None:
    """The pixels ``font`` draws for ``char`` (None when it cannot draw it at all)."""
    canvas = Image.new("L", (4 * FONT_SIZE, 4 * FONT_SIZE))
    try:
        ImageDraw.Draw(canvas).text((FONT_SIZE, FONT_SIZE), char, font=font, fill=255)
    except (UnicodeError, OSError, ValueError):
        return None
    return canvas.tobytes()


def can_draw(font: Any, text: str) -> bool:
    """Whether ``font`` has a glyph for every visible character of ``text``: a character it lacks is drawn as its
    missing-glyph box (the glyph it draws for ``MISSING``), so it is compared with that. Spaces, format characters
    and combining marks are not checked."""
    missing = _glyph(font, MISSING)
    for char in set(text):
        if char.isspace() or unicodedata.category(char) in ("Cf", "Mn", "Me"):
            continue
        drawn = _glyph(font, char)
        if drawn is None or drawn == missing:
            return False
    return True


def _fonts() -> list[Any]:
    fonts = [ImageFont.load_default()]
    for pattern in FONT_CANDIDATES:
        for path in sorted(glob.glob(pattern, recursive=True))[:4]:
            try:
                fonts.append(ImageFont.truetype(path, FONT_SIZE))
            except OSError:
                continue
    return fonts


@lru_cache(maxsize=8)
def choose_font(names: tuple[str, ...]) -> tuple[Any, frozenset[str]]:
    """(the font to draw ``names`` with, the names it cannot draw): the first font (``_fonts``) that draws them all,
    else the one that draws the most."""
    best, best_missing = None, frozenset(names)
    for font in _fonts():
        missing = frozenset(name for name in names if not can_draw(font, name))
        if best is None or len(missing) < len(best_missing):
            best, best_missing = font, missing
        if not missing:
            break
    return best, best_missing


def class_names(results: Sequence[dict[str, Any]]) -> list[str]:
    """Every class name of ``results``, in order of first appearance (numbered from 1 by ``plot_legend``)."""
    return list(dict.fromkeys(str(label) for result in results for label in result["labels"]))


def plot_legend(results: Sequence[dict[str, Any]]) -> dict[int, str]:
    """number → class name, for the names no font here can draw: the image writes them as ``#number``."""
    names = class_names(results)
    _, missing = choose_font(tuple(names))
    return {number: name for number, name in enumerate(names, start=1) if name in missing}


def _shown(results: Sequence[dict[str, Any]]) -> tuple[Any, dict[str, str]]:
    """The font, and each class name as the image writes it (its number where no font can draw it)."""
    names = class_names(results)
    font, missing = choose_font(tuple(names))
    return font, {name: f"#{number}" if name in missing else name for number, name in enumerate(names, start=1)}


@dataclass(frozen=True)
class PanelLayout:
    """Where one panel lies in the image: its ``left`` edge, ``width`` and ``height``, and the grid's top-left
    corner (``grid_x``, ``grid_y``); cell (i, j) — true class i, predicted class j — starts at
    (grid_x + j·CELL, grid_y + i·CELL)."""

    left: int
    width: int
    height: int
    grid_x: int
    grid_y: int

    def cell_centre(self, i: int, j: int) -> tuple[int, int]:
        return self.grid_x + j * CELL + CELL // 2, self.grid_y + i * CELL + CELL // 2


def shade(share: float) -> tuple[int, int, int]:
    """White (share 0) to dark blue (share 1), linearly in RGB."""
    share = min(max(share, 0.0), 1.0)
    return tuple(round(w + (d - w) * share) for w, d in zip(WHITE, DARK))  # type: ignore[return-value]


def _text_width(font: Any, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return int(right - left)


def layout(results: Sequence[dict[str, Any]], font: Any, shown: dict[str, str] | None = None) -> list[PanelLayout]:
    """One ``PanelLayout`` per result (``ClassifierResult.to_dict()``: ``labels``, ``confusion``), left to right;
    ``shown``: each class name as written (default: itself)."""
    panels, left = [], 0
    for result in results:
        names = [(shown or {}).get(str(label), str(label)) for label in result["labels"]]
        label_width = max(_text_width(font, name) for name in names) + PAD
        grid = CELL * len(names)
        title_width = _text_width(font, title_of(result))
        grid_x, grid_y = left + PAD + label_width, PAD + 2 * LINE + label_width
        width = max(PAD + label_width + grid + PAD, title_width + 2 * PAD)
        panels.append(PanelLayout(left, width, grid_y + grid + PAD, grid_x, grid_y))
        left += width + GAP
    return panels


def title_of(result: dict[str, Any]) -> str:
    return f"{result['classifier']}: accuracy {result['accuracy']:.3f}, macro F1 {result['macro_f1']:.3f}"


def draw_confusion(results: Sequence[dict[str, Any]]) -> tuple[Image.Image, list[PanelLayout]]:
    """The image of ``results`` (each a ``ClassifierResult.to_dict()``) and where each panel lies."""
    if not results:
        raise InputError("no classifier to plot")
    font, shown = _shown(results)
    panels = layout(results, font, shown)
    image = Image.new("RGB", (panels[-1].left + panels[-1].width, max(p.height for p in panels)), WHITE)
    draw = ImageDraw.Draw(image)
    for result, panel in zip(results, panels):
        names = [shown[str(label)] for label in result["labels"]]
        draw.text((panel.left + PAD, PAD), title_of(result), fill=INK, font=font)
        draw.text((panel.left + PAD, PAD + LINE), "rows: true class; columns: predicted", fill=INK, font=font)
        for i, name in enumerate(names):
            draw.text((panel.grid_x - PAD // 2, panel.grid_y + i * CELL + CELL // 2), name, fill=INK, font=font,
                      anchor="rm")
            _column_label(image, font, name, panel.grid_x + i * CELL + CELL // 2, panel.grid_y - PAD // 2)
        for i, row in enumerate(result["confusion"]):
            total = sum(row)
            for j, count in enumerate(row):
                share = count / total if total else 0.0
                x, y = panel.grid_x + j * CELL, panel.grid_y + i * CELL
                draw.rectangle([x, y, x + CELL - 1, y + CELL - 1], fill=shade(share), outline=(200, 200, 200))
                if count:
                    draw.text(panel.cell_centre(i, j), str(count), fill=WHITE if share > 0.5 else INK, font=font,
                              anchor="mm")
    return image, panels


def _column_label(image: Image.Image, font: Any, name: str, centre_x: int, bottom: int) -> None:
    """``name`` written upwards, its end at ``bottom``, centred on ``centre_x``."""
    width = _text_width(font, name) + 2
    strip = Image.new("RGB", (width, LINE), WHITE)
    ImageDraw.Draw(strip).text((0, LINE // 2), name, fill=INK, font=font, anchor="lm")
    upright = strip.rotate(90, expand=True)
    image.paste(upright, (centre_x - LINE // 2, bottom - upright.height))


def save_confusion_png(results: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write ``draw_confusion(results)`` as a PNG to ``path``; InputError when it cannot be written."""
    image, _ = draw_confusion(results)
    path = Path(path)
    try:
        image.save(path, format="PNG")
    except OSError as error:
        raise InputError(f"cannot write the plot to {str(path)!r}: {error.strerror or error}") from None
    return path
