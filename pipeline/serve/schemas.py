"""The HTTP service's request and answer models (pydantic): what OpenAPI documents and what a request is checked
against before a route runs."""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from mmindex.pipeline.serve.settings import Limits

LIMITS = Limits()  # the documented bounds of the request models; the service's own are checked in the routes


WINDOW_CEILING = 100_000  # the request models' bound; --max-window (default 1,000) is checked in the route
MAX_EXAMPLES = 16  # examples in each of like, unlike and not
MAX_BOOST_CHARS = 1_000  # a --boost formula


class Example(BaseModel):
    """One example of ``like`` or ``unlike``, named by kind: exactly one of ``id``, ``text`` or ``image``."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, max_length=255, description="A stored point's id, or its id column's value.")
    text: str | None = Field(None, max_length=LIMITS.max_text_chars)
    image: str | None = Field(None, description="base64-encoded image bytes, in any form `image` takes.")


ExampleText = Annotated[str, Field(max_length=LIMITS.max_text_chars)]
Examples = Union[ExampleText, Example, Annotated[list[Union[ExampleText, Example]], Field(max_length=MAX_EXAMPLES)],
                 None]
ExampleTexts = Union[ExampleText, Annotated[list[ExampleText], Field(max_length=MAX_EXAMPLES)], None]


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
    mode: Literal["dense", "keyword", "hybrid"] = Field(
        "dense", description="dense: the CLIP vectors (meaning); keyword: BM25 over the caption and the collection's "
                             "text fields (exact words: part numbers, names); hybrid: both, fused by the engine. "
                             "keyword and hybrid need a `text`.")
    fusion: Literal["rrf", "dbsf"] | None = Field(
        None, description="How target both and mode hybrid fuse their rankings: reciprocal rank (rrf; the default "
                          "for target both) or distribution-based score fusion (dbsf; the default for mode hybrid, "
                          "whose BM25 scores tie often).")
    like: Examples = Field(
        None, description="Search near these examples too (one, or a list of up to "
                          f"{MAX_EXAMPLES}): a point id (a UUID: that stored point's vector), a text, or "
                          "{\"image\": base64}. Alone: more like this; a stored point given is never returned.")
    unlike: Examples = Field(None, description="Search away from these examples: as `like` takes them.")
    not_texts: ExampleTexts = Field(None, alias="not", description="Search away from these texts (one or a list).")
    strategy: Literal["average_vector", "best_score", "sum_scores"] = Field(
        "average_vector", description="How examples combine (Qdrant's recommendation strategies): average_vector "
                                      "searches near 2·mean(likes) − mean(unlikes); best_score and sum_scores score "
                                      "each point against every example.")
    diversity: float | None = Field(
        None, description="0 to 1: trade relevance for variety with maximal marginal relevance (0: plain ranking; "
                          "0.5 is a good start), choosing among `pool` candidates.")
    pool: int | None = Field(None, description="Candidates `diversity` chooses from (default: 100, or offset + limit "
                                               "if larger); at most the service's --max-window.")
    boost: str | None = Field(None, max_length=MAX_BOOST_CHARS,
                              description="Rescore by payload, as `mmindex query --boost` takes it: e.g. "
                                          "\"score + 0.1 * popularity\".")
    group_by: str | None = Field(None, max_length=255,
                                 description="At most `group_size` hits per value of this payload field (keyword, "
                                             "integer or bool); `limit` and `offset` then count groups.")
    group_size: int = Field(1, description="Hits per group with `group_by`; (offset + limit) × group_size is at "
                                           "most the service's --max-window.")
    cutoff: Literal["auto"] | None = Field(
        None, description="auto: return only the hits judged relevant to this query (zero included), `limit` at "
                          "most.")
    fusion_depth: int = Field(100, description="Candidates each leg of a fused (target both, mode hybrid) or "
                                               "boosted ranking brings; a page must end within them; at most the "
                                               "service's --max-window.")
    collapse_duplicates: bool = Field(
        False, description="One hit per group of exact or near duplicates (the best scoring), the others' ids in its "
                           "`duplicates`; `limit` and `offset` count the hits shown. Not with group_by or diversity.")


class Hit(BaseModel):
    id: str
    score: float
    caption: str | None
    payload: dict[str, Any]
    source: dict[str, Any] = Field(description="Where the row came from: file name, row, relative image path.")
    thumbnail: str | None = Field(None, description="URL path of the result's thumbnail, if it has one.")
    group: bool | int | str | None = Field(None, description="With `group_by`: the value of the group this hit is "
                                                             "shown in.")
    duplicates: list[str] | None = Field(None, description="With `collapse_duplicates`: ids of the exact or near "
                                                           "copies this hit stands for (ranked above the next hit "
                                                           "shown).")


class SearchAnswer(BaseModel):
    collection: str = Field(description="The collection asked for (or the service's).")
    alias_of: str | None = Field(None, description="When `collection` is an alias: the collection it pointed to for "
                                                   "this search (resolved once, with its model).")
    model: str = Field(description="The model that encoded the query: the one that made this collection's vectors.")
    target: str
    mode: str = Field(description="dense, keyword or hybrid.")
    score_kind: str = Field(description="What each hit's `score` is: `cosine` (similarity to the query, −1 to 1; "
                                        "also with `diversity`), `fused` (rank fusion), `bm25` (keyword weight), "
                                        "`recommendation` or `formula` (a boost).")
    hits: list[Hit]
    encode_ms: float
    search_ms: float


class DuplicateMember(BaseModel):
    id: str = Field(description="The point id (as `keeper`, `pairs` and `/search` hits give it).")
    id_value: str | None = Field(None, description="The collection's id column value for this image, as text (what "
                                                   "tells copies apart: they share a caption); null when point ids "
                                                   "are made from content.")
    caption: str | None
    width: int | None = Field(None, description="The decoded image's width, px.")
    height: int | None = None
    thumbnail: str | None = Field(None, description="URL path of its thumbnail, if it has one.")


class DuplicatePairAnswer(BaseModel):
    left: str
    right: str
    tier: str = Field(description="exact, near or similar.")
    cosine: float | None = Field(None, description="Cosine of the two image vectors (None: an exact pair found by "
                                                   "its pixel hash alone).")
    hash_distance: int | None = Field(None, description="Bits (of 64) between the perceptual hashes.")
    residual: float | None = Field(None, description="Share of cells that still differ once aligned.")
    displaced: float | None = None
    mirrored: bool = False


class DuplicateGroupAnswer(BaseModel):
    group: int
    tier: str = Field(description="The weakest tier among the group's pairs.")
    keeper: str = Field(description="The suggested point to keep: the most pixels, then the first in source order.")
    size: int
    members: list[DuplicateMember] = Field(description="The keeper first, then by id.")
    pairs: list[DuplicatePairAnswer]


class DuplicatesAnswer(BaseModel):
    collection: str
    alias_of: str | None = None
    tier: str
    groups: list[DuplicateGroupAnswer] = Field(description="Groups `offset` to `offset + limit`, in keeper id order.")
    total_groups: int
    points: int = Field(description="Points in the collection.")
    without_signals: int = Field(description="Points without duplicate signals (never exact or near).")
    cached: bool = Field(description="The groups came from the service's cache of the last run on this collection.")


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


MAX_FACET_FIELDS = 16  # fields one /facets request may count
MAX_FACET_LIMIT = 1_000  # values per field one /facets request may show


class FacetsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fields: list[str] = Field(min_length=1, max_length=MAX_FACET_FIELDS,
                              description="Payload fields as the where language names them (color, meta.kind, "
                                          "items.tag): keyword, integer or bool fields.")
    filter: str | dict[str, Any] | None = Field(
        None, description="Count only the points this filter matches: a where expression or a raw Qdrant filter, "
                          "as /search takes it.")
    where: str | None = Field(None, max_length=LIMITS.max_filter_chars,
                              description="A where expression, ANDed with `filter`.")
    limit: int = Field(20, ge=1, le=MAX_FACET_LIMIT, description="Values per field, most frequent first.")
    collection: str | None = Field(None, max_length=255, description="Default: the service's collection.")


class FacetValue(BaseModel):
    value: bool | int | str
    count: int = Field(description="Points holding the value (a point with it several times in a list counts once).")


class FieldFacets(BaseModel):
    field: str = Field(description="The field, as the request named it.")
    values: list[FacetValue] = Field(description="Most frequent first; equal counts by value.")
    more: bool = Field(description="Further values exist past `limit`.")
    index_created: bool = Field(description="This request created the payload index the count needs (once).")


class FacetsAnswer(BaseModel):
    collection: str = Field(description="The collection asked for (or the service's).")
    alias_of: str | None = Field(None, description="When `collection` is an alias: the collection it pointed to.")
    facets: list[FieldFacets]


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorAnswer(BaseModel):
    error: ErrorDetail


ERRORS = {status: {"model": ErrorAnswer} for status in (400, 401, 404, 409, 413, 422, 503)}
