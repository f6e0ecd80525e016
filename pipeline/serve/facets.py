"""``/facets`` for the HTTP service: the library's value counts (``query/facets.py``) in the collection a request names,
under its filters (bounded and compiled as /search's), with field names bounded and field errors answered as 400s
with a stable code."""
from __future__ import annotations

from typing import Any, Sequence

from mmindex.pipeline.query.facets import FacetFieldError, facets
from mmindex.pipeline.query.filters import combine_filters
from mmindex.pipeline.serve.checks import check_filter, filter_of
from mmindex.pipeline.serve.errors import ApiError
from mmindex.pipeline.serve.schemas import MAX_FACET_FIELDS
from mmindex.pipeline.serve.settings import ServeSettings

MAX_FIELD_CHARS = 255


async def run_facets(service, settings: ServeSettings, fields: Sequence[str], filters: Sequence[Any], limit: int,
                     collection: str | None) -> dict[str, Any]:
    """The ``/facets`` answer: ``fields`` counted in ``collection`` (default: the service's; an alias: the collection
    it points to now, named in ``alias_of``) under ``filters`` ANDed, each a where expression or a raw Qdrant filter
    (None: none), bounded and compiled as /search's ``filter`` is. No model is needed, so none is loaded."""
    for value in filters:
        check_filter(value, settings.limits)
    name = collection or settings.store.collection
    found, store, spec = await service.call(service.locate, name)
    compiled = [await service.call(filter_of, spec, value, settings.limits) for value in filters]
    answers = await service.call(count_values, store, fields, combine_filters(*compiled), limit)
    return {"collection": name, "alias_of": found if found != name else None, "facets": answers}


def count_values(store, fields: Sequence[str], query_filter: dict[str, Any] | None, limit: int) -> list[dict]:
    """Each field's ``Facet.to_dict()`` among the points ``query_filter`` (already compiled and bounded) matches.

    ApiError 400: ``bad_request`` for no field, more than ``MAX_FACET_FIELDS`` or a blank or over-long name;
    ``unknown_field`` / ``unfacetable_field`` as ``FacetFieldError`` says. A field without a payload index gets one.
    """
    if not fields or len(fields) > MAX_FACET_FIELDS:
        raise ApiError(400, "bad_request", f"give 1 to {MAX_FACET_FIELDS} fields to count, not {len(fields)}")
    for name in fields:
        if not name.strip() or len(name) > MAX_FIELD_CHARS:
            raise ApiError(400, "bad_request", f"a field name has 1 to {MAX_FIELD_CHARS} characters, not "
                                               f"{len(name):,}")
    try:
        return [facet.to_dict() for facet in facets(store, fields, None, query_filter, limit)]
    except FacetFieldError as error:
        raise ApiError(400, error.code, error.message) from None
