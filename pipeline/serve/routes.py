"""The HTTP routes of ``mmindex serve``: request and answer models, the routes, the error mapping.

Routes reach the ``Service`` (model, stores, pools) and ``ServeSettings`` through
``request.app.state``. Anything the caller can fix is a 4xx with a stable code; a store that
fails or times out is 503. Answers never carry server paths: no data directory, model folder,
Parquet path or absolute image path.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import os
import time
import uuid
from typing import Any, Literal
from urllib.parse import quote

import numpy as np
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from mmindex.errors import (CollectionMismatchError, EncodeError, FilterError, InputError, MmindexError,
                                     StoreError)
from mmindex.pipeline.ingest.images import THUMBNAIL_KEY, RejectedImage, decode_image, resolve_image_path, thumbnail
from mmindex.pipeline.serve.service import ApiError, Limits, Model, Service, ServeSettings, log
from mmindex.pipeline.serve.guard import error_body

LIMITS = Limits()  # the documented bounds of the request models; the service's own are checked in the routes
router = APIRouter()


class Metrics:
    """Prometheus metrics of one app."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("mmindex_requests_total", "HTTP requests", ["route", "status"], registry=self.registry)
        self.latency = Histogram("mmindex_request_seconds", "Request latency", ["route"], registry=self.registry)
        self.encode = Histogram("mmindex_encode_seconds", "Time spent encoding queries", ["kind"],
                                registry=self.registry)
        self.search = Histogram("mmindex_search_seconds", "Time spent in the vector store", registry=self.registry)
        self.batch_sizes = Histogram("mmindex_encode_batch_size", "Items per model forward pass",
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)

    def request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)


# -- request and answer models ----------------------------------------------------------------

WINDOW_CEILING = 100_000  # the request models' bound; --max-window (default 1,000) is checked in the route


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, max_length=LIMITS.max_text_chars, description="Query text (or give image).")
    image: str | None = Field(None, description="Query image, base64-encoded bytes (JPEG, PNG, WebP, …).")
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
    collection: str
    target: str
    hits: list[Hit]
    encode_ms: float
    search_ms: float


class EmbedBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(default_factory=list, max_length=LIMITS.max_embed_texts)
    images: list[str] = Field(default_factory=list, max_length=LIMITS.max_embed_images,
                              description="base64-encoded image bytes")


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


def _context(request: Request) -> tuple[Service, ServeSettings, Metrics]:
    state = request.app.state
    return state.service, state.settings, state.metrics


# -- routes ------------------------------------------------------------------------------------

@router.post("/search", response_model=SearchAnswer, responses=ERRORS, summary="Search with text or an image")
async def search_route(body: SearchBody, request: Request):
    service, settings, _ = _context(request)
    if sum([bool(body.text and body.text.strip()), body.image is not None, body.like is not None]) != 1:
        raise ApiError(400, "bad_request", "give exactly one of text, image or like")
    check_window(body.offset, body.limit, settings.limits)
    check_filter(body.filter, settings.limits)
    if body.target == "both" and body.score_threshold is not None:
        raise ApiError(400, "bad_request", "score_threshold compares one vector's cosine score; with target both the "
                                           "scores are fused ranks: search image or text to use it")
    image = None
    if body.image is not None:
        image = await service.decode(decode_base64_image, body.image, "image", settings.limits.max_query_pixels)
    return await run_search(request, body.text, image, body.target, body.filter, body.limit, body.offset,
                            body.score_threshold, body.collection, body.like)


@router.post("/search/upload", response_model=SearchAnswer, responses=ERRORS,
             summary="Search with an uploaded image (multipart/form-data)")
async def search_upload(request: Request, image: UploadFile = File(...),
                        target: Literal["image", "text", "both"] = Form("image"),
                        filter: str | None = Form(None, max_length=LIMITS.max_filter_chars),
                        limit: int = Form(10, ge=1, le=WINDOW_CEILING),
                        offset: int = Form(0, ge=0, le=WINDOW_CEILING),
                        collection: str | None = Form(None, max_length=255)):
    service, settings, _ = _context(request)
    check_window(offset, limit, settings.limits)
    raw = await image.read(settings.limits.max_body_bytes + 1)  # the guard bounded the whole body already
    decoded = await service.decode(decode_bytes, raw, "image", settings.limits.max_query_pixels)
    check_filter(filter, settings.limits)
    return await run_search(request, None, decoded, target, filter or None, limit, offset, None, collection)


@router.post("/embed", response_model=EmbedAnswer, responses=ERRORS, summary="Texts and images to vectors")
async def embed_route(body: EmbedBody, request: Request):
    service, settings, _ = _context(request)
    limits = settings.limits
    if not body.texts and not body.images:
        raise ApiError(400, "bad_request", "give texts and/or images")
    for index, text in enumerate(body.texts):
        if len(text) > limits.max_text_chars:
            raise ApiError(400, "text_too_long", f"texts[{index}] has {len(text):,} characters; at most "
                                                 f"{limits.max_text_chars:,} (a CLIP reads about 300)")
    images = [await service.decode(decode_base64_image, data, f"images[{i}]", limits.max_query_pixels, bulk=True)
              for i, data in enumerate(body.images)]
    model = service.current
    text_futures = model.bulk_texts.submit(body.texts) if body.texts else []
    image_futures = model.bulk_images.submit(images) if images else []
    texts = [np.asarray(await asyncio.wrap_future(f)).tolist() for f in text_futures]
    vectors = [np.asarray(await asyncio.wrap_future(f)).tolist() for f in image_futures]
    return {"model": model.encoder.name, "text_model": model.encoder.text_name, "dim": model.encoder.dim,
            "texts": texts, "images": vectors}


@router.get("/collections/{name}", responses=ERRORS, summary="A collection: points, model, vectors, payload")
async def collection_route(name: str, request: Request):
    service, _, _ = _context(request)
    store = await service.call(service.existing, name)
    return public_info(await service.call(lambda: store.info().to_dict()))


@router.get("/thumbnails/{point_id}", responses={**ERRORS, 200: {"content": {"image/jpeg": {}}}},
            response_class=Response, summary="A result's thumbnail (JPEG)")
async def thumbnail_route(point_id: str, request: Request, collection: str | None = None):
    service, settings, _ = _context(request)
    try:
        point_id = str(uuid.UUID(point_id))
    except ValueError:
        raise ApiError(404, "not_found", "no such point") from None
    store = await service.call(service.existing, collection or settings.store.collection)
    points = await service.call(store.retrieve, [point_id])
    if not points:
        raise ApiError(404, "not_found", "no such point")
    data = await service.decode(thumbnail_bytes, points[0].payload, settings.image_root)
    if data is None:
        raise ApiError(404, "no_thumbnail", "this point has no thumbnail (ingest with --thumbnails, or serve "
                                            "with --image-root for path images)")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})


@router.get("/healthz", summary="Liveness: answers at once, whatever the load")
async def healthz():
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ErrorAnswer}},
            summary="Readiness: model loaded, the collection open, existing and answering")
async def readyz(request: Request):
    service, settings, _ = _context(request)
    name = settings.store.collection
    try:
        store, spec = await service.call(service.lookup, name)
        if spec is None:
            raise ApiError(503, "not_ready", f"collection {name!r} does not exist")
        await service.call(store.count)
    except (ApiError, MmindexError) as failure:
        message = failure.message if isinstance(failure, ApiError) else "the vector store is not answering"
        if not isinstance(failure, ApiError):
            log.warning("readiness: %s", failure)
        return JSONResponse(error_body("not_ready", message), status_code=503)
    model = service.current
    return {"status": "ready", "model": model.encoder.name, "text_model": model.encoder.text_name,
            "dim": model.encoder.dim, "collection": name,
            "store": settings.store.kind}


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics_route(request: Request):
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page():
    from pathlib import Path

    return HTMLResponse((Path(__file__).parent / "web" / "index.html").read_text())


# -- the search itself --------------------------------------------------------------------------

async def run_search(request: Request, text, image, target, filter_value, limit, offset, score_threshold,
                     collection, like: str | None = None) -> dict:
    from mmindex.pipeline.query.search import search

    service, settings, metrics = _context(request)
    name = collection or settings.store.collection
    store, model = await service.call(service.checked, name)
    started = time.perf_counter()
    if like is not None:
        vector = await like_vector(service, store, like)
    else:
        vector = await encode_query(text, image, model, metrics)
    encoded = time.perf_counter()
    compiled = await service.call(compile_filter, store, filter_value, settings.limits)
    hits = await service.call(functools.partial(search, store, vector, target, None, compiled, limit, offset,
                                                score_threshold, fusion_depth=settings.limits.max_window))
    done = time.perf_counter()
    metrics.search.observe(done - encoded)
    return {
        "collection": name, "target": target,
        "hits": [public_hit(h, name, settings.image_root) for h in hits],
        "encode_ms": round((encoded - started) * 1000, 3), "search_ms": round((done - encoded) * 1000, 3),
    }


async def encode_query(text: str | None, image, model: Model, metrics: Metrics) -> np.ndarray:
    started = time.perf_counter()
    kind = "image" if image is not None else "text"
    batcher = model.images if image is not None else model.texts
    vector = await asyncio.wrap_future(batcher.submit([image if image is not None else text])[0])
    metrics.encode.labels(kind).observe(time.perf_counter() - started)
    return vector


async def like_vector(service: Service, store, point_id: str):
    try:
        point_id = str(uuid.UUID(point_id))
    except ValueError:
        raise ApiError(404, "not_found", f"no point {point_id!r}") from None
    points = await service.call(store.retrieve, [point_id], True)
    if not points or not points[0].vectors or "image" not in points[0].vectors:
        raise ApiError(404, "not_found", f"no point {point_id!r} with an image vector")
    return np.asarray(points[0].vectors["image"], dtype=np.float32)


def check_window(offset: int, limit: int, limits: Limits) -> None:
    if offset + limit > limits.max_window:
        raise ApiError(400, "window_too_large", f"offset + limit is {offset + limit:,}; at most "
                                                f"{limits.max_window:,} results can be paged through")


def compile_filter(store, value: str | dict | None, limits: Limits) -> dict[str, Any] | None:
    """A where expression or raw filter (JSON text or object) → a checked Qdrant filter, bounded in shape.

    Raises FilterError (400) for an invalid filter, or one nested deeper or with more
    conditions than the limits allow: the store evaluates each condition on every candidate.
    """
    from mmindex.pipeline.query.where import check_filter_shape, parse_where, validate_filter

    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except ValueError as failure:
            raise FilterError(f"filter is not valid JSON: {failure}") from None
    if isinstance(value, str):
        spec = store.spec()
        compiled = parse_where(value, spec.payload_types if spec else None)
    else:
        compiled = validate_filter(value, "filter")
    check_filter_shape(compiled, "filter", limits.max_filter_depth, limits.max_filter_conditions)
    return compiled


def check_filter(value: Any, limits: Limits) -> None:
    """Bound a filter's size (characters, as JSON for a raw one) and a raw filter's nesting."""
    if value is None:
        return
    text = value if isinstance(value, str) else json.dumps(value)
    if len(text) > limits.max_filter_chars:
        raise ApiError(400, "filter_too_long", f"filter has {len(text):,} characters; at most "
                                               f"{limits.max_filter_chars:,}")
    if not isinstance(value, str) and _depth(value) > limits.max_filter_depth:
        raise ApiError(400, "bad_filter", f"filter nests deeper than {limits.max_filter_depth} levels")


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return max((_depth(v) for v in value), default=0)
    return 0


# -- images and thumbnails ----------------------------------------------------------------------

def decode_base64_image(data: str, field_name: str = "image", max_pixels: int = LIMITS.max_query_pixels):
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_image", f"{field_name} is not valid base64") from None
    return decode_bytes(raw, field_name, max_pixels)


def decode_bytes(raw: bytes, field_name: str = "image", max_pixels: int = LIMITS.max_query_pixels):
    """Decode a query image; its size is read from the header and refused before any pixel is decoded."""
    try:
        return decode_image(raw, 224, max_pixels)
    except RejectedImage as error:
        raise ApiError(400, "bad_image", f"{field_name}: {error.message} (--max-query-pixels)"
                       if "pixels" in error.message else f"{field_name}: {error.message}") from None


def thumbnail_bytes(payload: dict[str, Any], image_root: str | None) -> bytes | None:
    """From the stored thumbnail, or the image file under --image-root; never another path."""
    stored = payload.get(THUMBNAIL_KEY)
    if stored:
        return base64.b64decode(stored)
    source = payload.get("_source") or {}
    if not image_root or not source.get("path") or not source.get("file"):
        return None
    try:
        path = resolve_image_path(source["path"], source["file"], image_root)
        with open(path, "rb") as handle:
            image = decode_image(handle.read(1 << 26), 256)
    except (RejectedImage, OSError):
        return None
    return base64.b64decode(thumbnail(image, 256))


# -- what answers may show ----------------------------------------------------------------------

def public_hit(hit, collection: str, image_root: str | None) -> dict[str, Any]:
    """A hit as the API shows it: the source without server paths, a thumbnail URL tied to its collection."""
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


def public_info(info: dict[str, Any]) -> dict[str, Any]:
    """``mmindex info`` of a collection without where it lives or where its model was loaded from."""
    hidden = ("location", "model_path", "sources")
    return {key: value for key, value in info.items() if key not in hidden}


# -- errors ------------------------------------------------------------------------------------

def add_error_handlers(app) -> None:
    """Every error the caller can cause is a 4xx with a stable code; the store's trouble is 503."""

    def error(status: int, code: str, message: str) -> JSONResponse:
        return JSONResponse(error_body(code, message), status_code=status)

    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        return error(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        return error(422, "invalid_request", f"{where}: {first.get('msg', 'invalid request')}".strip(": "))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
        return error(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))

    # The project's errors, most specific first: (status, stable code). Store errors can name
    # server paths and hosts: the caller gets a fixed message, the log the details.
    project_errors = [(FilterError, 400, "bad_filter"), (CollectionMismatchError, 409, "model_mismatch"),
                      (EncodeError, 400, "cannot_embed"),
                      (InputError, 400, "bad_request"), (StoreError, 503, "store_unavailable"),
                      (MmindexError, 400, "bad_request")]

    async def project_error(request, exc: MmindexError):
        status, code = next((s, c) for kind, s, c in project_errors if isinstance(exc, kind))
        if isinstance(exc, StoreError):
            log.warning("store error on %s: %s", request.url.path, exc)
            return error(status, code, "the vector store could not answer; see the server log")
        return error(status, code, str(exc))

    for kind, _, _ in project_errors:
        app.add_exception_handler(kind, project_error)
