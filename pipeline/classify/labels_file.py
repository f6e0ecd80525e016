"""The labels a zero-shot run predicts (a file, one label per line) and the prompt templates each label is put in.

Templates follow CLIP's prompt engineering (Radford et al. 2021, "Learning Transferable Visual Models From Natural
Language Supervision", §3.1.4; the CLIP repository's ``Prompt_Engineering_for_ImageNet.ipynb``): a label is
embedded inside a sentence such as "a photo of a {}.", and with several templates the class vector is the mean of
the templates' L2-normalised text vectors, normalised again.
"""
from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Sequence

from mmindex.errors import InputError, UsageError
from mmindex.pipeline.models.backend import CONTROL, SURROGATE

PLACEHOLDER = "{}"
# CLIP's own single template for photographs (Radford et al. 2021, §3.1.4: +1.3 points of ImageNet accuracy over the
# bare label), for the photo models users run. The demo model, trained on captions such as "a red circle", does
# better with "{}" and "a {}" averaged (docs/classify.md, "Zero-shot labels": chosen on seed 2, reported on seed 1).
DEFAULT_TEMPLATES = ("a photo of a {}.",)


def read_labels(path: str | Path) -> list[str]:
    """The labels of a labels file: one per line, surrounding spaces stripped; blank lines and lines starting with
    ``#`` are skipped. Invisible format characters at either end (a byte-order mark that Notepad or Excel writes
    at the start of the file, a zero-width space: Unicode category Cf) are stripped with the spaces, so they never
    become part of a label that ``--where "label = cat"`` would then fail to match. Labels may hold any other text, braces included (they are put in a template by plain
    replacement, never by ``str.format``).

    Raises ``InputError`` naming the file when it cannot be read, is not UTF-8, or holds fewer than two labels, naming
    the line of a label with control characters (it would be embedded as other text than the payload stores), and
    naming the label and both line numbers when a label repeats (compared without case: "Cat" and "cat" would split one class's
    probability between two names).
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: the labels file is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read the labels file ({error.strerror or error})") from None
    labels: list[str] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        label = clean_label(line)
        if not label or label.startswith("#"):
            continue
        if CONTROL.search(label) or SURROGATE.search(label):  # embedded as spaces or U+FFFD, stored as written
            raise InputError(f"{path}: the label on line {number} ({label!r}) holds control characters or bytes that "
                             "are not UTF-8 text; write each label as plain text")
        key = label.casefold()
        if key in first_line:
            earlier = labels[[item.casefold() for item in labels].index(key)]
            same = "" if earlier == label else f" (as {earlier!r})"
            raise InputError(f"{path}: label {label!r} is on line {first_line[key]}{same} and on line {number}; "
                             "each label must be listed once")
        first_line[key] = number
        labels.append(label)
    if not labels:
        raise InputError(f"{path}: the labels file holds no label (one label per line; blank lines and lines "
                         "starting with # are skipped)")
    if len(labels) == 1:
        raise InputError(f"{path}: the labels file holds one label ({labels[0]!r}, line {first_line[labels[0].casefold()]}); "
                         "zero-shot labels choose among two or more (with one, every point would get it with "
                         "probability 1.0)")
    return labels


def clean_label(text: str) -> str:
    """``text`` without the spaces and invisible format characters (Unicode category Cf) at either end."""
    start, end = 0, len(text)
    while start < end and (text[start].isspace() or unicodedata.category(text[start]) == "Cf"):
        start += 1
    while end > start and (text[end - 1].isspace() or unicodedata.category(text[end - 1]) == "Cf"):
        end -= 1
    return text[start:end]


def check_templates(templates: Sequence[str] | None) -> list[str]:
    """The prompt templates to use: ``templates`` (each holding ``{}`` exactly once, where the label goes), or
    ``DEFAULT_TEMPLATES`` when none is given. Repeated templates count once. Raises ``UsageError`` naming a template
    without ``{}`` or with it more than once."""
    if not templates:
        return list(DEFAULT_TEMPLATES)
    for template in templates:
        count = template.count(PLACEHOLDER)
        if count != 1:
            raise UsageError(f"--template {template!r} must hold {{}} exactly once, where the label goes (it holds it "
                             f"{count} times), e.g. --template \"a photo of a {{}}.\"")
    return list(dict.fromkeys(templates))


def prompts(label: str, templates: Sequence[str]) -> list[str]:
    """``label`` in each template, in order (plain replacement of ``{}``: a label's own braces stay as they are)."""
    return [template.replace(PLACEHOLDER, label) for template in templates]
