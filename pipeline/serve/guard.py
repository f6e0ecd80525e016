"""What every request passes before a route sees it: the body limit, the API key, metrics.

A plain ASGI middleware (not Starlette's ``BaseHTTPMiddleware``), so it can count a body as it
arrives: ``Content-Length`` can be absent (``Transfer-Encoding: chunked``) or wrong, and the
limit holds either way. The body is read up to the limit, then handed to the app in one piece;
one byte over, and the caller gets 413 without the app ever seeing the request.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import Callable

from mmindex.pipeline.serve.errors import error_body

log = logging.getLogger("mmindex.serve")

PUBLIC_PATHS = ("/healthz", "/readyz", "/", "/favicon.ico")


@dataclass(frozen=True)
class RouteTable:
    """The routes as the guard sees them, taken from the router (``RouteTable.of(router.routes)``), so that a new
    route needs no list here: ``fixed`` paths, ``prefixes`` of paths with a parameter (``/thumbnails/``), and the
    ``body`` paths, the POST routes, the only ones whose body is read."""

    fixed: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    body: frozenset[str] = frozenset()

    @classmethod
    def of(cls, routes) -> "RouteTable":
        """From Starlette routes (anything with ``path`` and ``methods``)."""
        fixed, prefixes, body = set(), [], set()
        for route in routes:
            path, methods = route.path, getattr(route, "methods", None) or set()
            if "{" in path:
                prefixes.append(path[:path.index("{")])
            else:
                fixed.add(path)
                if "POST" in methods:
                    body.add(path)
        return cls(frozenset(fixed), tuple(sorted(set(prefixes))), frozenset(body))

    def label(self, path: str) -> str:
        """A path as a metrics label: the route, never the caller's own text."""
        if path in self.fixed:
            return path
        for prefix in self.prefixes:
            if path.startswith(prefix):
                return prefix + "{id}"
        return "other"


def authorised(headers: dict[str, str], key: str) -> bool:
    """``Authorization: Bearer KEY`` or ``X-API-Key: KEY``, compared in constant time."""
    given = headers.get("x-api-key") or ""
    auth = headers.get("authorization") or ""
    if auth.lower().startswith("bearer "):
        given = given or auth[7:].strip()
    return bool(given) and hmac.compare_digest(given.encode(), key.encode())


class Guard:
    """ASGI middleware: body size (streamed count → 413), API key (401), 500s as JSON, metrics.

    ``observe(route, status, seconds)`` records each request.
    """

    def __init__(self, app, max_body_bytes: int, api_key: str | None, observe: Callable[[str, int, float], None],
                 body_timeout: float = 30.0, routes: RouteTable = RouteTable()):
        self.app, self.max_body_bytes, self.api_key, self.observe = app, max_body_bytes, api_key, observe
        self.body_timeout, self.routes = body_timeout, routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        route = self.routes.label(scope["path"])
        status = {"code": 500}

        async def send_counted(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, send_counted)
        finally:
            self.observe(route, status["code"], time.perf_counter() - started)

    async def _handle(self, scope, receive, send):
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            return await reply(send, 413, "body_too_large", self._too_large())
        if self.api_key and scope["path"] not in PUBLIC_PATHS and scope.get("method") != "OPTIONS" \
                and not authorised(headers, self.api_key):
            return await reply(send, 401, "unauthorized",
                               "missing or wrong API key (Authorization: Bearer KEY or X-API-Key)")
        if scope.get("method") != "POST" or scope["path"] not in self.routes.body:
            return await self._call(scope, receive, send)  # no route here reads a body: none is buffered
        body = bytearray()
        try:
            async with asyncio.timeout(self.body_timeout):
                more = True
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    body += message.get("body", b"")
                    more = message.get("more_body", False)
                    if len(body) > self.max_body_bytes:
                        return await reply(send, 413, "body_too_large", self._too_large())
        except TimeoutError:
            return await reply(send, 408, "body_timeout", f"the request body did not arrive within "
                                                          f"{self.body_timeout:g} s")
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()  # the app waits for a disconnect after the body
            sent = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self._call(scope, replay, send)

    async def _call(self, scope, receive, send):
        started = {"done": False}

        async def tracked(message):
            if message["type"] == "http.response.start":
                started["done"] = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as failure:  # noqa: BLE001 - never a bare 500 page, never a traceback to the caller
            log.exception("request %s %s failed", scope.get("method"), self.routes.label(scope["path"]))
            if not started["done"]:
                await reply(send, 500, "internal", f"internal error ({type(failure).__name__}); see the server log")

    def _too_large(self) -> str:
        return f"request body over {self.max_body_bytes:,} bytes (--max-body-bytes)"


async def reply(send, status: int, code: str, message: str, extra_headers: list[tuple[bytes, bytes]] = ()) -> None:
    """Send a JSON error ``{"error": {"code", "message"}}`` straight from ASGI."""
    body = json.dumps(error_body(code, message)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *extra_headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


