"""Payload keys: the ones mmindex writes into every point, and keys as Qdrant's JSON paths address them (quoting a
key that holds dots or spaces, and back).

Shared by the ``--where`` compiler (``pipeline/query/where.py``) and both stores (``connectors/``), so it lives
beside the error family, where neither has to import the other.
"""
from __future__ import annotations

from mmindex.errors import FilterError

SOURCE_KEY = "_source"  # where a point came from: {name, file, row, path}
TRUNCATED_KEY = "_caption_truncated"  # true when the caption was longer than the model reads
CAPTION_KEY = "caption"  # the caption text, whichever column it comes from (ingest/source.py writes it)


def is_raw_key(name: str) -> bool:
    """Whether Qdrant's JSON path takes ``name`` unquoted: letters, digits, ``_`` and ``-``."""
    return bool(name) and all(c.isalnum() or c in "_-" for c in name)


def qdrant_key(name: str) -> str:
    """How Qdrant's JSON path addresses the key ``name`` (quoted when it must be)."""
    if is_raw_key(name):
        return name
    if '"' in name or "\\" in name:
        raise FilterError(f"Qdrant cannot filter on a key containing a quote or backslash: {name!r}")
    return f'"{name}"'


def qdrant_path(name: str) -> str:
    """How Qdrant addresses a recorded field: a top-level key (quoted when it must be), or a nested path
    recorded with its top-level key in double quotes (``"meta".y``, ``"items"[].price``) → ``meta.y``."""
    if name.startswith('"') and '"' in name[1:]:
        end = name.index('"', 1)
        return qdrant_key(name[1:end]) + name[end + 1:]
    return qdrant_key(name)


def field_of_key(key: str) -> str:
    """The recorded name of what a Qdrant key addresses: ``"exif.make"`` → ``exif.make`` (a top-level key), a
    path ``meta.y`` or ``"shot on".y`` → ``"meta".y`` / ``"shot on".y`` (the form ``qdrant_path`` reads)."""
    if key.startswith('"') and '"' in key[1:]:
        end = key.index('"', 1)
        root, rest = key[1:end], key[end + 1:]
    else:
        cut = min((i for i in (key.find("."), key.find("[")) if i > 0), default=len(key))
        root, rest = key[:cut], key[cut:]
    return f'"{root}"{rest}' if rest else root
