"""Slow clients cannot hold the service's connections: a connection that trickles its request's headers is answered
408 and closed once the header deadline passes, so more of them than --max-connections only keep others out (503)
for that long."""
from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from mmindex.pipeline.config import StoreSettings
from mmindex.pipeline.serve.settings import ServeSettings

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'mmindex[serve]')")


@pytest.fixture(scope="module")
def guarded(two_collections, serve_in_process):
    """A service allowing 8 connections, with a header deadline of 0.6 s."""
    store, _ = two_collections
    settings = ServeSettings(store=StoreSettings(collection="v1", data_dir=str(store)), device="cpu")
    return serve_in_process(settings, max_connections=8, header_timeout=0.6)


def trickle(port: int, stop: threading.Event, replies: list) -> None:
    """Open a connection and send a request's head one byte every 50 ms, never finishing it."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 4000
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        try:
            for byte in head:
                if stop.is_set():
                    return
                connection.sendall(bytes([byte]))
                time.sleep(0.05)
        except OSError:  # closed by the server: what is expected
            pass
        try:
            replies.append(connection.recv(4096))
        except OSError:
            replies.append(b"")


def test_clients_that_trickle_headers_are_cut_off_and_the_service_answers_again(guarded):
    port = guarded.port
    with httpx.Client(timeout=10) as client:  # at ease: answered
        assert client.get(f"{guarded.url}/healthz").status_code == 200
    stop, replies = threading.Event(), []
    slow = [threading.Thread(target=trickle, args=(port, stop, replies)) for _ in range(20)]  # over the 8 allowed
    for thread in slow:
        thread.start()
    time.sleep(0.3)
    crowded = httpx.get(f"{guarded.url}/healthz", timeout=10).status_code  # 20 slow connections hold the 8
    time.sleep(0.6)  # past the deadline: every slow connection got 408 and was closed
    after = [httpx.get(f"{guarded.url}/healthz", timeout=10).status_code for _ in range(3)]
    search = httpx.post(f"{guarded.url}/search", json={"text": "a red circle", "limit": 3}, timeout=30)
    stop.set()
    for thread in slow:
        thread.join(timeout=10)
    assert crowded == 503  # what --max-connections does while they are open
    assert after == [200, 200, 200] and search.status_code == 200, (after, search.text)
    assert len(replies) == 20 and all(reply.startswith(b"HTTP/1.1 408 ") for reply in replies), replies[:3]
    assert b"header_timeout" in replies[0]


def test_an_idle_connection_is_closed_without_an_answer_and_a_prompt_one_is_untouched(guarded):
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=5) as idle:
        time.sleep(0.8)
        assert idle.recv(100) == b""  # closed: nothing was asked, nothing is answered
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=5) as prompt:
        for _ in range(3):  # keep-alive: each request's head counts from the last answer
            time.sleep(0.3)
            prompt.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b'{"status":"ok"}'):
                answer += prompt.recv(4096)
            assert answer.startswith(b"HTTP/1.1 200 ")
