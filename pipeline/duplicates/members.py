"""What people know a grouped image by, beside its point id (a UUID that copies do not tell apart): the value of the
collection's id column, for collections that make point ids from one (``mmindex ingest --id-column``; recorded in
the collection's metadata as ``id_rule``). Shared by ``mmindex duplicates`` and ``GET /duplicates``."""
from __future__ import annotations

from typing import Any

from mmindex.connectors.base import Store


def id_column(store: Store) -> str | None:
    """The column the collection's point ids are made from (its metadata's ``id_rule``), or None: ids made from
    content, or a collection made before the rule was recorded."""
    return ((store.metadata() or {}).get("id_rule") or {}).get("column")


def id_value(payload: dict[str, Any] | None, column: str | None) -> str | None:
    """The id column's value in ``payload``, as text (an integer id column: its digits); None without a column or
    a value."""
    value = (payload or {}).get(column) if column else None
    return None if value is None else str(value)
