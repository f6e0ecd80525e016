"""Payload keys: the ones mmindex writes into every point, and keys as Qdrant's JSON paths address them (quoting a
key that holds dots or spaces, and back).

Shared by the ``--where`` compiler (``pipeline/query/where.py``) and both stores (``connectors/``), so it lives
beside the error family, where neither has to import the other.
"""
from __future__ import annotations

from mmindex.errors import FilterError

SOURCE_KEY = "_source"  # where a point came from: {name, file, row, path}
TRUNCATED_KEY = "_caption_truncated"  # true when the caption was longer than the model reads


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


def field_of_key(key: str) -> str:
    """The payload key a Qdrant key addresses at the top level: ``"exif.make"`` → ``exif.make``."""
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == '"' else key
