"""The worker's ``/metrics``: a small HTTP/1.1 server in the worker's event loop, on
``SEGMENTS_HOST:SEGMENTS_WORKER_METRICS_PORT`` (0: none).

It answers ``GET /metrics`` only, protected as the HTTP services' ``/metrics`` are (a secret
key or ``SEGMENTS_METRICS_TOKEN``), one request per connection; a request head larger than
16 KB or slower than 10 s is dropped. A port already taken is logged, not fatal: the worker's
job is the inbox, and the scrape's failure (``up == 0``) tells the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
import msgspec

from shared.http import EnvironmentCache, ErrorBody, key_from_headers
from shared.http_metrics import REFUSALS, check_scrape_access
from shared.metrics import CONTENT_TYPE, exposition
from shared.settings import Settings

log = logging.getLogger("segments.worker")

MAX_HEAD_BYTES = 16 * 1024
HEAD_TIMEOUT = 10.0
_REASONS = {
    200: "OK",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
}


class MetricsServer:
    """Serves this process's metrics until :meth:`close`."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.envs = EnvironmentCache(pool, settings.cache_seconds)
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        port = self.settings.worker_metrics_port
        if not port:
            return
        try:
            self.server = await asyncio.start_server(
                self._serve, self.settings.host, port, limit=MAX_HEAD_BYTES
            )
        except OSError as exc:
            log.error("worker metrics: cannot listen on %s:%d: %s", self.settings.host, port, exc)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            status, body, media = await self._answer(head)
            writer.write(
                f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
                f"content-type: {media}\r\ncontent-length: {len(body)}\r\n"
                "connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a slow, oversized or vanished client: nothing to answer
        except Exception:
            log.exception("worker metrics: a request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, head: bytes) -> tuple[int, bytes, str]:
        lines = head.decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        target = rest.partition(" ")[0].partition("?")[0]
        if target != "/metrics":
            return _error(404, "path: only /metrics is served here", "path")
        if method != "GET":
            return _error(405, "method: only GET", "method")
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        status = await check_scrape_access(
            key_from_headers(headers), self.settings.metrics_token, self.envs
        )
        if status != 200:
            return _error(status, REFUSALS[status], "authorization")
        return 200, exposition(), CONTENT_TYPE


def _error(status: int, message: str, field: str) -> tuple[int, bytes, str]:
    return status, msgspec.json.encode(ErrorBody(message, field)), "application/json"
