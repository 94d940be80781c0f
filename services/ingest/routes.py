"""The ingest HTTP handlers: Segment's Tracking API, plus /health and /hello.

Handlers take the raw request and answer bytes: bodies are decoded once with msgspec in
:mod:`services.ingest.intake`, never through litestar's DTOs, and headers are read straight
from the ASGI scope, to keep the hot path short.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
from litestar import Request, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.response.base import ASGIResponse

from services.ingest.inbox import InboxUnavailable, InboxWriter, Row
from services.ingest.intake import (
    BatchResult,
    accept_batch,
    accept_single,
    batch_failure,
    check_request_size,
    decode_envelope,
    decode_message,
    gunzip,
)
from shared.environments import Environment
from shared.http import ApiError, EnvironmentCache, key_from_headers
from shared.rate_limit import RequestLimits

log = logging.getLogger(__name__)

JSON = "application/json"
_OK = b'{"success":true}'
_encoder = msgspec.json.Encoder()


class Ingest:
    """The running service's resources, handed to the handlers when the routes are built and
    filled in by the app's lifespan before the first request."""

    pool: asyncpg.Pool
    cache: EnvironmentCache
    writer: InboxWriter
    limits: RequestLimits
    #: SEGMENTS_IDENTITY_TOKEN_MAX_AGE_SECONDS
    token_max_age: float


def _json(body: bytes, status: int = 200) -> ASGIResponse:
    return ASGIResponse(body=body, status_code=status, media_type=JSON)


async def _read_body(request: Request[Any, Any, Any], headers: dict[bytes, bytes]) -> bytes:
    """The request body, refused with 413 past the request limit before it is decoded."""
    announced = headers.get(b"content-length")
    if announced is not None:
        try:
            length = int(announced)
        except ValueError:
            raise ApiError(400, "content-length: not a number", "content-length") from None
        check_request_size(length)
    # straight from ASGI receive(): a body usually comes in one message
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await request.receive()
        if message["type"] != "http.request":
            raise ApiError(400, "body: the client disconnected before sending it", "body")
        chunk = message.get("body", b"")
        size += len(chunk)
        check_request_size(size)
        chunks.append(chunk)
        more = message.get("more_body", False)
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if headers.get(b"content-encoding", b"").lower() == b"gzip":
        body = gunzip(body)
    return body


async def _authenticate(cache: EnvironmentCache, key: str | None) -> Environment:
    """The environment of ``key``: 401 when unknown, 503 when PostgreSQL can't tell us."""
    try:
        return await cache.require(key)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        log.warning("could not authenticate a key: %r", exc)
        raise ApiError(503, "cannot check the API key right now; please retry", None) from None


async def _header_env(headers: dict[bytes, bytes], cache: EnvironmentCache) -> Environment | None:
    """The environment of the Authorization header's key; None when there is no such header
    (the key may then be ``writeKey`` in the body)."""
    auth = headers.get(b"authorization")
    if auth is None:
        return None
    return await _authenticate(cache, key_from_headers({"authorization": auth.decode("latin-1")}))


async def _commit(writer: InboxWriter, rows: list[Row]) -> None:
    try:
        await writer.write(rows)
    except InboxUnavailable:
        raise ApiError(
            503, "the inbox is unavailable; nothing was accepted, please retry", None
        ) from None


def build_routes(ingest: Ingest) -> list[HTTPRouteHandler]:
    """The route handlers of the ingest app, bound to ``ingest``'s resources."""

    async def single(request: Request[Any, Any, Any], type_: str) -> ASGIResponse:
        received_at = datetime.now(UTC)
        ingest.limits.check_address(request.scope)
        headers = dict(request.scope["headers"])
        body = await _read_body(request, headers)
        env = await _header_env(headers, ingest.cache)
        wire = decode_message(body)
        if env is None:
            env = await _authenticate(ingest.cache, wire.writeKey)
        ingest.limits.check_key(env)
        await _commit(
            ingest.writer, accept_single(wire, env, received_at, type_, ingest.token_max_age)
        )
        return _json(_OK)

    @post("/v1/identify", status_code=200)
    async def identify(request: Request[Any, Any, Any]) -> ASGIResponse:
        """Segment identify: a user and their traits (attributes)."""
        return await single(request, "identify")

    @post("/v1/group", status_code=200)
    async def group(request: Request[Any, Any, Any]) -> ASGIResponse:
        """Segment group: a user's company, its traits and the user's membership attributes."""
        return await single(request, "group")

    @post("/v1/track", status_code=200)
    async def track(request: Request[Any, Any, Any]) -> ASGIResponse:
        """Segment track: an event a user did."""
        return await single(request, "track")

    @post("/v1/alias", status_code=200)
    async def alias(request: Request[Any, Any, Any]) -> ASGIResponse:
        """Segment alias: link previousId to userId."""
        return await single(request, "alias")

    @post("/v1/page", status_code=200)
    async def page(request: Request[Any, Any, Any]) -> ASGIResponse:
        """Segment page: stored as the event "Page Viewed"."""
        return await single(request, "page")

    @post("/v1/screen", status_code=200)
    async def screen(request: Request[Any, Any, Any]) -> ASGIResponse:
        """Segment screen: stored as the event "Screen Viewed"."""
        return await single(request, "screen")

    @post("/v1/batch", status_code=200)
    async def batch(request: Request[Any, Any, Any]) -> ASGIResponse:
        """Segment batch: valid messages are kept, invalid ones reported by index."""
        received_at = datetime.now(UTC)
        ingest.limits.check_address(request.scope)
        headers = dict(request.scope["headers"])
        body = await _read_body(request, headers)
        env = await _header_env(headers, ingest.cache)
        envelope = decode_envelope(body)
        if env is None:
            env = await _authenticate(ingest.cache, envelope.writeKey)
        ingest.limits.check_key(env)
        rows, rejected = accept_batch(envelope, env, received_at, ingest.token_max_age)
        if not rows:
            return _json(_encoder.encode(batch_failure(rejected)), 422)
        await _commit(ingest.writer, rows)
        return _json(_encoder.encode(BatchResult(True, len(rows), rejected)))

    @get("/health")
    async def health() -> ASGIResponse:
        """200 when PostgreSQL answers, else 503."""
        try:
            async with ingest.pool.acquire(timeout=3) as conn:
                await conn.fetchval("SELECT 1", timeout=3)
        except Exception as exc:  # whatever broke, the answer is "not healthy"
            log.warning("health check failed: %r", exc)
            return _json(b'{"status":"unavailable"}', 503)
        return _json(b'{"status":"ok"}')

    @get("/hello")
    async def hello() -> ASGIResponse:
        """A static answer: the floor of what one request costs here (for benchmarks)."""
        return _json(b'{"hello":"world"}')

    return [identify, group, track, alias, page, screen, batch, health, hello]
