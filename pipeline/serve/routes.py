"""The HTTP routes of ``mmindex serve``: request and answer models, the routes, the error mapping.

Routes reach the ``Service`` (model, stores, pools) and ``ServeSettings`` through
``request.app.state``. Anything the caller can fix is a 4xx with a stable code; a store that
fails or times out is 503. Answers never carry server paths: no data directory, model folder,
Parquet path or absolute image path.
"""
from __future__ import annotations

import asyncio
import base64
import os
import uuid
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response

from mmindex.errors import MmindexError
from mmindex.pipeline.ingest.images import THUMBNAIL_KEY, RejectedImage, decode_image, resolve_image_path, thumbnail
from mmindex.pipeline.models.backend import blank_text
from mmindex.pipeline.serve.checks import decode_base64_image, decode_bytes
from mmindex.pipeline.serve.duplicates import run_duplicates
from mmindex.pipeline.serve.errors import ApiError, error_body
from mmindex.pipeline.serve.facets import run_facets
from mmindex.pipeline.serve.metrics import Metrics
from mmindex.pipeline.serve.schemas import (
    ERRORS,
    LIMITS,
    MAX_BOOST_CHARS,
    MAX_EXAMPLES,
    MAX_FACET_LIMIT,
    WINDOW_CEILING,
    EmbedAnswer,
    EmbedBody,
    DuplicatesAnswer,
    ErrorAnswer,
    FacetsAnswer,
    FacetsBody,
    SearchAnswer,
    SearchBody,
)
from mmindex.pipeline.serve.searching import SearchInputs, form_examples, inputs_of, run_search
from mmindex.pipeline.serve.service import Service, log
from mmindex.pipeline.serve.settings import ServeSettings

router = APIRouter()


# -- request and answer models ----------------------------------------------------------------


def _context(request: Request) -> tuple[Service, ServeSettings, Metrics]:
    state = request.app.state
    return state.service, state.settings, state.metrics


# -- routes ------------------------------------------------------------------------------------

@router.post("/search", response_model=SearchAnswer, responses=ERRORS,
             summary="Search with text, an image and/or examples, ranked as the options say")
async def search_route(body: SearchBody, request: Request):
    service, settings, _ = _context(request)
    return await run_search(request, await inputs_of(body, service, settings.limits))


@router.post("/search/upload", response_model=SearchAnswer, responses=ERRORS,
             summary="Search with an uploaded image (multipart/form-data), with /search's options")
async def search_upload(request: Request, image: UploadFile = File(...),
                        target: Literal["image", "text", "both"] = Form("image"),
                        filter: str | None = Form(None, max_length=LIMITS.max_filter_chars),
                        limit: int = Form(10, ge=1, le=WINDOW_CEILING),
                        offset: int = Form(0, ge=0, le=WINDOW_CEILING),
                        score_threshold: float | None = Form(None, ge=-1.0, le=1.0),
                        collection: str | None = Form(None, max_length=255),
                        mode: Literal["dense", "keyword", "hybrid"] = Form("dense"),
                        fusion: Literal["rrf", "dbsf"] | None = Form(None),
                        like: list[str] = Form([], max_length=MAX_EXAMPLES,
                                               description="Repeatable: a point id or a text."),
                        unlike: list[str] = Form([], max_length=MAX_EXAMPLES),
                        not_texts: list[str] = Form([], alias="not", max_length=MAX_EXAMPLES),
                        strategy: Literal["average_vector", "best_score", "sum_scores"] = Form("average_vector"),
                        diversity: float | None = Form(None), pool: int | None = Form(None),
                        boost: str | None = Form(None, max_length=MAX_BOOST_CHARS),
                        group_by: str | None = Form(None, max_length=255), group_size: int = Form(1),
                        cutoff: Literal["auto"] | None = Form(None), fusion_depth: int = Form(100),
                        collapse_duplicates: bool = Form(False)):
    service, settings, _ = _context(request)
    for field_name, values in (("like", like), ("unlike", unlike), ("not", not_texts)):
        if any(len(value) > settings.limits.max_text_chars for value in values):
            raise ApiError(400, "text_too_long", f"a {field_name} text has at most "
                                                 f"{settings.limits.max_text_chars:,} characters")
    raw = await image.read(settings.limits.max_body_bytes + 1)  # the guard bounded the whole body already
    decoded = await service.decode(decode_bytes, raw, "image", settings.limits)
    inputs = SearchInputs(image=decoded, target=target, filter=filter or None, limit=limit, offset=offset,
                          score_threshold=score_threshold, collection=collection, like=form_examples(like),
                          unlike=form_examples(unlike), not_texts=not_texts, mode=mode, fusion=fusion,
                          strategy=strategy, diversity=diversity, pool=pool, boost=boost or None,
                          group_by=group_by or None, group_size=group_size, cutoff=cutoff,
                          fusion_depth=fusion_depth, collapse_duplicates=collapse_duplicates)
    return await run_search(request, inputs)


@router.post("/embed", response_model=EmbedAnswer, responses=ERRORS, summary="Texts and images to vectors")
async def embed_route(body: EmbedBody, request: Request):
    service, settings, _ = _context(request)
    limits = settings.limits
    if not body.texts and not body.images:
        raise ApiError(400, "bad_request", "give texts and/or images")
    for index, text in enumerate(body.texts):
        if blank_text(text):  # as /search, `mmindex query` and ingest (no caption) treat it
            raise ApiError(400, "bad_request", f"texts[{index}] is empty once cleaned (only spaces or control "
                                               "characters): there is nothing to embed")
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


@router.get("/facets", response_model=FacetsAnswer, responses=ERRORS,
            summary="Points per value of payload fields, under a filter")
async def facets_get(request: Request, field: list[str] = Query(..., description="A field to count (repeatable)."),
                     filter: str | None = Query(None, max_length=LIMITS.max_filter_chars),
                     where: str | None = Query(None, max_length=LIMITS.max_filter_chars),
                     limit: int = Query(20, ge=1, le=MAX_FACET_LIMIT),
                     collection: str | None = Query(None, max_length=255)):
    service, settings, _ = _context(request)
    return await run_facets(service, settings, field, [filter, where], limit, collection)


@router.post("/facets", response_model=FacetsAnswer, responses=ERRORS,
             summary="Points per value of payload fields, under a filter given as /search takes it")
async def facets_post(body: FacetsBody, request: Request):
    service, settings, _ = _context(request)
    return await run_facets(service, settings, body.fields, [body.filter, body.where], body.limit, body.collection)


@router.get("/duplicates", response_model=DuplicatesAnswer, responses=ERRORS,
            summary="Groups of duplicate images in a whole collection, with their tier and evidence")
async def duplicates_route(request: Request, collection: str | None = Query(None, max_length=255),
                           tier: Literal["exact", "near", "similar"] = Query("near"),
                           limit: int = Query(20, ge=1, le=1_000), offset: int = Query(0, ge=0, le=WINDOW_CEILING)):
    service, settings, _ = _context(request)
    state = request.app.state
    if getattr(state, "duplicates_cache", None) is None:  # the last runs, kept for paging through their groups
        state.duplicates_cache = {}
    return await run_duplicates(service, settings, state.duplicates_cache, collection, tier, limit, offset)


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


# -- images and thumbnails ----------------------------------------------------------------------

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
