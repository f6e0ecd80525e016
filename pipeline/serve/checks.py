"""What one request may ask of the service, checked before the work it costs: its page (``--max-window``), its filter
(bounded in nesting and size, then compiled against the collection's types) and its images (decoded within the
pixel and memory bounds). Shared by ``/search``, ``/search/upload``, ``/embed`` and ``/facets``."""
from __future__ import annotations

import json
from typing import Any

from mmindex.connectors.base import CollectionSpec
from mmindex.pipeline.query.filters import check_json_depth, compile_filter
from mmindex.pipeline.query.where import check_filter_shape
from mmindex.pipeline.serve.errors import ApiError
from mmindex.pipeline.serve.images import base64_bytes, decode_query_image
from mmindex.pipeline.serve.schemas import LIMITS
from mmindex.pipeline.serve.settings import Limits


def check_window(offset: int, limit: int, limits: Limits) -> None:
    if offset + limit > limits.max_window:
        raise ApiError(400, "window_too_large", f"offset + limit is {offset + limit:,}; at most "
                                                f"{limits.max_window:,} results can be paged through")


def filter_of(collection, value: str | dict | None, limits: Limits) -> dict[str, Any] | None:
    """The request's ``filter`` (a where expression, or a raw Qdrant filter as JSON text or an object) → a checked
    Qdrant filter bounded by ``limits`` (``compile_filter``), typed by ``collection`` (its ``CollectionSpec``, or its
    store, whose spec is read); FilterError (400) for an invalid or too large one."""
    raw = not isinstance(value, str) or value.strip().startswith("{")
    field_types = None
    if not raw and value.strip():
        spec = collection if isinstance(collection, CollectionSpec) or collection is None else collection.spec()
        field_types = spec.payload_types if spec is not None else None
    return compile_filter(None if raw else value, value if raw else None, field_types=field_types, origin="filter",
                          max_depth=limits.max_filter_depth, max_conditions=limits.max_filter_conditions)


def check_filter(value: Any, limits: Limits) -> None:
    """Bound a filter's nesting (a raw object's, measured without recursion) and then its size (characters, as JSON
    for a raw one), before anything else reads it."""
    if value is None:
        return
    if not isinstance(value, str):
        check_json_depth(value, "filter", limits.max_filter_depth)
    text = value if isinstance(value, str) else json.dumps(value)
    if len(text) > limits.max_filter_chars:
        raise ApiError(400, "filter_too_long", f"filter has {len(text):,} characters; at most "
                                               f"{limits.max_filter_chars:,}")
    if not isinstance(value, str):
        check_filter_shape(value, "filter", limits.max_filter_depth, None)


def decode_base64_image(data: str, field_name: str = "image", limits: Limits = LIMITS):
    """A query image sent as base64 text (any spelling ``base64_bytes`` reads) → an RGB image, bounded by ``limits``."""
    return decode_bytes(base64_bytes(data, field_name), field_name, limits)


def decode_bytes(raw: bytes, field_name: str = "image", limits: Limits = LIMITS):
    """Decode a query image; its pixels and the memory decoding them takes are read from the header and refused
    before any pixel is decoded (``decode_query_image``); a large decode's memory goes back to the system after."""
    return decode_query_image(raw, field_name, limits.max_query_pixels, limits.max_decode_bytes)
