"""The server's connections: uvicorn's h11 protocol with a deadline for each request's head (request line and
headers), which neither h11 nor uvicorn has. A connection that has not sent a whole head within the deadline of
opening (or of its last answer) gets 408 and is closed, so clients that trickle their headers one byte at a time
cannot keep the connections ``--max-connections`` allows, and every other caller's 503s, for longer than that.

Imported by ``app.server_config`` only: it loads uvicorn.
"""
from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from mmindex.pipeline.serve.errors import error_body


class HeaderDeadlineProtocol(H11Protocol):
    """``H11Protocol`` whose connections must send each request's head within ``header_timeout`` seconds."""

    header_timeout: float = 10.0

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.header_deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self.watch_head()

    def handle_events(self) -> None:
        super().handle_events()
        self.watch_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.watch_head()

    def connection_lost(self, exc) -> None:
        self.stop_watch()
        super().connection_lost(exc)

    def watch_head(self) -> None:
        """Start the clock when the connection waits for a request's head; stop it once the head has arrived. Data
        arriving meanwhile does not restart it (a trickle must not keep a connection forever)."""
        waiting = self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE
        if not waiting or self.transport.is_closing():
            self.stop_watch()
        elif self.header_deadline is None:
            self.header_deadline = self.loop.call_later(self.header_timeout, self.head_too_late)

    def stop_watch(self) -> None:
        deadline, self.header_deadline = getattr(self, "header_deadline", None), None
        if deadline is not None:
            deadline.cancel()

    def head_too_late(self) -> None:
        """408 to a connection that began a request and did not finish its head in time; an idle one just closes."""
        self.header_deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:  # bytes of a head that never completed
            body = json.dumps(error_body("header_timeout", f"the request's headers did not arrive within "
                                                           f"{self.header_timeout:g} s")).encode()
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                 b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n"
                                 + body)
        self.transport.close()


def with_header_deadline(seconds: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class for uvicorn's ``http`` setting, with a deadline of ``seconds`` for each request's head."""
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout": seconds})
