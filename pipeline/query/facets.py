"""Facets: how many points hold each value of a payload field, among the points a query's filter matches.

A field is named as ``--where`` names it (``color``, ``meta.kind``, ``items.tag``, `` `shot on` ``) and typed by the
collection's recorded payload types (``query/fields.py``); the filter is compiled exactly as ``search`` compiles it
(``filters.compile_filter``), so the counts are of the points a search with the same filter can return. Both engines
count values only through a payload index: a keyword, integer or bool field without one gets it, once.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Sequence

from mmindex.connectors.base import FacetCount, Store
from mmindex.errors import FilterError, UsageError
from mmindex.pipeline.collection.info import require_collection
from mmindex.pipeline.query.fields import resolve_field
from mmindex.pipeline.query.filters import compile_filter

log = logging.getLogger("mmindex.facets")

FACET_TYPES = ("keyword", "integer", "bool")  # recorded types whose values the engines count
FACET_INDEXES = (*FACET_TYPES, "uuid")  # payload index kinds a count can use (Qdrant's map and bool indexes)
DEFAULT_LIMIT = 20


class FacetFieldError(UsageError):
    """A field whose values cannot be counted. ``code``: ``unknown_field`` (the collection has no such field),
    ``unfacetable_field`` (floats, moments, text with a full-text index, structs, a field that holds objects) or
    ``unindexed_field`` (no payload index, and the caller did not let one be created). The CLI exits with 2."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


@dataclass
class Facet:
    """The counts of one field: ``values`` in count order (descending, then value ascending), at most the limit."""

    field: str  # as the caller named it
    values: list[FacetCount]
    more: bool  # further values exist past ``values`` (a larger limit shows them)
    index_created: bool = False  # this call created the payload index the count needs (once per field)

    def to_dict(self) -> dict[str, Any]:
        """``{"field", "values": [{"value", "count"}], "more", "index_created"}``: what ``--json`` and ``/facets``
        answer for each field."""
        return {"field": self.field, "values": [{"value": c.value, "count": c.count} for c in self.values],
                "more": self.more, "index_created": self.index_created}


@dataclass(frozen=True)
class FacetField:
    """A field resolved against the collection's types: where the engine counts it and which index it needs."""

    name: str  # as the caller named it
    key: str | None  # the Qdrant key the count reads (None: the field has held no value yet)
    recorded: str  # the name payload_types and indexes use (a key, or a path such as "meta".kind)
    kind: str  # the recorded type: keyword, integer or bool


def facets(store: Store, fields: str | Sequence[str], where: str | None = None,
           filter_json: str | dict[str, Any] | None = None, limit: int = DEFAULT_LIMIT, exact: bool = True,
           create_index: bool = True, *, origin: str = "filter") -> list[Facet]:
    """For each of ``fields``, the ``limit`` values most points hold among those ``where`` AND ``filter_json`` match
    (both compiled as ``search`` compiles them), each with its number of points; ``Facet.more`` says whether further
    values exist (the engine is asked for ``limit + 1``).

    A point counts once for each distinct value it holds: a list field's elements each count (``tags = [cat, dog]``
    adds one to cat and one to dog); null and missing values count nowhere. ``exact=False`` lets the engine estimate
    counts on a large collection. A field without a payload index gets one of its type (``create_index``; the
    returned ``Facet.index_created`` says so), since both engines count only through an index; with
    ``create_index=False`` such a field is refused instead. A field that has held no value yet has no values.

    Raises ``FacetFieldError`` (a ``UsageError``) for an unknown field, one whose values cannot be counted (float,
    datetime, struct…) or, without ``create_index``, one without an index; ``UsageError`` for no field or a
    ``limit`` below 1; ``FilterError`` for a bad filter (``origin`` names ``filter_json`` in its message: ``filter``,
    ``--filter-json``); ``StoreError`` when the collection does not exist.
    """
    names = [fields] if isinstance(fields, str) else list(dict.fromkeys(fields))
    if not names:
        raise UsageError("name at least one field to count the values of")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise UsageError(f"limit must be a whole number of at least 1, not {limit!r}")
    spec = require_collection(store)
    resolved = [facet_field(name, spec.payload_types) for name in names]
    query_filter = compile_filter(where, filter_json, field_types=spec.payload_types, origin=origin)
    indexed = store.info().indexed_fields if any(f.key for f in resolved) else {}
    answers = []
    for field in resolved:
        if field.key is None:
            answers.append(Facet(field.name, [], False))
            continue
        created = ensure_index(store, field, indexed, create_index)
        counts = store.facet(field.key, query_filter, limit + 1, exact)
        answers.append(Facet(field.name, counts[:limit], len(counts) > limit, created))
    return answers


def facet_field(name: str, field_types: dict[str, str]) -> FacetField:
    """``name`` (as ``--where`` writes a field, backticks allowed) → the ``FacetField`` to count, or
    ``FacetFieldError`` naming the field and, for one that cannot be counted, its type and the fields that can."""
    quoted = len(name) > 1 and name[0] == name[-1] == "`"
    try:
        ref = resolve_field(name[1:-1] if quoted else name, quoted, field_types)
    except FilterError as error:
        message = error.message.replace(" in:  (", " (")
        if message.startswith("unknown field"):
            raise FacetFieldError("unknown_field", f"{message}; {countable(field_types)}") from None
        message = message.replace("which filters cannot compare as a whole", "which facets cannot count as a whole")
        raise FacetFieldError("unfacetable_field", f"{message}; {countable(field_types)}") from None
    if ref.type == "null":
        return FacetField(name, None, ref.recorded, "null")  # no row has held a value yet
    if ref.type not in FACET_TYPES:
        held = (f"{ref.type} values: facets count the values of keyword, integer and bool fields only (a range in "
                "--where selects among these)") if ref.type else "objects: count a field inside them"
        raise FacetFieldError("unfacetable_field", f"{ref.label} holds {held}; {countable(field_types)}")
    return FacetField(name, ref.key, ref.recorded, ref.type)


def ensure_index(store: Store, field: FacetField, indexed: dict[str, str], create: bool) -> bool:
    """Whether this call created ``field``'s payload index (of its recorded type); FacetFieldError when it has an
    index of a kind facets cannot use (a full-text index, which a keyword index would replace) or, with ``create``
    False, none."""
    kind = indexed.get(field.recorded)
    if kind in FACET_INDEXES:
        return False
    if kind is not None:
        raise FacetFieldError("unfacetable_field", f"{field.name} has a {kind} payload index; counting its values "
                                                   f"needs a {field.kind} index, which would replace it")
    if not create:
        raise FacetFieldError("unindexed_field", f"{field.name} has no payload index, which counting its values "
                                                 f"needs (mmindex ingest --index-fields {field.name})")
    log.info("creating a %s payload index on %s (once) to count its values", field.kind, field.name)
    store.create_payload_index(field.recorded, field.kind)
    indexed[field.recorded] = field.kind
    return True


def countable(field_types: dict[str, str]) -> str:
    """The fields of a collection whose values facets can count, as ``--where`` names them."""
    names = sorted({where_name(path) for path, kind in field_types.items() if kind in FACET_TYPES} - {None},
                   key=lambda name: name.strip("`"))
    return f"fields facets can count: {', '.join(names)}" if names else "no field here holds values facets can count"


def where_name(path: str) -> str | None:
    """A recorded field (``color``, ``"meta".kind``, ``"items"[].tag``, ``"m".*``) as ``--where`` names it
    (``color``, ``meta.kind``, ``items.tag``, ``m.KEY``); None for a list's elements, which their list names."""
    if not path.startswith('"'):
        return path if re.fullmatch(r"[^\W\d][\w.\-]*", path) else f"`{path}`"
    end = path.index('"', 1)
    rest = path[end + 1:].replace("[]", "").replace(".*", ".KEY").replace('"', "")
    return path[1:end] + rest if rest else None
