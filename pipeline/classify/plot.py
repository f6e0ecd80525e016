"""The confusion matrices of ``eval --task classify --plot`` as one PNG, drawn with Pillow (no plotting library):
one panel per classifier, side by side, rows the true class and columns the predicted one, each cell shaded by its
share of the row (the class's recall on the diagonal) and marked with its count."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from PIL import Image, ImageDraw, ImageFont

from mmindex.errors import InputError

CELL = 32  # pixels per cell side
PAD = 12
GAP = 24  # between panels
LINE = 16  # a text line's height
WHITE, INK, DARK = (255, 255, 255), (20, 20, 20), (8, 48, 107)


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


def layout(results: Sequence[dict[str, Any]], font: Any) -> list[PanelLayout]:
    """One ``PanelLayout`` per result (``ClassifierResult.to_dict()``: ``labels``, ``confusion``), left to right."""
    panels, left = [], 0
    for result in results:
        names = [str(label) for label in result["labels"]]
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
    font = ImageFont.load_default()
    panels = layout(results, font)
    image = Image.new("RGB", (panels[-1].left + panels[-1].width, max(p.height for p in panels)), WHITE)
    draw = ImageDraw.Draw(image)
    for result, panel in zip(results, panels):
        names = [str(label) for label in result["labels"]]
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
