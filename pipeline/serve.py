"""``mmindex serve``: search and embedding over HTTP, for stacks that do not import Python.

Routes (JSON in and out; OpenAPI at /openapi.json, docs at /docs):
  POST /search            text or base64 image → hits (target image | text | both, filter, paging)
  POST /search/upload     the same with a multipart image upload
  POST /embed             texts and/or images → normalised vectors, with model name and dimension
  GET  /collections/{name} count, model, dims, payload schema, layout
  GET  /thumbnails/{id}   a result's thumbnail (from the payload, or the image source under --image-root)
  GET  /healthz  /readyz  liveness; readiness (model loaded, store reachable)
  GET  /metrics           Prometheus: requests, latency, encode vs search time, batch sizes
  GET  /                  a search page

Errors are JSON ``{"error": {"code", "message"}}`` with a 4xx status for anything the caller
can fix. Concurrent encode requests are batched on the model (a few milliseconds' window),
so load is not served one request at a time. No route reads a path or URL the caller names.
"""


import asyncio
import base64
import binascii
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mmindex.pipeline.config import StoreSettings
from mmindex.pipeline.errors import CollectionMismatchError, FilterError, InputError, MmindexError, StoreError
from mmindex.pipeline.images import THUMBNAIL_KEY, RejectedImage, decode_image, resolve_image_path, thumbnail

PUBLIC_PATHS = ("/healthz", "/readyz", "/", "/favicon.ico")


@dataclass
class ServeSettings:
    """What the service needs: where collections live, the model, limits and access."""

    store: StoreSettings = field(default_factory=StoreSettings)
    model: str | None = None  # default: the model of the default collection
    device: str = "auto"
    api_key: str | None = None  # required on every route but health when set
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 10 * 1024 * 1024
    batch_window_ms: float = 5.0
    max_batch: int = 64
    image_root: str | None = None  # thumbnails of path images are read from under this folder only
    max_limit: int = 1000


class ApiError(Exception):
    """An error the caller can fix: an HTTP status, a stable code and a message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


log = logging.getLogger("mmindex.serve")


class Batcher:
    """Collects encode requests from concurrent callers into one forward pass per window."""

    def __init__(self, encode, window_ms: float, max_batch: int, observe=None):
        self.encode, self.window, self.max_batch, self.observe = encode, window_ms / 1000.0, max_batch, observe
        self.pending: list[tuple[Any, Future]] = []
        self.lock = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._loop, daemon=True, name="mmindex-batcher")
        self.thread.start()

    def submit(self, items: list) -> list[Future]:
        futures = []
        with self.lock:
            for item in items:
                future: Future = Future()
                self.pending.append((item, future))
                futures.append(future)
            self.lock.notify()
        return futures

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.lock.notify()

    def _loop(self) -> None:
        while True:
            with self.lock:
                while not self.pending and not self.closed:
                    self.lock.wait()
                if self.closed and not self.pending:
                    return
            time.sleep(self.window)  # let concurrent requests join this batch
            with self.lock:
                batch, self.pending = self.pending[:self.max_batch], self.pending[self.max_batch:]
            try:
                vectors = self.encode([item for item, _ in batch])
                for (_, future), vector in zip(batch, vectors):
                    future.set_result(vector)
                if self.observe:
                    self.observe(len(batch))
            except BaseException as error:  # noqa: BLE001 - handed to each waiting caller
                for _, future in batch:
                    future.set_exception(error)


class Model:
    """A loaded model and the batchers that collect its encode requests."""

    def __init__(self, encoder, settings: ServeSettings, observe=None):
        self.encoder = encoder
        self.texts = Batcher(encoder.encode_texts, settings.batch_window_ms, settings.max_batch, observe)
        self.images = Batcher(encoder.encode_images, settings.batch_window_ms, settings.max_batch, observe)

    def close(self) -> None:
        self.texts.close()
        self.images.close()


class Service:
    """The model, the stores and the batchers behind the routes.

    When the service's collection is an alias that is switched to a collection of another
    model (a model upgrade), the first query after the switch loads that model (unless
    ``--model`` pinned one) and the service goes on with it; the old model stays loaded for
    queries still under way.
    """

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.stores: dict[str, Any] = {}
        self.store_lock = threading.Lock()
        self.model_lock = threading.Lock()
        self.models: list[Model] = []
        self.observe = None
        store, spec = self.lookup(settings.store.collection)
        self.current = self._load(store.metadata() if spec else None)

    @property
    def encoder(self):
        return self.current.encoder

    @property
    def texts(self) -> Batcher:
        return self.current.texts

    @property
    def images(self) -> Batcher:
        return self.current.images

    def set_observer(self, observe) -> None:
        """Report each forward pass's batch size (the /metrics histogram)."""
        self.observe = observe
        for model in self.models:
            model.texts.observe = model.images.observe = observe

    def _load(self, meta: dict[str, Any] | None) -> Model:
        from mmindex.pipeline.encoder import Encoder, encoder_for

        encoder = (Encoder(self.settings.model, device=self.settings.device) if self.settings.model else
                   encoder_for(meta, None, self.settings.store.collection, device=self.settings.device))
        model = Model(encoder, self.settings, self.observe)
        self.models.append(model)
        return model

    def model_for(self, name: str, store) -> Model:
        """The loaded model that fills collection ``name``; loads it when the service's alias moved to it.

        Raises ApiError 409 for a collection of another model that the service does not own.
        """
        spec = store.spec()
        for model in [self.current, *self.models]:
            if model.encoder.spec().same_model(spec):
                return model
        if name != self.settings.store.collection or self.settings.model:
            raise ApiError(409, "model_mismatch", f"collection {name!r} was built with model {spec.model!r}; this "
                                                  f"service encodes with {self.encoder.name!r}")
        with self.model_lock:
            if not self.current.encoder.spec().same_model(spec):
                log.info("collection %r now holds model %s; loading it", name, spec.model)
                self.current = self._load(store.metadata())
        return self.current

    def lookup(self, name: str):
        """The open store of collection ``name`` and its spec (None: no such collection).

        Only existing collections (and the service's own) are kept open, so request bodies
        naming arbitrary collections cannot grow the cache.
        """
        from dataclasses import replace

        with self.store_lock:
            store = self.stores.get(name)
            if store is None:
                try:
                    store = replace(self.settings.store, collection=name).open()
                except StoreError as error:  # e.g. a name no collection can have
                    raise ApiError(404, "unknown_collection", f"collection {name!r} does not exist ({error})") from None
                spec = store.spec()
                if spec is None and name != self.settings.store.collection:
                    store.close()
                    raise ApiError(404, "unknown_collection", f"collection {name!r} does not exist")
                self.stores[name] = store
                return store, spec
        return store, store.spec()

    def store(self, name: str, must_exist: bool = True):
        store, spec = self.lookup(name)
        if must_exist and spec is None:
            raise ApiError(404, "unknown_collection", f"collection {name!r} does not exist")
        return store

    def checked_store(self, name: str):
        """The store of an existing collection and the loaded model that fills it."""
        store, spec = self.lookup(name)
        if spec is None:
            raise ApiError(404, "unknown_collection", f"collection {name!r} does not exist")
        return store, self.model_for(name, store)

    def close(self) -> None:
        for model in self.models:
            model.close()
        for store in self.stores.values():
            store.close()


def decode_base64_image(data: str, field_name: str = "image"):
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_image", f"{field_name} is not valid base64") from None
    return decode_bytes(raw, field_name)


def decode_bytes(raw: bytes, field_name: str = "image"):
    try:
        return decode_image(raw, 224)
    except RejectedImage as error:
        raise ApiError(400, "bad_image", f"{field_name}: {error.message}") from None


def create_app(settings: ServeSettings, service: Service | None = None):
    """The FastAPI application (the model loads here, once)."""
    from fastapi import FastAPI, File, Form, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
    from pydantic import BaseModel, Field
    from starlette.exceptions import HTTPException as StarletteHTTPException

    service = service or Service(settings)
    registry = CollectorRegistry()
    requests_total = Counter("mmindex_requests_total", "HTTP requests", ["route", "status"], registry=registry)
    latency = Histogram("mmindex_request_seconds", "Request latency", ["route"], registry=registry)
    encode_seconds = Histogram("mmindex_encode_seconds", "Time spent encoding queries", ["kind"], registry=registry)
    search_seconds = Histogram("mmindex_search_seconds", "Time spent in the vector store", registry=registry)
    batch_sizes = Histogram("mmindex_encode_batch_size", "Items per model forward pass",
                            buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=registry)
    service.set_observer(batch_sizes.observe)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        yield
        service.close()  # stop the batchers, flush and close the stores

    app = FastAPI(title="mmindex", version=_version(), lifespan=lifespan,
                  description="Cross-modal search (text ↔ image) over Qdrant collections built by mmindex, and "
                              "an embedding endpoint for other stacks.")
    def error(status: int, code: str, message: str) -> JSONResponse:
        return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        started = time.perf_counter()
        route = request.url.path if request.url.path in _KNOWN_ROUTES else _route_of(request.url.path)
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.max_body_bytes):
            response = error(413, "body_too_large", f"request body over {settings.max_body_bytes:,} bytes "
                                                    "(--max-body-bytes)")
        elif settings.api_key and request.url.path not in PUBLIC_PATHS and not _authorised(request, settings.api_key):
            response = error(401, "unauthorized", "missing or wrong API key (Authorization: Bearer KEY or X-API-Key)")
        else:
            try:
                response = await call_next(request)
            except Exception as failure:  # noqa: BLE001 - never a bare 500 page
                response = error(500, "internal", f"{type(failure).__name__}: {failure}")
        requests_total.labels(route, str(response.status_code)).inc()
        latency.labels(route).observe(time.perf_counter() - started)
        return response

    if settings.cors_origins:
        # Added last, so it wraps the guard: preflights are answered, and errors carry CORS headers too.
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])

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

    # The project's errors, most specific first: (status, stable code).
    project_errors = [(FilterError, 400, "bad_filter"), (CollectionMismatchError, 409, "model_mismatch"),
                      (InputError, 400, "bad_request"), (StoreError, 503, "store_unavailable"),
                      (MmindexError, 400, "bad_request")]

    async def project_error(request, exc: MmindexError):
        status, code = next((s, c) for kind, s, c in project_errors if isinstance(exc, kind))
        return error(status, code, str(exc))

    for kind, _, _ in project_errors:
        app.add_exception_handler(kind, project_error)

    class SearchBody(BaseModel):
        text: str | None = Field(None, max_length=10_000, description="Query text (or give image).")
        image: str | None = Field(None, description="Query image, base64-encoded bytes (JPEG, PNG, WebP, …).")
        target: Literal["image", "text", "both"] = Field(
            "image", description="Vectors to search: images, captions, or both fused by reciprocal rank.")
        filter: str | dict[str, Any] | None = Field(
            None, description="A where expression (\"year >= 2020 and color in (red, blue)\") or a raw Qdrant filter.")
        limit: int = Field(10, ge=1, le=settings.max_limit)
        offset: int = Field(0, ge=0, le=100_000)
        score_threshold: float | None = Field(None, ge=-1.0, le=1.0)
        collection: str | None = Field(None, max_length=255, description="Default: the service's collection.")
        like: str | None = Field(None, max_length=64,
                                 description="A point id: search with that point's image vector (more like this).")

    class Hit(BaseModel):
        id: str
        score: float
        caption: str | None
        payload: dict[str, Any]
        source: dict[str, Any]
        thumbnail: str | None = Field(None, description="URL path of the result's thumbnail, if it has one.")

    class SearchAnswer(BaseModel):
        collection: str
        target: str
        hits: list[Hit]
        encode_ms: float
        search_ms: float

    class EmbedBody(BaseModel):
        texts: list[str] = Field(default_factory=list, max_length=256)
        images: list[str] = Field(default_factory=list, max_length=64, description="base64-encoded image bytes")

    class EmbedAnswer(BaseModel):
        model: str
        dim: int
        texts: list[list[float]]
        images: list[list[float]]

    class ErrorDetail(BaseModel):
        code: str
        message: str

    class ErrorAnswer(BaseModel):
        error: ErrorDetail

    errors = {status: {"model": ErrorAnswer} for status in (400, 401, 404, 409, 413, 422, 503)}

    async def encode_query(text: str | None, image, model: Model) -> np.ndarray:
        started = time.perf_counter()
        if image is not None:
            vector = await asyncio.wrap_future(model.images.submit([image])[0])
            encode_seconds.labels("image").observe(time.perf_counter() - started)
        else:
            vector = await asyncio.wrap_future(model.texts.submit([text])[0])
            encode_seconds.labels("text").observe(time.perf_counter() - started)
        return vector

    async def run_search(text, image, target, filter_value, limit, offset, score_threshold, collection,
                         like: str | None = None) -> dict:
        from mmindex.pipeline.query import search

        name = collection or settings.store.collection
        store, model = await asyncio.to_thread(service.checked_store, name)
        started = time.perf_counter()
        vector = await like_vector(store, like) if like is not None else await encode_query(text, image, model)
        encoded = time.perf_counter()
        where = filter_value if isinstance(filter_value, str) else None
        raw = filter_value if isinstance(filter_value, dict) else None
        hits = await asyncio.to_thread(search, store, vector, target, where, raw, limit, offset, score_threshold)
        done = time.perf_counter()
        search_seconds.observe(done - encoded)
        with_thumbnails = {h.id for h in hits if _has_thumbnail(h, settings.image_root)}
        return {
            "collection": name, "target": target,
            "hits": [{**h.to_dict(), "thumbnail": f"/thumbnails/{h.id}?collection={name}"
                      if h.id in with_thumbnails else None} for h in hits],
            "encode_ms": round((encoded - started) * 1000, 3), "search_ms": round((done - encoded) * 1000, 3),
        }

    async def like_vector(store, point_id: str):
        import uuid

        try:
            point_id = str(uuid.UUID(point_id))
        except ValueError:
            raise ApiError(404, "not_found", f"no point {point_id!r}") from None
        points = await asyncio.to_thread(store.retrieve, [point_id], True)
        if not points or not points[0].vectors or "image" not in points[0].vectors:
            raise ApiError(404, "not_found", f"no point {point_id!r} with an image vector")
        return np.asarray(points[0].vectors["image"], dtype=np.float32)

    @app.post("/search", response_model=SearchAnswer, responses=errors, summary="Search with text or an image")
    async def search_route(body: SearchBody):
        if sum([bool(body.text and body.text.strip()), body.image is not None, body.like is not None]) != 1:
            raise ApiError(400, "bad_request", "give exactly one of text, image or like")
        image = await asyncio.to_thread(decode_base64_image, body.image) if body.image is not None else None
        return await run_search(body.text, image, body.target, body.filter, body.limit, body.offset,
                                body.score_threshold, body.collection, body.like)

    @app.post("/search/upload", response_model=SearchAnswer, responses=errors,
              summary="Search with an uploaded image (multipart/form-data)")
    async def search_upload(image: UploadFile = File(...), target: Literal["image", "text", "both"] = Form("image"),
                            filter: str | None = Form(None), limit: int = Form(10, ge=1, le=settings.max_limit),
                            offset: int = Form(0, ge=0, le=100_000), collection: str | None = Form(None)):
        raw = await image.read(settings.max_body_bytes + 1)
        if len(raw) > settings.max_body_bytes:
            raise ApiError(413, "body_too_large", f"upload over {settings.max_body_bytes:,} bytes")
        decoded = await asyncio.to_thread(decode_bytes, raw, image.filename or "image")
        parsed_filter: str | dict | None = filter
        if filter and filter.strip().startswith("{"):
            import json

            try:
                parsed_filter = json.loads(filter)
            except ValueError as failure:
                raise ApiError(400, "bad_filter", f"filter is not valid JSON: {failure}") from None
        return await run_search(None, decoded, target, parsed_filter or None, limit, offset, None, collection)

    @app.post("/embed", response_model=EmbedAnswer, responses=errors, summary="Texts and images to vectors")
    async def embed_route(body: EmbedBody):
        if not body.texts and not body.images:
            raise ApiError(400, "bad_request", "give texts and/or images")
        images = [await asyncio.to_thread(decode_base64_image, data, f"images[{i}]") for i, data in
                  enumerate(body.images)]
        text_futures = service.texts.submit(body.texts) if body.texts else []
        image_futures = service.images.submit(images) if images else []
        texts = [np.asarray(await asyncio.wrap_future(f)).tolist() for f in text_futures]
        vectors = [np.asarray(await asyncio.wrap_future(f)).tolist() for f in image_futures]
        return {"model": service.encoder.name, "dim": service.encoder.dim, "texts": texts, "images": vectors}

    @app.get("/collections/{name}", responses=errors, summary="A collection: points, model, vectors, payload")
    async def collection_route(name: str):
        store = service.store(name)
        return await asyncio.to_thread(lambda: store.info().to_dict())

    @app.get("/thumbnails/{point_id}", responses={**errors, 200: {"content": {"image/jpeg": {}}}},
             response_class=Response, summary="A result's thumbnail (JPEG)")
    async def thumbnail_route(point_id: str, collection: str | None = None):
        import uuid

        try:
            point_id = str(uuid.UUID(point_id))
        except ValueError:
            raise ApiError(404, "not_found", "no such point") from None
        store = service.store(collection or settings.store.collection)
        points = await asyncio.to_thread(store.retrieve, [point_id])
        if not points:
            raise ApiError(404, "not_found", "no such point")
        data = await asyncio.to_thread(_thumbnail_bytes, points[0].payload, settings.image_root)
        if data is None:
            raise ApiError(404, "no_thumbnail", "this point has no thumbnail (ingest with --thumbnails, or serve "
                                                "with --image-root for path images)")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/healthz", summary="Liveness")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"model": ErrorAnswer}}, summary="Readiness: model loaded, store reachable")
    async def readyz():
        try:
            store = service.store(settings.store.collection, must_exist=False)
            await asyncio.to_thread(store.exists)
        except Exception as failure:  # noqa: BLE001
            return error(503, "not_ready", f"store unreachable: {failure}")
        return {"status": "ready", "model": service.encoder.name, "dim": service.encoder.dim,
                "collection": settings.store.collection, "store": settings.store.kind}

    @app.get("/metrics", response_class=Response, summary="Prometheus metrics")
    async def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse((Path(__file__).parent / "web" / "index.html").read_text())

    app.state.service = service
    return app


_KNOWN_ROUTES = ("/search", "/search/upload", "/embed", "/healthz", "/readyz", "/metrics", "/")


def _route_of(path: str) -> str:
    for prefix in ("/collections/", "/thumbnails/"):
        if path.startswith(prefix):
            return prefix + "{id}"
    return "other"


def _authorised(request, key: str) -> bool:
    import hmac

    given = request.headers.get("x-api-key") or ""
    auth = request.headers.get("authorization") or ""
    if auth.lower().startswith("bearer "):
        given = given or auth[7:].strip()
    return bool(given) and hmac.compare_digest(given.encode(), key.encode())


def _has_thumbnail(hit, image_root: str | None) -> bool:
    return hit.has_thumbnail or bool(image_root and (hit.source or {}).get("path"))


def _thumbnail_bytes(payload: dict[str, Any], image_root: str | None) -> bytes | None:
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


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("mmindex")
    except Exception:  # noqa: BLE001
        return "0"


def run(settings: ServeSettings, host: str, port: int, log_level: str = "info") -> None:
    import uvicorn

    app = create_app(settings)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)
