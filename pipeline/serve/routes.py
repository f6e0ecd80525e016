"""The HTTP routes of ``mmindex serve``: request and answer models, the routes, the error mapping.

Routes reach the ``Service`` (model, stores, pools) and ``ServeSettings`` through
``request.app.state``. Anything the caller can fix is a 4xx with a stable code; a store that
fails or times out is 503. Answers never carry server paths: no data directory, model folder,
Parquet path or absolute image path.
"""
from __future__ import annotations

import asyncio
import base64
import functools
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import numpy as np
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response

from mmindex.connectors.base import CollectionSpec
from mmindex.errors import MmindexError
from mmindex.pipeline.ingest.images import THUMBNAIL_KEY, RejectedImage, decode_image, resolve_image_path, thumbnail
from mmindex.pipeline.query.filters import check_json_depth, compile_filter
from mmindex.pipeline.query.search import check_target, search
from mmindex.pipeline.query.where import check_filter_shape
from mmindex.pipeline.serve.errors import ApiError, error_body
from mmindex.pipeline.serve.images import base64_bytes, decode_query_image
from mmindex.pipeline.serve.metrics import Metrics
from mmindex.pipeline.serve.schemas import (
    ERRORS,
    LIMITS,
    WINDOW_CEILING,
    EmbedAnswer,
    EmbedBody,
    ErrorAnswer,
    SearchAnswer,
    SearchBody,
)
from mmindex.pipeline.serve.service import Model, Service, log
from mmindex.pipeline.serve.settings import Limits, ServeSettings

router = APIRouter()


# -- request and answer models ----------------------------------------------------------------


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
    check_target(body.target, body.score_threshold)  # the library's rule and message (UsageError: 400)
    image = None
    if body.image is not None:
        image = await service.decode(decode_base64_image, body.image, "image", settings.limits)
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
    decoded = await service.decode(decode_bytes, raw, "image", settings.limits)
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
    # One image at a time, in /embed's own pool: a request holds one image's decode at most (--max-decode-mib).
    images = [await service.decode(decode_base64_image, data, f"images[{i}]", limits, bulk=True)
              for i, data in enumerate(body.images)]
    model = await service.call(service.embedding_model)
    text_futures = model.bulk_texts.submit(body.texts) if body.texts else []
    image_futures = model.bulk_images.submit(images) if images else []
    texts = [np.asarray(await asyncio.wrap_future(f)).tolist() for f in text_futures]
    vectors = [np.asarray(await asyncio.wrap_future(f)).tolist() for f in image_futures]
    return {"model": model.encoder.name, "text_model": model.encoder.text_name, "dim": model.encoder.dim,
            "texts": texts, "images": vectors}


@router.get("/collections/{name}", responses=ERRORS, summary="A collection: points, model, vectors, payload")
async def collection_route(name: str, request: Request):
    service, _, _ = _context(request)
    collection, store, _ = await service.call(service.locate, name)
    info = await service.call(lambda: store.info().to_dict())
    return public_info({**info, "name": name, "alias_of": collection if collection != name else None})


@router.get("/thumbnails/{point_id}", responses={**ERRORS, 200: {"content": {"image/jpeg": {}}}},
            response_class=Response, summary="A result's thumbnail (JPEG)")
async def thumbnail_route(point_id: str, request: Request, collection: str | None = None):
    service, settings, _ = _context(request)
    try:
        point_id = str(uuid.UUID(point_id))
    except ValueError:
        raise ApiError(404, "not_found", "no such point") from None
    _, store, _ = await service.call(service.locate, collection or settings.store.collection)
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
        target = await service.call(service.resolve, name)
        await service.call(target.store.count)
    except (ApiError, MmindexError) as failure:
        message = failure.message if isinstance(failure, ApiError) else "the vector store is not answering"
        if not isinstance(failure, ApiError):
            log.warning("readiness: %s", failure)
        return JSONResponse(error_body("not_ready", message), status_code=503)
    encoder = target.model.encoder
    return {"status": "ready", "model": encoder.name, "text_model": encoder.text_name, "dim": encoder.dim,
            "collection": name, "alias_of": target.collection if target.collection != name else None,
            "store": settings.store.kind}


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics_route(request: Request):
    # the serve extra: only `mmindex serve` loads it
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page():
    return HTMLResponse((Path(__file__).parent / "web" / "index.html").read_text())


# -- the search itself --------------------------------------------------------------------------

async def run_search(request: Request, text, image, target, filter_value, limit, offset, score_threshold,
                     collection, like: str | None = None) -> dict:
    """One search. The collection (an alias: the collection it points to now) and its model are resolved once,
    together, and every step below uses that one answer, which the answer names (``alias_of``, ``model``)."""
    service, settings, metrics = _context(request)
    name = collection or settings.store.collection
    resolved = await service.call(service.resolve, name)
    store, model = resolved.store, resolved.model
    started = time.perf_counter()
    if like is not None:
        vector = await like_vector(service, store, like)
    else:
        vector = await encode_query(text, image, model, metrics)
    encoded = time.perf_counter()
    compiled = await service.call(filter_of, resolved.spec, filter_value, settings.limits)
    hits = await service.call(functools.partial(search, store, vector, target, None, compiled, limit, offset,
                                                score_threshold, fusion_depth=settings.limits.max_window))
    done = time.perf_counter()
    metrics.search.observe(done - encoded)
    return {
        "collection": name, "alias_of": resolved.collection if resolved.collection != name else None,
        "model": model.encoder.name, "target": target,
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


# -- images and thumbnails ----------------------------------------------------------------------

def decode_base64_image(data: str, field_name: str = "image", limits: Limits = LIMITS):
    """A query image sent as base64 text (any spelling ``base64_bytes`` reads) → an RGB image, bounded by ``limits``."""
    return decode_bytes(base64_bytes(data, field_name), field_name, limits)


def decode_bytes(raw: bytes, field_name: str = "image", limits: Limits = LIMITS):
    """Decode a query image; its pixels and the memory decoding them takes are read from the header and refused
    before any pixel is decoded (``decode_query_image``); a large decode's memory goes back to the system after."""
    return decode_query_image(raw, field_name, limits.max_query_pixels, limits.max_decode_bytes)


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


# What /collections/{name} shows of ``mmindex info``: named fields only, so a field added later (a path, a host) is
# hidden until it is listed here. Left out: location, model_path, text_model_path, sources (their inputs).
PUBLIC_INFO = ("name", "alias_of", "store", "points", "model", "dim", "distance", "vectors", "payload_types",
               "indexed_fields", "options", "model_fingerprint", "text_model", "text_model_fingerprint",
               "model_precision", "id_rule")


def public_info(info: dict[str, Any]) -> dict[str, Any]:
    """``mmindex info`` of a collection without where it lives, where its models were loaded from or what its sources
    read: the ``PUBLIC_INFO`` fields, and in them no value that is a server path (a model recorded by its path shows
    its folder's name)."""
    return {key: without_paths(info[key]) for key in PUBLIC_INFO if key in info}


def without_paths(value: Any) -> Any:
    """``value`` with every string that is an absolute path or a URL replaced by its last part."""
    if isinstance(value, dict):
        return {key: without_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_paths(item) for item in value]
    if isinstance(value, str) and (os.path.isabs(value) or "://" in value or value.startswith("~")
                                   or (len(value) > 2 and value[1] == ":" and value[2] in "\\/")):
        return value.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return value


# -- errors ------------------------------------------------------------------------------------
