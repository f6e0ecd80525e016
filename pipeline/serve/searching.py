"""``/search`` and ``/search/upload`` as one path: the request → the library's ``QueryRequest`` (so HTTP refuses what
the CLI and the Python API refuse, in the same words), its query and examples → vectors (stored points, texts,
images sent as base64: never a server file), the ranking options ``run_queries`` would build, one ``search``.
"""
from __future__ import annotations

import asyncio
import functools
import os
import time
from dataclasses import dataclass, field
from typing import Any, Sequence
from urllib.parse import quote

import numpy as np
from fastapi import Request

from mmindex.errors import FilterError, MmindexError, UsageError
from mmindex.pipeline.models.backend import blank_text
from mmindex.pipeline.query.groups import check_group_field
from mmindex.pipeline.query.plan import DepthError, SearchOptions
from mmindex.pipeline.query.queries import QueryRequest, as_point_id, example_kind, keyword_vector, stored_vector
from mmindex.pipeline.query.search import FUSION_DEPTH, search
from mmindex.pipeline.serve.checks import check_filter, check_window, decode_base64_image, filter_of
from mmindex.pipeline.serve.errors import ApiError
from mmindex.pipeline.serve.schemas import SearchBody
from mmindex.pipeline.serve.service import Model, Service
from mmindex.pipeline.serve.settings import Limits


@dataclass(frozen=True)
class Example:
    """One ``like`` / ``unlike`` / ``not`` example: ``kind`` id, text, image or auto (a plain string, read as
    ``queries.example_kind`` reads the CLI's, files aside); ``value`` the point id (or id column value), the text or
    the decoded image; ``given`` as the request wrote it (what errors quote)."""

    kind: str
    value: Any
    given: str


@dataclass
class SearchInputs:
    """One search as both routes take it: the query (``text`` or a decoded ``image``, or neither with ``like``) and
    every option, with the names ``mmindex query`` gives them."""

    text: str | None = None
    image: Any = None
    target: str = "image"
    filter: str | dict[str, Any] | None = None
    limit: int = 10
    offset: int = 0
    score_threshold: float | None = None
    collection: str | None = None
    like: list[Example] = field(default_factory=list)
    unlike: list[Example] = field(default_factory=list)
    not_texts: list[str] = field(default_factory=list)
    mode: str = "dense"
    fusion: str | None = None
    strategy: str = "average_vector"
    diversity: float | None = None
    pool: int | None = None
    boost: str | None = None
    group_by: str | None = None
    group_size: int = 1
    cutoff: str | None = None
    fusion_depth: int = FUSION_DEPTH
    collapse_duplicates: bool = False

    def query_request(self) -> QueryRequest:
        """The library's request for these inputs: constructing it runs every check ``mmindex query`` and
        ``run_queries`` run (page, target, threshold, empty examples, each option and how they combine), so a bad
        input is the same UsageError (400 ``bad_request``) in its words. The query image is not a file here: it
        stands in by name for the checks only."""
        return QueryRequest(texts=[self.text] if self.text is not None else [],
                            image_paths=["image"] if self.image is not None else [], target=self.target,
                            limit=self.limit, offset=self.offset, score_threshold=self.score_threshold,
                            mode=self.mode, fusion=self.fusion, like=[e.given for e in self.like],
                            unlike=[e.given for e in self.unlike], not_texts=list(self.not_texts),
                            strategy=self.strategy, diversity=self.diversity, pool=self.pool, boost=self.boost,
                            group_by=self.group_by, group_size=self.group_size, cutoff=self.cutoff,
                            fusion_depth=self.fusion_depth, collapse_duplicates=self.collapse_duplicates)


async def inputs_of(body: SearchBody, service: Service, limits: Limits) -> SearchInputs:
    """A JSON body → ``SearchInputs``, its images decoded (in the decode pool, within ``limits``); 400
    ``bad_request`` unless it names something to search for: a text or an image (not both), and/or ``like``."""
    if body.text and blank_text(body.text):  # "" is no text, as before; "  " or "\x01" is a text that cleans to nothing
        raise ApiError(400, "bad_request", "text is empty once cleaned (only spaces or control characters): give a "
                                           "text to search for, or leave it out")
    text = body.text or None
    if (text is not None and body.image is not None) or not (text or body.image is not None or body.like):
        raise ApiError(400, "bad_request", "give a text or an image to search for (not both), and/or like examples")
    image = None
    if body.image is not None:
        image = await service.decode(decode_base64_image, body.image, "image", limits)
    options = {name: getattr(body, name) for name in ("target", "filter", "limit", "offset", "score_threshold",
                                                      "collection", "mode", "fusion", "strategy", "diversity",
                                                      "pool", "boost", "group_by", "group_size", "cutoff",
                                                      "fusion_depth", "collapse_duplicates")}
    return SearchInputs(text=text, image=image, like=await examples_of(body.like, "like", service, limits),
                        unlike=await examples_of(body.unlike, "unlike", service, limits),
                        not_texts=as_list(body.not_texts), **options)


def as_list(value: Any) -> list:
    """One value or a list of them → a list (None: empty)."""
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


async def examples_of(value: Any, name: str, service: Service, limits: Limits) -> list[Example]:
    """``like`` / ``unlike`` as the request gives them → ``Example`` values, as ``mmindex query --like`` reads its
    arguments: a string is a point id when it is written as one (a UUID), else a text (never a file path: the
    service reads no file a client names); ``{"id"}``, ``{"text"}`` or ``{"image": base64}`` say which."""
    examples = []
    for index, item in enumerate(as_list(value)):
        if isinstance(item, str):
            examples.append(Example("auto", item, item))
            continue
        given = {key: getattr(item, key) for key in ("id", "text", "image") if getattr(item, key) is not None}
        if len(given) != 1:
            raise ApiError(400, "bad_request", f"{name}[{index}]: give exactly one of id, text or image")
        kind, raw = next(iter(given.items()))
        if kind == "image":
            decoded = await service.decode(decode_base64_image, raw, f"{name}[{index}]", limits)
            examples.append(Example("image", decoded, f"{name}[{index}] (image)"))
        else:
            examples.append(Example(kind, raw, raw))
    return examples


async def run_search(request: Request, inputs: SearchInputs) -> dict:
    """One search, as ``run_queries`` runs it for the same inputs. The collection (an alias: the one it points to
    now) and its model are resolved once, together, and every step uses that one answer, which the answer names
    (``alias_of``, ``model``).

    4xx: 400 ``bad_request`` (the library's UsageError: an option out of range, options that do not go together),
    ``window_too_large`` (a page, pool or page of groups past ``--max-window``), ``unknown_field`` /
    ``ungroupable_field`` (``group_by``), ``bad_boost`` (a formula that does not parse), ``bad_filter``; 404
    ``not_found`` for an example id the collection does not hold.
    """
    state = request.app.state
    service, settings, metrics = state.service, state.settings, state.metrics
    check_window(inputs.offset, inputs.limit, settings.limits)
    check_filter(inputs.filter, settings.limits)
    query = inputs.query_request()
    check_bounds(inputs, settings.limits)
    name = inputs.collection or settings.store.collection
    resolved = await service.call(service.resolve, name)
    store, model = resolved.store, resolved.model
    if inputs.group_by:
        check_group(inputs.group_by, resolved.spec.payload_types, name)
    started = time.perf_counter()
    vector = await encode_query(inputs.text, inputs.image, model, metrics) if (
        inputs.text is not None or inputs.image is not None) else None
    found = await resolve_examples(service, store, model, inputs, resolved.spec)
    if inputs.mode != "dense" and inputs.text is not None:
        meta = await service.call(store.metadata)
        found["keywords"] = await service.call(keyword_vector, ("text", inputs.text), inputs.mode, meta,
                                               resolved.collection)
    options = query.options(**found)
    encoded = time.perf_counter()
    compiled = await service.call(filter_of, resolved.spec, inputs.filter, settings.limits)
    try:
        hits = await service.call(functools.partial(
            search, store, vector, inputs.target, None, compiled, inputs.limit, inputs.offset, inputs.score_threshold,
            fusion_depth=inputs.fusion_depth, options=options))
    except DepthError as error:  # a page past the candidates the ranking covers
        raise ApiError(400, "window_too_large", error.message) from None
    except FilterError as error:  # a boost the engine could not compute for some point: the formula's fault
        if options.boost is not None and error.message.startswith("--boost:"):
            raise ApiError(400, "bad_boost", error.message) from None
        raise
    done = time.perf_counter()
    metrics.search.observe(done - encoded)
    return {
        "collection": name, "alias_of": resolved.collection if resolved.collection != name else None,
        "model": model.encoder.name, "target": inputs.target, "mode": inputs.mode,
        "score_kind": score_kind(options, inputs.target),
        "hits": [public_hit(h, name, settings.image_root) for h in hits],
        "encode_ms": round((encoded - started) * 1000, 3), "search_ms": round((done - encoded) * 1000, 3),
    }


def check_bounds(inputs: SearchInputs, limits: Limits) -> None:
    """What one search may make the engine rank beyond its page: a ``pool`` of MMR candidates and a page
    of groups (``(offset + limit) × group_size`` hits) and a leg's ``fusion_depth``, each at most ``--max-window``
    (400 ``window_too_large``)."""
    wanted = inputs.offset + inputs.limit
    if isinstance(inputs.fusion_depth, int) and inputs.fusion_depth > limits.max_window:
        raise ApiError(400, "window_too_large", f"fusion_depth is {inputs.fusion_depth:,}; a leg brings at most "
                                                f"{limits.max_window:,} candidates here")
    if isinstance(inputs.pool, int) and inputs.pool > limits.max_window:
        raise ApiError(400, "window_too_large", f"pool is {inputs.pool:,}; diversity chooses among at most "
                                                f"{limits.max_window:,} candidates here")
    if inputs.diversity is not None and inputs.pool is not None and 0 < inputs.pool < wanted:
        raise ApiError(400, "window_too_large", f"diversity chooses among the best {inputs.pool:,} candidates "
                                                f"(pool): offset + limit ({wanted:,}) must be at most {inputs.pool:,}")
    if inputs.group_by and isinstance(inputs.group_size, int) and wanted * inputs.group_size > limits.max_window:
        raise ApiError(400, "window_too_large", f"(offset + limit) × group_size is {wanted * inputs.group_size:,} "
                                                f"hits; at most {limits.max_window:,} here")


def check_group(key: str, payload_types: dict[str, str], collection: str) -> None:
    """The library's check of a ``group_by`` field (its message), as 400 ``unknown_field`` for a field the
    collection does not have and ``ungroupable_field`` for one whose values form no groups."""
    try:
        check_group_field(key, payload_types, collection)
    except UsageError as error:
        known = key in payload_types or key == "caption"
        raise ApiError(400, "ungroupable_field" if known else "unknown_field", error.message) from None


async def resolve_examples(service: Service, store, model: Model, inputs: SearchInputs, spec) -> dict[str, Any]:
    """``like``, ``unlike`` and ``not`` as example vectors and ``boost`` as a formula, as ``queries.resolve_examples``
    finds them for the CLI: a point id is that point's vector of the searched target (``image`` for ``both``),
    the points given are excluded; texts and images are encoded by the collection's model. 404 ``not_found`` for
    an id the collection does not hold; 400 ``bad_boost`` for a formula that does not parse."""
    using = "text" if inputs.target == "text" else "image"
    found: dict[str, Any] = {}
    ids: list[str] = []
    negatives = [*inputs.unlike, *(Example("text", text, text) for text in inputs.not_texts)]
    for name, examples in (("positives", inputs.like), ("negatives", negatives)):
        vectors = []
        for example in examples:
            kind, value = await service.call(example_of, store, example)
            if kind == "id":
                vectors.append(await service.call(stored_or_404, store, value, using, example.given))
                ids.append(value)
            else:
                batcher = model.images if kind == "image" else model.texts
                vectors.append(np.asarray(await asyncio.wrap_future(batcher.submit([value])[0])))
        if vectors:
            found[name] = tuple(tuple(float(x) for x in vector) for vector in vectors)
    if ids:
        found["exclude_ids"] = tuple(dict.fromkeys(ids))
    if inputs.boost is not None:
        found["boost"] = await service.call(parsed_boost, inputs.boost, spec.payload_types)
    return found


def example_of(store, example: Example) -> tuple[str, Any]:
    """(kind, value) of an example: a plain string as the CLI reads one (a UUID or an id column's value naming a
    stored point is that point, ``id:``/``text:`` say which, else a text; never a file), ``{"id": …}`` a point id
    or id column value (404 ``not_found`` when no stored point has it)."""
    try:
        if example.kind == "auto":
            return example_kind(example.value, store, store.metadata(), files=False)
        if example.kind == "id":
            point_id = as_point_id(str(example.value), store, store.metadata())
            if point_id is None:
                raise UsageError(f"no point with id {example.given!r} in collection {store.collection!r}")
            return "id", point_id
    except UsageError as error:
        raise ApiError(404, "not_found", error.message) from None
    return example.kind, example.value


def stored_or_404(store, point_id: str, using: str, given: str) -> list[float]:
    """``queries.stored_vector``, its UsageError for a point the collection does not hold as 404 ``not_found``."""
    try:
        return stored_vector(store, point_id, using, given)
    except UsageError as error:
        raise ApiError(404, "not_found", error.message) from None


def parsed_boost(expression: str, payload_types: dict[str, str]) -> Any:
    """``rescore.parse_boost`` of ``boost`` (messages name it ``boost``): the ``Boost`` ``SearchOptions`` takes, as
    ``queries.resolve_examples`` gives it; its FilterError (the column and token at fault) as 400 ``bad_boost``."""
    from mmindex.pipeline.query.rescore import parse_boost  # the formula parser, only with boost

    try:
        return parse_boost(expression, payload_types, source="boost")
    except MmindexError as error:
        raise ApiError(400, "bad_boost", error.message) from None


async def encode_query(text: str | None, image, model: Model, metrics) -> np.ndarray:
    started = time.perf_counter()
    kind = "image" if image is not None else "text"
    batcher = model.images if image is not None else model.texts
    vector = await asyncio.wrap_future(batcher.submit([image if image is not None else text])[0])
    metrics.encode.labels(kind).observe(time.perf_counter() - started)
    return vector


def score_kind(options: SearchOptions, target: str) -> str:
    """What the hits' scores are, for a reader who must not take one kind for another: ``formula`` (a boost),
    ``cosine`` with ``diversity`` (both engines' MMR returns each pick's similarity to the query vector, whatever
    legs chose the candidates), ``fused`` (target both, hybrid), ``bm25`` (keyword), ``recommendation``
    (best_score / sum_scores), else ``cosine``: the similarity to the query (or to the average of the examples)."""
    if options.boost is not None:
        return "formula"
    if options.diversity is not None:
        return "cosine"
    if target == "both" or options.mode == "hybrid":
        return "fused"
    if options.mode == "keyword":
        return "bm25"
    if options.strategy != "average_vector" and (options.positives or options.negatives):
        return "recommendation"
    return "cosine"


# -- what answers may show ----------------------------------------------------------------------

def public_hit(hit, collection: str, image_root: str | None) -> dict[str, Any]:
    """A hit as the API shows it: the source without server paths, a thumbnail URL tied to its collection, its
    ``group`` with ``group_by``."""
    has_thumbnail = hit.has_thumbnail or bool(image_root and (hit.source or {}).get("path"))
    return {**hit.to_dict(), "source": public_source(hit.source),
            "thumbnail": f"/thumbnails/{quote(hit.id, safe='')}?collection={quote(collection, safe='')}"
            if has_thumbnail else None}


def public_source(source: dict[str, Any]) -> dict[str, Any]:
    """``_source`` without server paths: the file's name, the row, a relative image path, a named source."""
    shown: dict[str, Any] = {}
    if source.get("file"):
        shown["file"] = os.path.basename(str(source["file"]).rstrip("/"))
    if source.get("row") is not None:
        shown["row"] = source["row"]
    path = source.get("path")
    if path and not os.path.isabs(str(path)) and "://" not in str(path) and ".." not in str(path).split("/"):
        shown["path"] = path
    name = source.get("name")
    if name and not os.path.isabs(str(name)) and "://" not in str(name):
        shown["name"] = name
    return shown


def form_examples(values: Sequence[str] | None) -> list[Example]:
    """``like`` / ``unlike`` form fields of ``/search/upload`` (point ids or texts) → ``Example`` values."""
    return [Example("auto", item, item) for item in values or []]
