"""What the three HTTP services share: the error shape, key extraction and the environment cache.

Every error answer is ``{"error": "<message naming the field>", "field": "<field or null>"}``
with a 4xx status for the caller's mistakes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response
from litestar.config.cors import CORSConfig
from litestar.exceptions import HTTPException

from shared.environments import Environment, authenticate

log = logging.getLogger(__name__)

#: Seconds /health waits for PostgreSQL or Redis before calling it down.
HEALTH_TIMEOUT = 2.0


class ErrorBody(msgspec.Struct, omit_defaults=False):
    error: str
    field: str | None = None


class ApiError(Exception):
    """Raise from a handler to answer ``status`` with :class:`ErrorBody`."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


_encoder = msgspec.json.Encoder()


def error_response(status: int, message: str, field: str | None = None) -> Response[bytes]:
    return Response(
        content=_encoder.encode(ErrorBody(message, field)),
        status_code=status,
        media_type="application/json",
    )


def _api_error_handler(_: Request[Any, Any, Any], exc: ApiError) -> Response[bytes]:
    return error_response(exc.status, exc.message, exc.field)


def _http_exception_handler(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    message = exc.detail if isinstance(exc.detail, str) else str(exc)
    return error_response(exc.status_code, message)


#: Pass as ``Litestar(exception_handlers=EXCEPTION_HANDLERS)``.
EXCEPTION_HANDLERS: Mapping[Any, Any] = {
    ApiError: _api_error_handler,
    HTTPException: _http_exception_handler,
}


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The API key of ``Authorization: Bearer <key>`` or ``Basic base64(<key>:)``, else None."""
    value = headers.get("authorization")
    if not value:
        return None
    scheme, _, rest = value.partition(" ")
    scheme = scheme.lower()
    rest = rest.strip()
    if scheme == "bearer":
        return rest or None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(rest, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, _, _password = decoded.partition(":")
        return user or None
    return None


class EnvironmentCache:
    """key -> :class:`Environment`, read from PostgreSQL and kept for ``ttl`` seconds, so that
    authentication costs a dictionary look-up on the hot paths.

    One read per key at a time: requests arriving while a key is read wait for that read
    instead of each asking PostgreSQL (at thousands of requests a second, every expiry used to
    send a burst of identical queries). An entry expired less than ``ttl`` ago still answers
    while it is read again in the background, so a revoked key stops working within two
    ``ttl``."""

    def __init__(self, pool: asyncpg.Pool, ttl: float) -> None:
        self.pool = pool
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Environment | None]] = {}
        self._reads: dict[str, asyncio.Future[Environment | None]] = {}

    async def get(self, key: str) -> Environment | None:
        now = time.monotonic()
        hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        read = self._reads.get(key)
        if read is None:
            read = asyncio.ensure_future(self._read(key))
            read.add_done_callback(_retrieve)  # a background read's failure is only logged
            self._reads[key] = read
        if hit is not None and hit[0] + self.ttl > now:
            return hit[1]  # a little stale, refreshed meanwhile
        return await asyncio.shield(read)

    async def _read(self, key: str) -> Environment | None:
        try:
            env = await authenticate(self.pool, key)
            if len(self._entries) > 10_000:  # bounded: unknown keys must not grow it for ever
                self._entries.clear()
            self._entries[key] = (time.monotonic() + self.ttl, env)
            return env
        finally:
            self._reads.pop(key, None)

    async def require(self, key: str | None, *, secret: bool = False) -> Environment:
        """The environment of ``key`` or an :class:`ApiError` (401 unknown, 403 wrong kind)."""
        if not key:
            raise ApiError(
                401, "missing API key: send Authorization: Bearer <key>", "authorization"
            )
        env = await self.get(key)
        if env is None:
            raise ApiError(401, "unknown API key", "authorization")
        if secret and not env.secret:
            raise ApiError(403, "this endpoint needs the secret key", "authorization")
        return env


def _retrieve(read: asyncio.Future[Environment | None]) -> None:
    if not read.cancelled() and (exc := read.exception()) is not None:
        log.warning("reading an API key failed: %r", exc)


def browser_cors() -> CORSConfig:
    """CORS for the services web pages call directly (ingest, query): any origin, no
    credentials (keys travel in headers or bodies, never cookies)."""
    return CORSConfig(
        allow_origins=["*"],
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Content-Encoding", "X-Identity-Token"],
        expose_headers=["Retry-After"],
        allow_credentials=False,
        max_age=86400,
    )


class DegradedHealth(msgspec.Struct):
    status: str
    redis: str


async def health_response(
    pool: asyncpg.Pool,
    redis_ping: Callable[[], Awaitable[object]],
    *,
    redis_optional: bool = False,
) -> Response[bytes]:
    """/health: 200 ``{"status": "ok"}`` when PostgreSQL and Redis both answer, else 503
    naming the one that did not; with ``redis_optional`` (a service that answers without
    Redis), a silent Redis is 200 ``{"status": "degraded", "redis": "<error>"}``."""
    try:
        await asyncio.wait_for(pool.fetchval("SELECT 1"), HEALTH_TIMEOUT)
    except Exception as exc:
        return error_response(503, f"postgresql: {exc!r}", "postgresql")
    try:
        await asyncio.wait_for(redis_ping(), HEALTH_TIMEOUT)
    except Exception as exc:
        if redis_optional:
            body = _encoder.encode(DegradedHealth("degraded", repr(exc)))
            return Response(body, media_type="application/json")
        return error_response(503, f"redis: {exc!r}", "redis")
    return Response(b'{"status":"ok"}', media_type="application/json")
