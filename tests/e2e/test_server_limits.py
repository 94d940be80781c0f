"""The served processes bound what one client may hold: request head size and time, body
size on query and admin (issue 11, item 6)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from shared.environments import EnvironmentKeys
from shared.settings import Settings
from tests.conftest import ServiceStack


@pytest.fixture(scope="module")
def hurried_ingest(settings: Settings) -> Iterator[ServiceStack]:
    """An ingest process of its own whose request heads must arrive within a second."""
    stack = ServiceStack(settings)
    try:
        stack.start("ingest", http_header_timeout_seconds=1.0)
        yield stack
    finally:
        stack.stop_all()


def _exchange(port: int, pieces: list[bytes], pause: float = 0.0) -> tuple[bytes, float]:
    """Send ``pieces`` (``pause`` s apart) and read the answer: (status line, seconds)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        for piece in pieces:
            try:
                sock.sendall(piece)
            except OSError:
                break  # the server closed: its answer is already there
            time.sleep(pause)
        answer = sock.recv(4096)
    return answer.split(b"\r\n", 1)[0], time.monotonic() - started


def test_oversized_headers_are_a_431(stack: ServiceStack) -> None:
    port = stack.settings.ingest_port
    head = b"POST /v1/identify HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100_000 + b"\r\n\r\n"
    status, _ = _exchange(port, [head])
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
    ok = httpx.get(stack.url("ingest") + "/hello", headers={"X-Pad": "a" * 8000})
    assert ok.status_code == 200  # 8 KB of headers is fine


def test_a_head_trickled_or_never_sent_is_cut_off(hurried_ingest: ServiceStack) -> None:
    port = hurried_ingest.settings.ingest_port
    trickle = [b"GET /hello HTTP/1.1\r\n", *(b"X-%d: a\r\n" % i for i in range(20))]
    status, took = _exchange(port, trickle, pause=0.3)
    assert status == b"HTTP/1.1 408 Request Timeout"
    assert took < 5  # not held for the 6 s the trickle would take
    status, took = _exchange(port, [])  # connects and says nothing
    assert status == b"HTTP/1.1 408 Request Timeout"
    resp = httpx.get(hurried_ingest.url("ingest") + "/hello")
    assert resp.status_code == 200


def test_query_and_admin_refuse_large_bodies(stack: ServiceStack, env: EnvironmentKeys) -> None:
    resp = httpx.post(
        stack.url("query") + "/v1/check",
        content=b" " * (400 * 1024),
        headers={"Authorization": f"Bearer {env.writeKey}"},
    )
    assert (resp.status_code, resp.json()["field"]) == (413, "body")
    resp = httpx.post(
        stack.url("admin") + "/v1/segments",
        content=b" " * (4 * 1024 * 1024),
        headers={"Authorization": f"Bearer {env.secretKey}"},
    )
    assert (resp.status_code, resp.json()["field"]) == (413, "body")
