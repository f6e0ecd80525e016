"""How the ``mmindex`` command lays out text for people: option sections in ``--help``, query hits.

Kept apart from ``cli.py`` (which parses and calls the library) so that the layout rules can be
tested alone.
"""
from __future__ import annotations

import json
import shutil
import unicodedata
from typing import Any, Sequence

import click


class SectionedCommand(click.Command):
    """A click command whose ``--help`` lists options in titled sections, in the order given.

    ``sections`` is a list of ``(title, [parameter names])``; options not named in any
    section (``--help`` itself) come last under "Other options".
    """

    def __init__(self, *args: Any, sections: Sequence[tuple[str, Sequence[str]]] = (), **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.sections = [(title, list(names)) for title, names in sections]

    def unplaced(self, ctx: click.Context) -> list[str]:
        """Options other than ``--help`` that no section names (tests keep this empty)."""
        placed = {name for _, names in self.sections for name in names}
        help_option = self.get_help_option(ctx)
        return [p.name for p in self.get_params(ctx)
                if isinstance(p, click.Option) and p is not help_option and p.name not in placed]

    def unknown(self) -> list[str]:
        """Names in ``sections`` that are not options of this command (typos)."""
        names = {p.name for p in self.params}
        return [name for _, section in self.sections for name in section if name not in names]

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        records = {p.name: p.get_help_record(ctx) for p in self.get_params(ctx) if isinstance(p, click.Option)}
        placed: set[str] = set()
        for title, names in self.sections:
            rows = [records[name] for name in names if records.get(name)]
            placed.update(names)
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)
        rest = [record for name, record in records.items() if name not in placed and record]
        if rest:
            with formatter.section("Other options"):
                formatter.write_dl(rest)


MIN_WIDTH = 40


def terminal_width(default: int = 100) -> int:
    """Columns of the terminal (``$COLUMNS`` when set, ``default`` when not a terminal), at least 40."""
    return max(shutil.get_terminal_size((default, 24)).columns, MIN_WIDTH)


def char_width(char: str) -> int:
    """Screen columns of one character: 2 for wide (CJK) ones, 0 for combining marks, else 1."""
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Screen columns ``text`` takes in a terminal."""
    return sum(char_width(c) for c in text)


def short(value: Any, width: int = 30) -> str:
    """``value`` as text (JSON for non-strings), cut to ``width`` screen columns with an ellipsis."""
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    text = " ".join(text.split())  # newlines and tabs in a payload would break the layout
    if display_width(text) <= width:
        return text
    kept, used = [], 0
    for char in text:
        used += char_width(char)
        if used > width - 1:
            break
        kept.append(char)
    return "".join(kept) + "…"


def field_order(payload_keys: Sequence[str], indexed: Sequence[str], chosen: Sequence[str] | None) -> list[str]:
    """Payload fields to show: ``chosen`` as given, else the indexed fields, then the rest, in stored order."""
    if chosen:
        return list(chosen)
    first = [name for name in sorted(indexed) if name in payload_keys]
    return first + [name for name in payload_keys if name not in first]


def fields_line(payload: dict[str, Any], names: Sequence[str], width: int, explicit: bool = False) -> str:
    """``name=value`` pairs that fit in ``width`` columns; an ellipsis says some were left out.

    With ``explicit`` (the user named the fields), every named field is shown, missing ones as ``-``,
    and only values are cut to fit.
    """
    if explicit:
        value_width = max(12, width // max(len(names), 1) - 4 - max(map(len, names), default=0))
        return "  ".join(f"{name}={short(payload[name], value_width) if name in payload else '-'}"
                         for name in names)
    parts: list[str] = []
    used = 0
    for name in names:
        part = f"{name}={short(payload[name])}"
        if used + display_width(part) + 2 > width - 1:
            parts.append("…")
            break
        parts.append(part)
        used += display_width(part) + 2
    return "  ".join(parts)
