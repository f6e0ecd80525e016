"""The FastAPI application: the guard (with the route labels the router defines), CORS, the error handlers and the
routes, wired to one ``Service``; ``run`` serves it with uvicorn."""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from importlib.metadata import version

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mmindex.errors import CollectionMismatchError, EncodeError, FilterError, InputError, MmindexError, StoreError
from mmindex.pipeline.serve import routes
from mmindex.pipeline.serve.errors import ApiError, error_body
from mmindex.pipeline.serve.guard import Guard, RouteTable
from mmindex.pipeline.serve.metrics import Metrics
from mmindex.pipeline.serve.service import Service
from mmindex.pipeline.serve.settings import ServeSettings

log = logging.getLogger("mmindex.serve")


def create_app(settings: ServeSettings, service: Service | None = None):
    """The FastAPI application: the guard, the error handlers and the routes (``routes.py``).

    The model loads here, once (``Service``), unless a service is passed in.
    """
    service = service or Service(settings)
    metrics = Metrics()
    service.set_observer(metrics.batch_sizes.observe)

    @asynccontextmanager
    async def lifespan(app):
        yield
        service.close()  # stop the batchers, flush and close the stores

    app = FastAPI(title="mmindex", version=_version(), lifespan=lifespan,
                  description="Cross-modal search (text ↔ image) over Qdrant collections built by mmindex, and "
                              "an embedding endpoint for other stacks.")
    app.state.service, app.state.settings, app.state.metrics = service, settings, metrics
    add_error_handlers(app)
    app.include_router(routes.router)
    # Outermost first: CORS (so preflights and errors carry its headers), then the guard.
    app.add_middleware(Guard, max_body_bytes=settings.limits.max_body_bytes, api_key=settings.api_key,
                       observe=metrics.request, body_timeout=settings.limits.body_timeout,
                       routes=RouteTable.of(routes.router.routes))
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])
    return app


def run(settings: ServeSettings, host: str, port: int, log_level: str = "info", max_connections: int = 256) -> None:
    """Serve on ``host:port`` (``server_config``)."""
    import uvicorn  # the server itself: only `mmindex serve` needs it

    uvicorn.Server(server_config(create_app(settings), host, port, log_level, max_connections,
                                 settings.limits.header_timeout)).run()


def server_config(app, host: str, port: int, log_level: str = "info", max_connections: int = 256,
                  header_timeout: float = 10.0):
    """uvicorn's settings for ``app``: past ``max_connections`` open at once new requests get 503 (uvicorn's limit),
    and a connection must send each request's headers within ``header_timeout`` seconds (``connections.py``), so
    slow clients cannot hold those connections."""
    import uvicorn  # the server itself: only `mmindex serve` needs it

    # uvicorn's protocol, with the header deadline: loaded with the server, never with the app
    from mmindex.pipeline.serve.connections import with_header_deadline

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10,
                          limit_concurrency=max_connections, timeout_keep_alive=5,
                          http=with_header_deadline(header_timeout))


def _version() -> str:
    try:
        return version("mmindex")
    except Exception:  # noqa: BLE001
        return "0"


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
