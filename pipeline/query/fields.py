"""Field names in ``--where`` and ``--index-fields`` → Qdrant keys and the types a collection recorded.

A name is a top-level payload key, or a path below one: into structs and maps, through lists
(``meta.y``, ``items.price``, ``m.key``), typed from the paths ``records.payload_types`` records.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mmindex.connectors.base import FILTER_TYPES as FIELD_TYPES
from mmindex.errors import FilterError
from mmindex.keys import qdrant_key, qdrant_path

# Keys mmindex itself writes into every payload, with their types (None: an object).
SYSTEM_FIELDS: dict[str, str | None] = {"caption": "keyword", "_caption_truncated": "bool", "_source": None,
                                        '"_source".file': "keyword", '"_source".row': "integer",
                                        '"_source".path': "keyword", '"_source".name': "keyword"}


@dataclass(frozen=True)
class FieldRef:
    """A field as a where expression (or ``--index-fields``) names it, resolved against the recorded types."""

    key: str  # the Qdrant key comparisons use
    type: str | None  # the type comparisons compile for (None: inferred from the literal)
    label: str  # how messages name it
    empty_key: str  # the key `is null` looks at: through every level of lists, so [null] holds nothing
    recorded: str  # the name payload_types and indexes use: a key, or a path like "meta".y


def resolve_field(name: str, quoted: bool, field_types: dict[str, str] | None, expression: str = "") -> FieldRef:
    """A field as written → its ``FieldRef``.

    A name that is a top-level key is that key, even with dots in it; otherwise a dotted bare
    name is a path below a column: into structs and maps (``meta.y``, ``m.key``), through lists
    with or without ``[]`` (``items.price`` is ``items[].price``). Raises ``FilterError`` for a
    field the collection does not have.
    """
    known = dict(SYSTEM_FIELDS)
    known.update(field_types or {})
    label = f"`{name}`" if quoted or not _is_bare(name) else name
    if name in known and not name.startswith('"'):
        return _typed(name, _paths_below(name, [], known), label)
    if not quoted and ("." in name or "[" in name):
        root, rest = re.match(r"([^.\[]*)(.*)", name).groups()
        if field_types is not None and root not in known:
            raise FilterError(_unknown(name, known, expression))
        return _nested(name, root, rest, known, field_types is not None, label, expression)
    if field_types is not None:
        raise FilterError(_unknown(name, known, expression))
    return FieldRef(qdrant_key(name), None, label, qdrant_key(name), name)


def _nested(name: str, root: str, rest: str, known: dict[str, Any], typed: bool, label: str,
            expression: str) -> FieldRef:
    """A path below the column ``root``; with recorded types, one that reaches no recorded field is an error."""
    parts = re.findall(r"\.([^.\[]+)|\[\]", rest)
    written = "".join(f".{p}" if p else "[]" for p in parts) == rest  # only .name and [] steps, no [3]
    found = _paths_below(root, [p for p in parts if p], known) if written else []
    if found:
        return _typed(root, found, label)
    recorded = str(known.get(root) or "")
    prefix = f'"{root}"'
    inside = sorted({_display(k[len(prefix):].replace("[]", "").lstrip(".")).replace("`*`", "KEY") for k in known
                     if k.startswith(prefix) and k[len(prefix):].replace("[]", "")})
    if typed and not written and (inside or recorded in FIELD_TYPES):
        raise FilterError(f"{label}: --where does not pick list elements by position; a condition on a list "
                          "matches when any element does (use --filter-json for a position)")
    if inside or recorded.startswith("struct<"):
        raise FilterError(f"unknown field {name} in: {expression} (fields of {root}: {', '.join(inside)})")
    if typed and recorded in FIELD_TYPES:
        raise FilterError(f"unknown field {name} in: {expression} ({root} holds {recorded} values, which have no "
                          "fields)")
    if recorded.startswith(("list<", "large_list<", "fixed_size_list<")) and "struct<" in recorded:
        # Recorded before fields in lists were: a guess could match nothing without a word.
        raise FilterError(f"{root} holds {recorded}: --where cannot type fields inside a list of structs; use "
                          "--filter-json with Qdrant's nested condition (or ingest again to record them)")
    key = f"{qdrant_key(root)}{rest}"
    return FieldRef(key, None, label, key, f"{prefix}{rest}")


def _paths_below(root: str, names: list[str], known: dict[str, Any]) -> list[tuple[str, Any]]:
    """The recorded fields ``names`` reach from the column ``root``, at any depth of lists: (path, type).

    A path recorded with ``*`` (a map's values) takes the written key there.
    """
    found = [(root, known[root])] if not names and root in known and not root.startswith('"') else []
    prefix = f'"{root}"'
    for path, recorded in known.items():
        if not path.startswith(prefix) or path == prefix or path[len(prefix)] not in ".[":
            continue
        steps = re.findall(r'\.("[^"]*"|[^.\[]+)|\[\]', path[len(prefix):])
        steps = [s for s in steps if s]
        if len(steps) == len(names) and all(s in ("*", n, f'"{n}"') for s, n in zip(steps, names)):
            concrete = iter(qdrant_key(n) for n, s in zip(names, steps) if s == "*")
            found.append((re.sub(r"\.\*(?=\.|\[|$)", lambda _: "." + next(concrete), path), recorded))
    return found


def _typed(name: str, found: list[tuple[str, Any]], label: str) -> FieldRef:
    """Comparisons on the shallowest comparable path (the one an index serves), ``is null`` on the deepest."""
    found = sorted(found, key=lambda item: item[0].count("[]"))
    comparable = [item for item in found if item[1] is None or item[1] in FIELD_TYPES or item[1] == "null"
                  or item[0] in SYSTEM_FIELDS]
    path, recorded = comparable[0] if comparable else found[0]
    kind = _comparable(name, recorded, label)
    return FieldRef(qdrant_path(path), kind, label, qdrant_path(found[-1][0]), path)


def _comparable(name: str, recorded: str | None, label: str) -> str | None:
    """The type to compile comparisons of a field for; ``FilterError`` for values filters cannot look into."""
    if recorded is None or recorded in FIELD_TYPES or recorded == "null" or name in SYSTEM_FIELDS:
        return _field_type(recorded)
    raise FilterError(f"{label} holds {recorded}, which filters cannot compare as a whole "
                      "(compare a field inside it, e.g. meta.year, or a list of plain values)")


def _unknown(name: str, known: dict[str, Any], expression: str) -> str:
    fields = ", ".join(_display(k) for k in sorted(known) if k != "_source" and not k.startswith('"'))
    return f"unknown field {_display(name)} in: {expression} (fields: {fields})"


def _display(name: str) -> str:
    return name if _is_bare(name) and "." not in name else f"`{name}`"


def _is_bare(name: str) -> bool:
    return bool(re.fullmatch(r"[^\W\d][\w.\-]*", name))


def _field_type(recorded: str | None) -> str | None:
    return recorded if recorded in FIELD_TYPES or recorded == "null" else None  # null: no value in any row yet
