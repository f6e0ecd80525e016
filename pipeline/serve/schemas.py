"""The HTTP service's request and answer models (pydantic): what OpenAPI documents and what a request is checked
against before a route runs."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mmindex.pipeline.serve.settings import Limits

LIMITS = Limits()  # the documented bounds of the request models; the service's own are checked in the routes


WINDOW_CEILING = 100_000  # the request models' bound; --max-window (default 1,000) is checked in the route


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, max_length=LIMITS.max_text_chars, description="Query text (or give image).")
    image: str | None = Field(None, description="Query image, base64-encoded bytes (JPEG, PNG, WebP, …): standard or "
                                               "URL-safe alphabet, padded or not, line breaks allowed, or a data: URL "
                                               "(data:image/png;base64,…).")
    target: Literal["image", "text", "both"] = Field(
        "image", description="Vectors to search: images, captions, or both fused by reciprocal rank.")
    filter: str | dict[str, Any] | None = Field(
        None, description="A where expression (\"year >= 2020 and color in (red, blue)\") or a raw Qdrant filter; "
                          f"at most {LIMITS.max_filter_chars:,} characters (a raw one as JSON).")
    limit: int = Field(10, ge=1, le=WINDOW_CEILING)
    offset: int = Field(0, ge=0, le=WINDOW_CEILING,
                        description="offset + limit is at most the service's --max-window (default 1,000); pages "
                                    "are slices of one ranking.")
    score_threshold: float | None = Field(None, ge=-1.0, le=1.0,
                                          description="Cosine score below which hits are dropped (not with target both, "
                                                      "whose scores are fused ranks).")
    collection: str | None = Field(None, max_length=255, description="Default: the service's collection.")
    like: str | None = Field(None, max_length=64,
                             description="A point id: search with that point's image vector (more like this).")


class Hit(BaseModel):
    id: str
    score: float
    caption: str | None
    payload: dict[str, Any]
    source: dict[str, Any] = Field(description="Where the row came from: file name, row, relative image path.")
    thumbnail: str | None = Field(None, description="URL path of the result's thumbnail, if it has one.")


class SearchAnswer(BaseModel):
    collection: str = Field(description="The collection asked for (or the service's).")
    alias_of: str | None = Field(None, description="When `collection` is an alias: the collection it pointed to for "
                                                   "this search (resolved once, with its model).")
    model: str = Field(description="The model that encoded the query: the one that made this collection's vectors.")
    target: str
    hits: list[Hit]
    encode_ms: float
    search_ms: float


class EmbedBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(default_factory=list, max_length=LIMITS.max_embed_texts)
    images: list[str] = Field(default_factory=list, max_length=LIMITS.max_embed_images,
                              description="base64-encoded image bytes, in any form `image` of /search takes")


class EmbedAnswer(BaseModel):
    model: str
    text_model: str | None = None  # the text model that embedded ``texts``, when the collection has one
    dim: int
    texts: list[list[float]]
    images: list[list[float]]


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorAnswer(BaseModel):
    error: ErrorDetail


ERRORS = {status: {"model": ErrorAnswer} for status in (400, 401, 404, 409, 413, 422, 503)}
