"""Which split each Parquet file of a folder belongs to, as ``datasets`` resolves a local folder by default
(``datasets.data_files``: ``get_data_patterns``), and the Hub's own split names checked against it.

``datasets`` tries three families of patterns in order and the first that matches a file decides:
``data/{split}-NNNNN-of-NNNNN*`` (any split name, kept as written), a split keyword as a folder name
(``train/``, ``train-2024/``, ``my_train/``), a split keyword in a file name between non-word characters
(``train.parquet``, ``my_test_1.parquet``); keywords are named as datasets names them (``dev`` → ``validation``,
``eval`` → ``test``). Files the deciding family does not match are left out by datasets; a folder none of them
matches is one ``train`` split of every file (mmindex: plain Parquet). It lists files as datasets does: folders
starting with ``.`` or ``__`` and files starting with ``.`` are not read, nor linked folders; ``_`` names are
(plain Parquet folders skip ``_`` entries, as Spark and Hive write them: ``pipeline/ingest/files.py``). Only
Parquet files (``.parquet``, and ``.parq``/``.pq``, which datasets does not know) are considered: datasets also
resolves text, image and other files, and its logs and task-file families, so a folder mixing them can resolve
otherwise there.

The Hub's own names (``{split}-00000-of-00003.parquet`` in a configuration's folder, refs/convert/parquet's
``{config}/{split}/0000.parquet`` and ``{config}/{name}-{split}.parquet``) name the split directly; they are read
only where datasets groups the files the same way (its names then, the Hub's accepted by ``--split`` too).

mmindex reads a folder the way datasets would, or refuses it (UsageError) in one line naming a file: where
datasets would leave files out of every split or put one in two, where the Hub's names group files otherwise
than datasets, and where files of several configurations lie together. A glob reads every file as plain Parquet.
"""
from __future__ import annotations

import os
import re
from typing import Callable, Sequence

from mmindex.errors import UsageError

PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
# datasets.data_files.SPLIT_KEYWORDS and NON_WORDS_CHARS
SPLIT_KEYWORDS = {"train": ("train", "training"), "validation": ("validation", "valid", "dev", "val"),
                  "test": ("test", "testing", "eval", "evaluation")}
CANONICAL_SPLIT = {word: split for split, words in SPLIT_KEYWORDS.items() for word in words}
SPLIT_WORDS = tuple(CANONICAL_SPLIT)
SEP = r"[\-._ 0-9]"
SPLIT_NAME = r"\w+(?:\.\w+)*"  # datasets.naming._split_re
DATA_SHARDED = re.compile(r"data/(?P<split>[^/]+)-\d{5}-of-\d{5}[^/]*\.[^/]*")  # greedy, as datasets reads it
SHARDED = re.compile(rf"(?P<split>{SPLIT_NAME})-\d{{5}}-of-\d{{5}}(?:-[0-9A-Za-z]+)?\.parquet")
CONVERTED = re.compile(r"\d{4}\.parquet")
OLDER = re.compile(rf".+?-(?P<split>{SPLIT_NAME})(?:-\d{{5}}-of-\d{{5}})?\.parquet")
SPLIT_ORDER = ("train", "validation", "test")


def folder_splits(folder: str) -> tuple[dict[str, list[str]], dict[str, str]] | None:
    """(split → files in order, the Hub's names → datasets' names) of a folder of Parquet files, or None when no
    name in it holds a split (plain Parquet). UsageError where no reading is what was meant (module docstring)."""
    files = listed(folder)
    relative = {path: os.path.relpath(path, folder).replace(os.sep, "/") for path in files}
    found = keyword_splits(folder, relative)
    hub = hub_names(folder, relative)
    if hub is None:
        return (found, {}) if found else None
    if found is None or sorted(map(sorted, found.values())) != sorted(map(sorted, hub.values())):
        shown = ", ".join(f"{name} ({relative[files[0]]})" for name, files in hub.items())
        how = ("one split, train" if found is None else
               "as " + ", ".join(f"{name} ({len(files)} files)" for name, files in found.items()))
        raise UsageError(f"{folder}: its file names say splits {shown}, but datasets groups its files otherwise "
                         f"({how}): pass the files of one split, or a glob such as "
                         f"'{os.path.join(folder, '**', '*.parquet')}' to read every file as plain Parquet")
    aliases = {name: next(n for n, group in found.items() if sorted(group) == sorted(files))
               for name, files in hub.items()}
    return found, {name: to for name, to in aliases.items() if name != to}


def listed(folder: str) -> list[str]:
    """The Parquet files under ``folder`` that datasets lists, sorted: not in a folder whose name starts with ``.`` or
    ``__``, not a file whose name starts with ``.``, and not through a linked folder (its glob does not follow
    them)."""
    found = []
    for root, folders, names in os.walk(folder, followlinks=False):
        folders[:] = sorted(name for name in folders if not name.startswith((".", "__")))
        found.extend(os.path.join(root, name) for name in names
                     if name.endswith(PARQUET_SUFFIXES) and not name.startswith("."))
    return sorted(found)


def keyword_splits(folder: str, relative: dict[str, str]) -> dict[str, list[str]] | None:
    """The splits datasets resolves (its three families in order), or None when none of them matches a file."""
    families: list[tuple[str, Callable[[str], list[str]]]] = [
        ("a data/{split}-NNNNN-of-NNNNN name", lambda rel: [m["split"]] if (m := DATA_SHARDED.fullmatch(rel)) else []),
        ("a split word as a folder name", lambda rel: _words(rel.split("/")[:-1], rf"(.*{SEP})?{{}}({SEP}.*)?")),
        ("a split word in the file name", lambda rel: _words(rel.split("/")[-1:], rf"(.*{SEP})?{{}}{SEP}.*")),
    ]
    for how, splits_of in families:
        assigned = {path: splits_of(rel) for path, rel in relative.items()}
        if not any(assigned.values()):
            continue
        twice = [path for path, names in assigned.items() if len(names) > 1]
        left = [path for path, names in assigned.items() if not names]
        if twice or left:
            path = (twice or left)[0]
            why = (f"puts {relative[path]} in two splits ({', '.join(assigned[path])})" if twice else
                   f"leaves {len(left)} of its {len(relative)} Parquet files out of every split (e.g. {relative[path]})")
            raise UsageError(f"{folder}: datasets reads its splits from {how}, and so {why}: pass the files of one "
                             f"split, or a glob such as '{os.path.join(folder, '**', '*.parquet')}' to read every "
                             "file as plain Parquet")
        splits: dict[str, list[str]] = {}
        for path, names in assigned.items():
            if not re.fullmatch(SPLIT_NAME, names[0]):
                raise UsageError(f"{folder}: {relative[path]} names the split {names[0]!r}, which datasets refuses (a "
                                 "split name is letters, digits and _, parts joined by dots): rename the file, or pass "
                                 "the files to read")
            splits.setdefault(names[0], []).append(path)
        return ordered(splits)
    return None


def hub_names(folder: str, relative: dict[str, str]) -> dict[str, list[str]] | None:
    """The splits the Hub's own file names give (every file named so), or None. UsageError for files of several
    configurations."""
    found: dict[str, dict[str, list[str]]] = {}  # config → split → files
    for path, rel in relative.items():
        parts = rel.split("/")
        base, parents = parts[-1], parts[:-1]
        sharded, older = SHARDED.fullmatch(base), OLDER.fullmatch(base)
        if sharded:
            split, config = sharded["split"], parents
        elif CONVERTED.fullmatch(base) and parents and re.fullmatch(SPLIT_NAME, _unpartial(parents[-1])):
            split, config = _unpartial(parents[-1]), parents[:-1]
        elif older and older["split"] in SPLIT_WORDS:
            split, config = older["split"], parents
        else:
            return None
        found.setdefault("/".join(config), {}).setdefault(split, []).append(path)
    if len(found) > 1:
        configs = sorted(found)
        raise UsageError(f"{folder} holds the Parquet files of {len(configs)} configurations "
                         f"({', '.join(c or '(top)' for c in configs)}): pass one configuration's folder, e.g. "
                         f"{os.path.join(folder, configs[-1])}")
    return ordered(next(iter(found.values()))) if found else None


def ordered(splits: dict[str, list[str]]) -> dict[str, list[str]]:
    """train, validation, test first, then the others by name; each split's files sorted."""
    names = sorted(splits, key=lambda name: (SPLIT_ORDER.index(name) if name in SPLIT_ORDER else 3, name))
    return {name: sorted(splits[name]) for name in names}


def _words(names: Sequence[str], pattern: str) -> list[str]:
    """The splits (datasets' names) whose keywords one of ``names`` matches with ``pattern`` ({} the keyword)."""
    return [split for split, words in SPLIT_KEYWORDS.items()
            if any(re.fullmatch(pattern.format(re.escape(word)), name) for word in words for name in names)]


def _unpartial(name: str) -> str:
    return name[len("partial-"):] if name.startswith("partial-") else name
