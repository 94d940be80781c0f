"""How the HTTP services are served: uvicorn (uvloop + httptools) with limits on what a client
may hold.

uvicorn's httptools protocol bounds neither the size of the request head nor the time taken
to send it: a client trickling header bytes kept a connection for as long as it liked (each
byte re-armed nothing, and a fresh connection arms no timer at all), and 100 KB headers were
read whole. :class:`GuardedHttpToolsProtocol` adds both:

- the request line and headers beyond ``http_max_header_bytes`` are a 431, connection closed;
- a request head not complete ``http_header_timeout_seconds`` after the connection opened or
  after the request's first byte is a 408, connection closed.

Concurrency is uvicorn's own ``limit_concurrency`` (a 503 beyond it).

Once the app has started (its lifespan has opened pools and loaded modules), every object then
alive is moved out of the garbage collector's reach (:func:`freeze_heap`): a full collection
otherwise walks all of them (some 60,000 in the query service) while every request in flight
waits.
"""

from __future__ import annotations

import asyncio
import gc

import httptools
from litestar import Litestar
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared.settings import Settings


def _close_with(transport: asyncio.Transport, status: bytes, message: str) -> None:
    body = message.encode()
    transport.write(
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    transport.close()


def guarded_protocol(max_header_bytes: int, header_timeout: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a request-head size and time limit."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _head_bytes = 0
        _head_timer: asyncio.TimerHandle | None = None
        _in_head = True
        _refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._in_head = True
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(header_timeout, self._head_timed_out)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self._in_head and not self.transport.is_closing():
                _close_with(
                    self.transport,
                    b"408 Request Timeout",
                    '{"error":"headers: not complete within '
                    f'{header_timeout:g} s","field":"headers"}}',
                )

        def data_received(self, data: bytes) -> None:
            if not self._refused:
                super().data_received(data)

        def send_400_response(self, msg: str) -> None:
            if not self._refused:  # our 431 is already sent
                super().send_400_response(msg)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = 0
            self._in_head = True
            self._arm()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)
            super().on_header(name, value)

        def _count(self, n: int) -> None:
            self._head_bytes += n
            if self._head_bytes > max_header_bytes:
                # raising from a parser callback ends feed_data, where uvicorn would answer
                # 400: answer 431 and close first (send_400_response then stays silent)
                self._refused = True
                self._disarm()
                _close_with(
                    self.transport,
                    b"431 Request Header Fields Too Large",
                    '{"error":"headers: the request line and headers are larger than '
                    f'{max_header_bytes} bytes","field":"headers"}}',
                )
                raise httptools.HttpParserError("request head too large")

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._in_head = True  # the next request's head: timed from its first byte

    return GuardedHttpToolsProtocol


def freeze_heap() -> None:
    """Collect once, then exempt every surviving object from later collections (they live as
    long as the process: modules, the app, its pools and caches)."""
    gc.collect()
    gc.freeze()


def freeze_after_startup(app: Litestar) -> None:
    """Make ``app``'s start-up (after its lifespan managers) end with :func:`freeze_heap`."""
    app.on_startup.append(freeze_heap)


def serve(app: Litestar, settings: Settings, port: int) -> None:
    """Run ``app`` on ``settings.host:port`` until stopped, with the limits above, its heap
    frozen once it has started."""
    import uvicorn

    freeze_after_startup(app)

    uvicorn.run(
        app,
        host=settings.host,
        port=port,
        loop="uvloop",
        http=guarded_protocol(settings.http_max_header_bytes, settings.http_header_timeout_seconds),
        limit_concurrency=settings.http_max_concurrency,
        proxy_headers=True,
        forwarded_allow_ips=settings.trusted_proxies,
        log_level="warning",
        log_config=None,  # our handler (shared.logs: text or JSON) takes uvicorn's lines too
        access_log=False,  # ours is SEGMENTS_ACCESS_LOG (route template, request id)
        timeout_graceful_shutdown=5,
    )
