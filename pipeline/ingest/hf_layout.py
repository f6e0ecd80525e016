"""Folders written by Hugging Face ``datasets`` and the Hub, and Hub names found in the local caches: which
files hold which split (``--split``).

A local folder given as an input is one of these layouts, tried in this order:

* a ``DatasetDict`` (``DatasetDict.save_to_disk``): ``dataset_dict.json`` (``{"splits": [...]}``) and one
  ``Dataset`` folder per split;
* a ``Dataset`` (``Dataset.save_to_disk``): ``state.json``, whose ``_data_files`` lists the Arrow shards
  (``data-00000-of-00002.arrow`` …) in order, and ``dataset_info.json``; one split (``_split``, often unnamed);
* a folder of the ``datasets`` cache: ``dataset_info.json`` (its ``splits``) beside ``{name}-{split}.arrow``
  or ``{name}-{split}-00000-of-00002.arrow``;
* a folder of Parquet files whose names hold splits, read as ``datasets`` reads it, or refused where no reading
  is what was meant (``pipeline/ingest/hub_splits.py``: split words in file and folder names, the Hub's
  ``{split}-00000-of-00003.parquet`` and refs/convert/parquet names). A folder with no split in its names is
  plain Parquet, read as it always was (``pipeline/ingest/files.py``).

Several splits and no ``--split``: refused (UsageError) with the splits listed. ``--split all`` reads every
split and writes each row's split name into the payload field ``split`` (the source's ``Resolved.splits``).
Files of several configurations under one folder are refused: pass the configuration's folder.
A split read whose shard numbering has gaps (``check_numbering``: a download cut short) is refused (InputError).

An input ``owner/name`` that is not a local path is a Hub name, read from the local caches, never the
network (``cached_folder``): the snapshot ``refs/main`` points to in the hub cache
(``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``:
``datasets--owner--name/snapshots/<revision>/``), else the newest prepared copy in the ``datasets`` cache
(``$HF_DATASETS_CACHE``, else ``$HF_HOME/datasets``: ``owner___name/<config>/<version>/<hash>/``). The names
are those of ``huggingface_hub/constants.py`` and ``datasets/config.py``; neither library is imported.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from mmindex.errors import InputError, UsageError
from mmindex.pipeline.ingest.files import discover
from mmindex.pipeline.ingest.hub_splits import CANONICAL_SPLIT, CONVERTED, folder_splits

SPLIT_ALL = "all"  # --split all: every split, its name in the payload field SPLIT_FIELD
SPLIT_FIELD = "split"
DATASET_DICT_FILE = "dataset_dict.json"  # datasets.config.DATASETDICT_JSON_FILENAME
STATE_FILE = "state.json"  # datasets.config.DATASET_STATE_JSON_FILENAME
INFO_FILE = "dataset_info.json"  # datasets.config.DATASET_INFO_FILENAME
NUMBERED = re.compile(r"(?P<stem>.*?)-(?P<index>\d{5})-of-(?P<total>\d{5})(?P<tail>(?:-[0-9A-Za-z]+)?\.\w+)")
SHOWN_MISSING = 3  # missing shard names a message lists
CACHED_ARROW = r".+-{split}(?:-\d{{5}}-of-\d{{5}})?\.arrow"
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


@dataclass
class Layout:
    """A folder's splits: each split's files in reading order (``None``: the one split of a ``Dataset`` whose
    ``state.json`` names none)."""

    kind: str  # "DatasetDict", "Dataset", "datasets cache", "Hub Parquet"
    folder: str
    splits: dict[str | None, list[str]]
    aliases: dict[str, str] = field(default_factory=dict)  # the Hub's names → the split names (datasets')


@dataclass
class Resolved:
    """The inputs for ``files.discover`` (as given, or the files of the chosen splits), the source name to
    record (None: ``Source.default_name``), each file's split when ``--split all`` reads several, and the folder
    of the data set each file belongs to: relative image paths (an ``Image`` whose bytes are null) resolve
    against it, not against the folder of the file (``data/``, a DatasetDict's split folder)."""

    inputs: list[str]
    name: str | None = None
    split: str | None = None  # the split read, by its name (``--split dev`` reads ``validation``)
    splits: dict[str, str | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    image_folders: dict[str, str] = field(default_factory=dict)  # file → the data set's folder (image paths)


def resolve_inputs(inputs: Sequence[str], split: str | None = None,
                   environ: Mapping[str, str] | None = None) -> Resolved:
    """Replace each input that is a ``datasets`` layout (or a cached Hub name) by the files of the split to read.

    Raises UsageError for several splits and no ``split``, a ``split`` an input lacks, or a ``split`` given
    where no input has splits; InputError for a Hub name in no local cache (where it looked, how to get it).
    """
    environ = os.environ if environ is None else environ
    resolved = Resolved([])
    layouts = 0
    for item in inputs:
        folder, hub = item, None
        if "://" not in item and not _has_magic(item) and not os.path.exists(item) and _hub_name(item):
            folder, hub = cached_folder(item, environ), item
        layout = find_layout(os.path.abspath(folder)) if "://" not in folder and os.path.isdir(folder) else None
        if layout is None:
            resolved.inputs.append(folder)
            continue
        layouts += 1
        picked = without_empty_splits(pick_splits(layout, split, item), layout, item, resolved.notes)
        for name, files in picked.items():
            check_numbering(name, files, item)
        for files in picked.values():
            resolved.image_folders.update(dict.fromkeys(files, layout.folder))
        if split is None and layout.kind == "Hub Parquet" and same_files(folder, picked):
            resolved.inputs.append(folder)  # one split: the folder, read exactly as plain Parquet is (which skips _)
        else:
            for name, files in picked.items():
                resolved.inputs.extend(files)
                if split == SPLIT_ALL:
                    resolved.splits.update(dict.fromkeys(files, name))
        resolved.notes.append(f"{item}: a {layout.kind} folder ({layout.folder}); split(s) read: "
                              f"{', '.join('(unnamed)' if name is None else name for name in picked)}")
        one_split = split not in (None, SPLIT_ALL)
        if one_split and resolved.split is None:
            resolved.split = str(next(iter(picked)))  # its name, whichever alias --split gave
        if len(inputs) == 1 and (hub or one_split):  # the split is part of the name: a sync of it keeps the others
            base = f"hf://datasets/{hub}" if hub else os.path.abspath(item)
            resolved.name = base + (f"#{resolved.split}" if one_split else "")
    if split is not None and not layouts:
        raise UsageError(f"--split {split}: no input is a data set with splits (a DatasetDict, a save_to_disk or "
                         "Hub Parquet folder, or a cached Hub name); leave --split out for plain Parquet")
    return resolved


def same_files(folder: str, picked: dict[str | None, list[str]]) -> bool:
    """Whether reading ``folder`` as plain Parquet (``files.discover``: it skips ``_`` names, follows links) reads
    exactly the files of ``picked`` (then the folder is passed: its Hive partition keys are kept)."""
    try:
        _, found, _, _ = discover([folder])
    except InputError:  # none it would read (all under _ names)
        return False
    return sorted(os.path.abspath(path) for path in found) == sorted(
        os.path.abspath(path) for files in picked.values() for path in files)


def _has_magic(item: str) -> bool:
    return any(character in item for character in "*?[")


def _hub_name(item: str) -> bool:
    return bool(HUB_NAME.fullmatch(item)) and not item.endswith((".parquet", ".parq", ".pq", ".arrow"))


def pick_splits(layout: Layout, split: str | None, shown: str) -> dict[str | None, list[str]]:
    """The splits of ``layout`` that ``split`` picks (in order): all for ``all``, the only one for None."""
    names = list(layout.splits)
    if split == SPLIT_ALL:
        if SPLIT_ALL in layout.splits:
            raise UsageError(f"--split all reads every split, but {shown} has a split named 'all': to read that split "
                             f"alone, pass its files or folder ({os.path.dirname(layout.splits[SPLIT_ALL][0])})")
        return dict(layout.splits)
    if split is None:
        if len(names) > 1:
            suggestion = "train" if "train" in names else names[0]
            raise UsageError(
                f"{shown} holds {len(names)} splits ({', '.join(map(str, names))}): pick one with --split, e.g. "
                f"--split {suggestion} (or --split all to read every one, its name in the payload field "
                f"{SPLIT_FIELD!r})")
        return dict(layout.splits)
    if split not in layout.splits:  # --split dev: datasets' name for it is validation
        split = layout.aliases.get(split) or CANONICAL_SPLIT.get(split, split)
    if split not in layout.splits:
        listed = ", ".join("(unnamed)" if name is None else name for name in names)
        raise UsageError(f"--split {split}: {shown} has no such split (its splits: {listed}); or --split all")
    return {split: layout.splits[split]}


def without_empty_splits(picked: dict[str | None, list[str]], layout: Layout, shown: str,
                         notes: list[str]) -> dict[str | None, list[str]]:
    """``picked`` less the splits without a file (``datasets`` writes no shard for a split of no rows), each named
    in ``notes``. InputError when every picked split is empty: there is no file to read the columns from, and a
    ``--sync`` of it would delete every point of the source."""
    empty = [name for name, files in picked.items() if not files]
    if len(empty) == len(picked):
        names = ", ".join("(unnamed)" if name is None else repr(name) for name in empty)
        raise InputError(f"{shown}: split {names} of this {layout.kind} folder holds no rows (no data file): nothing "
                         "to ingest", file=layout.folder)
    for name in empty:
        notes.append(f"{shown}: split {'(unnamed)' if name is None else repr(name)} holds no rows: skipped")
    return {name: files for name, files in picked.items() if files}


def check_numbering(split: str | None, files: Sequence[str], shown: str) -> None:
    """Refuse a split whose shard files' numbering has gaps: ``-NNNNN-of-MMMMM`` names (Hub Parquet, the
    ``datasets`` cache, ``save_to_disk``) must be ``00000`` … ``MMMMM - 1`` with one total, and the
    ``refs/convert/parquet`` names ``0000.parquet`` … must run from 0 with none left out (they carry no total: a
    missing *last* file cannot be seen). A download cut short looks like this, and reading what is there would
    let ``--sync`` delete the missing rows. Raises InputError naming the split, the missing files, what to do."""
    numbered: dict[str, dict[int, set[int]]] = {}  # stem → total → indexes
    tails: dict[str, str] = {}
    converted, others = set(), 0
    for path in files:
        base = os.path.basename(path)
        match = NUMBERED.fullmatch(base)
        if match:
            numbered.setdefault(match["stem"], {}).setdefault(int(match["total"]), set()).add(int(match["index"]))
            tail = match["tail"]
            tails[match["stem"]] = tail if tail.count("-") == 0 else "-*" + os.path.splitext(tail)[1]
        elif CONVERTED.fullmatch(base):
            converted.add(int(base[:4]))
        else:
            others += 1
    named = "(unnamed)" if split is None else repr(split)
    kinds = len(numbered) + bool(converted) + bool(others)
    if kinds > 1 or any(len(totals) > 1 for totals in numbered.values()):
        seen = sorted({f"-of-{total:05d}" for totals in numbered.values() for total in totals})
        seen += ["NNNN.parquet"] * bool(converted) + ["unnumbered"] * bool(others)
        raise InputError(f"{shown}: split {named} mixes shard files of several numberings ({', '.join(seen)}), as an "
                         "old copy beside a new one or a download cut short would, and datasets would read them all as "
                         "one split: keep one set of files (finish the download, or remove the stale files), or pass "
                         "the files to read")
    missing: list[str] = []
    for stem, totals in numbered.items():
        (total, indexes), = totals.items()
        missing += [f"{stem}-{index:05d}-of-{total:05d}{tails[stem]}" for index in range(total) if index not in indexes]
    if converted:
        missing += [f"{index:04d}.parquet" for index in range(max(converted)) if index not in converted]
    if missing:
        listed = ", ".join(missing[:SHOWN_MISSING]) + (f" and {len(missing) - SHOWN_MISSING} more"
                                                       if len(missing) > SHOWN_MISSING else "")
        raise InputError(f"{shown}: split {named} is missing {len(missing)} of its shard files ({listed}), as a "
                         "download cut short leaves it; finish the download (run `hf download` again) and run "
                         "again, or remove the split's files")


def find_layout(folder: str) -> Layout | None:
    """The ``datasets`` or Hub layout of a local folder, or None for a folder of plain Parquet files."""
    if os.path.isfile(os.path.join(folder, DATASET_DICT_FILE)):
        names = _json(os.path.join(folder, DATASET_DICT_FILE)).get("splits")
        if not isinstance(names, list) or not names:
            raise InputError(f"{DATASET_DICT_FILE} lists no splits", file=folder)
        splits: dict[str | None, list[str]] = {}
        for name in names:
            inner = dataset_shards(os.path.join(folder, str(name)))
            splits[str(name)] = inner[1]
        return Layout("DatasetDict", folder, splits)
    if os.path.isfile(os.path.join(folder, STATE_FILE)):
        name, files = dataset_shards(folder)
        return Layout("Dataset", folder, {name: files})
    if os.path.isfile(os.path.join(folder, INFO_FILE)):
        cached = cache_folder_splits(folder)
        if cached:
            return Layout("datasets cache", folder, cached)
    found = folder_splits(folder)  # Parquet files whose names hold splits, as datasets reads them
    return Layout("Hub Parquet", folder, dict(found[0]), found[1]) if found else None


def _json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            found = json.load(handle)
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read {os.path.basename(path)}: {error}", file=path) from None
    if not isinstance(found, dict):
        raise InputError(f"{os.path.basename(path)} is not a JSON object", file=path)
    return found


def dataset_shards(folder: str) -> tuple[str | None, list[str]]:
    """A ``save_to_disk`` Dataset folder's split name (``state.json``'s ``_split``) and Arrow shards in order."""
    state = _json(os.path.join(folder, STATE_FILE))
    entries = state.get("_data_files")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and e.get("filename") for e in entries):
        raise InputError(f"{STATE_FILE} has no list of shards (_data_files)", file=folder)
    files = [os.path.join(folder, str(entry["filename"])) for entry in entries]
    missing = [path for path in files if not os.path.isfile(path)]
    if missing:
        raise InputError(f"{STATE_FILE} lists {len(files)} shard(s), {len(missing)} of them missing (first: "
                         f"{os.path.basename(missing[0])})", file=folder)
    split = state.get("_split")
    return (str(split) if split else None), files


def cache_folder_splits(folder: str) -> dict[str | None, list[str]]:
    """The splits of a ``datasets`` cache folder: ``dataset_info.json``'s ``splits``, each the
    ``{name}-{split}[-NNNNN-of-NNNNN].arrow`` files beside it; {} when it holds none."""
    info = _json(os.path.join(folder, INFO_FILE))
    arrows = sorted(name for name in os.listdir(folder) if name.endswith(".arrow") and not name.startswith("."))
    names = list(info.get("splits") or {}) if isinstance(info.get("splits"), dict) else []
    splits: dict[str | None, list[str]] = {}
    for name in names:
        pattern = re.compile(CACHED_ARROW.format(split=re.escape(name)))
        files = [os.path.join(folder, arrow) for arrow in arrows if pattern.fullmatch(arrow)]
        if files:
            splits[name] = files
    return splits


def cache_homes(environ: Mapping[str, str]) -> tuple[str, str]:
    """(the hub cache, the ``datasets`` cache) as ``huggingface_hub.constants`` and ``datasets.config`` find them:
    ``HF_HUB_CACHE`` (or the older ``HUGGINGFACE_HUB_CACHE``), else ``HF_HOME/hub``; ``HF_DATASETS_CACHE``,
    else ``HF_HOME/datasets``; ``HF_HOME`` defaults to ``$XDG_CACHE_HOME/huggingface`` (``~/.cache``)."""
    def expand(path: str) -> str:
        return os.path.expandvars(os.path.expanduser(path))

    home = expand(environ.get("HF_HOME") or os.path.join(environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface"))
    hub = environ.get("HF_HUB_CACHE") or environ.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return expand(hub), expand(environ.get("HF_DATASETS_CACHE") or os.path.join(home, "datasets"))


def cached_folder(name: str, environ: Mapping[str, str] | None = None) -> str:
    """The local folder holding the Hub data set ``name`` (``owner/name``): its hub-cache snapshot, else its
    newest ``datasets``-cache copy. Raises InputError naming the folders looked in and how to get it."""
    environ = os.environ if environ is None else environ
    hub_home, datasets_home = cache_homes(environ)
    repo = os.path.join(hub_home, "datasets--" + name.replace("/", "--"))
    snapshot = _snapshot(repo)
    if snapshot is not None:
        return snapshot
    prepared = os.path.join(datasets_home, name.replace("/", "___"))
    copy = _prepared_copy(prepared)
    if copy is not None:
        return copy
    raise InputError(
        f"input not found: {name} is no local path, and no data set {name} is in the local Hugging Face caches "
        f"(looked in {repo} and {prepared}); get it with `hf download --repo-type dataset {name}` and run again, or "
        f"save it with datasets.load_dataset({name!r}).save_to_disk(DIR) and pass DIR")


def _snapshot(repo: str) -> str | None:
    """The snapshot folder ``refs/main`` points to; else the only one there, or the one every ref points to."""
    snapshots = os.path.join(repo, "snapshots")
    if not os.path.isdir(snapshots):
        return None
    refs = []
    for root, _, names in os.walk(os.path.join(repo, "refs")):
        for ref in names:
            try:
                with open(os.path.join(root, ref), encoding="utf-8") as handle:
                    refs.append((os.path.relpath(os.path.join(root, ref), os.path.join(repo, "refs")),
                                 handle.read().strip()))
            except OSError:
                continue
    pointed = [revision for ref, revision in refs if ref == "main"] or sorted({revision for _, revision in refs})
    present = sorted(name for name in os.listdir(snapshots) if not name.startswith("."))
    choices = [revision for revision in pointed if revision in present] or present
    if len(choices) > 1:
        raise InputError(f"the hub cache holds {len(choices)} revisions of this data set and refs/main names none "
                         f"of them; pass one's folder, e.g. {os.path.join(snapshots, choices[0])}", file=repo)
    return os.path.join(snapshots, choices[0]) if choices else None


def _prepared_copy(prepared: str) -> str | None:
    """The newest ``<config>/<version>/<hash>/`` folder with a ``dataset_info.json``; UsageError for several
    configurations."""
    if not os.path.isdir(prepared):
        return None
    copies: dict[str, list[str]] = {}
    for config in sorted(os.listdir(prepared)):
        for root, folders, names in os.walk(os.path.join(prepared, config)):
            folders[:] = [f for f in folders if not f.startswith(".") and not f.endswith(".incomplete")]
            if INFO_FILE in names and any(n.endswith(".arrow") for n in names):
                copies.setdefault(config, []).append(root)
    if len(copies) > 1:
        raise UsageError(f"the datasets cache holds {len(copies)} configurations of this data set "
                         f"({', '.join(copies)}); pass one's folder, e.g. {max(copies[next(iter(copies))])}")
    if not copies:
        return None
    return max(next(iter(copies.values())), key=lambda folder: os.path.getmtime(os.path.join(folder, INFO_FILE)))
