"""What the three HTTP services share: the error shape, body decoding, key extraction and
the environment cache.

Every error answer is ``{"error": "<message naming the field>", "field": "<field>"}``, the
same for the same mistake in every service:

- 400: the request itself is unusable: a body that is not JSON (``field`` ``"body"``), a
  query parameter or path segment of the wrong form (``field`` names the parameter), a limit
  of the Segment API (batch size);
- 422: JSON of the wrong shape or a value breaking a rule (wrong type, missing field, NUL
  character, number out of range, nesting too deep: :mod:`shared.json_guard`), ``field``
  naming it;
- 401 / 403 keys, 404 unknown things, 413 too large, 429 too many requests.

Any other exception is logged with a request id (also sent as ``X-Request-Id``) and answered
500 in the same shape; the few that bad input can still provoke deep down (recursion, integer
overflow, a value PostgreSQL refuses) are answered 422 and logged too, as they point at a
missing check.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import asyncpg
import msgspec
from litestar import Request, Response
from litestar.config.cors import CORSConfig
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    Scope,
    Send,
)

from shared.environments import Environment, authenticate
from shared.json_guard import MAX_DEPTH, json_problem
from shared.logs import request_id as current_request_id

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Seconds /health waits for PostgreSQL or Redis before calling it down.
HEALTH_TIMEOUT = 2.0


class ErrorBody(msgspec.Struct, omit_defaults=False):
    error: str
    field: str | None = None


class ApiError(Exception):
    """Raise from a handler to answer ``status`` with :class:`ErrorBody`."""

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers


_encoder = msgspec.json.Encoder()


def error_response(status: int, message: str, field: str | None = None) -> Response[bytes]:
    return Response(
        content=_encoder.encode(ErrorBody(message, field)),
        status_code=status,
        media_type="application/json",
    )


def _api_error_handler(_: Request[Any, Any, Any], exc: ApiError) -> Response[bytes]:
    response = error_response(exc.status, exc.message, exc.field)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def _http_exception_handler(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    message = exc.detail if isinstance(exc.detail, str) else str(exc)
    field: str | None = None
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        # litestar's parameter parsing (``?limit=abc``): name the parameter
        first = exc.extra[0]
        if isinstance(first, dict) and first.get("key"):
            field = str(first["key"])
            message = f"{field}: {first.get('message') or 'invalid value'}"
    elif exc.status_code == 404:
        field = "path"
    elif exc.status_code == 405:
        field = "method"
    elif exc.status_code == 413:
        field = "body"
        message = f"body: larger than this endpoint accepts ({message})"
    return error_response(exc.status_code, message, field)


#: Exceptions that only bad input provokes deep in a handler: a check is missing upstream.
_INPUT_FAILURES: tuple[tuple[type[BaseException], str], ...] = (
    (RecursionError, "body: nested too deeply"),
    (OverflowError, "a number is out of range"),
    # PostgreSQL's data exceptions (class 22): NUL in text, numeric or date out of range, ...
    (asyncpg.DataError, "a value cannot be stored"),
)


def _unhandled_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Every exception nothing else handled: logged with a request id, never a bare 500."""
    # the observer's id (it echoes it in X-Request-Id), else one of our own
    observed = current_request_id.get()
    request_id = observed or uuid.uuid4().hex[:16]
    where = f"{request.method} {request.url.path}"
    for kind, message in _INPUT_FAILURES:
        if isinstance(exc, kind):
            log.warning(
                "request %s: bad input reached %s: %r", request_id, where, exc, exc_info=exc
            )
            response = error_response(422, f"{message} (request id {request_id})", "body")
            break
    else:
        log.error("request %s: unhandled error in %s", request_id, where, exc_info=exc)
        response = error_response(
            500, f"internal error; quote request id {request_id} to the operator", None
        )
    if observed is None:
        response.headers["X-Request-Id"] = request_id
    return response


#: Pass as ``Litestar(exception_handlers=EXCEPTION_HANDLERS)``.
EXCEPTION_HANDLERS: Mapping[Any, Any] = {
    ApiError: _api_error_handler,
    HTTPException: _http_exception_handler,
    Exception: _unhandled_handler,
}


def refuse_nul(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: a NUL character (``%00``) in the path or query string is a 400 naming
    the path parameter or query parameter, before any handler passes it to PostgreSQL.
    Pass as ``Litestar(middleware=[refuse_nul])``."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            field: str | None = None
            query = scope.get("query_string", b"")
            if b"%00" in query or b"\x00" in query:
                for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
                    if "\x00" in name or "\x00" in value:
                        field = name.replace("\x00", "\\u0000")
                        break
                else:
                    field = "query"
            elif "\x00" in scope["path"]:
                params = scope.get("path_params") or {}
                names = [k for k, v in params.items() if isinstance(v, str) and "\x00" in v]
                # the API's camelCase name of the path parameter (user_id -> userId)
                field = re.sub(r"_(\w)", lambda m: m[1].upper(), names[0]) if names else "path"
            if field is not None:
                body = _encoder.encode(
                    ErrorBody(f"{field}: the NUL character (%00) is not allowed", field)
                )
                start: HTTPResponseStartEvent = {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
                end: HTTPResponseBodyEvent = {
                    "type": "http.response.body",
                    "body": body,
                    "more_body": False,
                }
                await send(start)
                await send(end)
                return
        await app(scope, receive, send)

    return middleware


_AT = re.compile(r"^(?P<msg>.*) - at `\$\.?(?P<field>[^`]*)`$", re.DOTALL)
_MISSING = re.compile(
    r"^Object missing required field `(?P<field>[^`]+)`(?: - at `\$\.?(?P<at>[^`]*)`)?$"
)
_UNKNOWN = re.compile(
    r"^Object contains unknown field `(?P<field>[^`]+)`(?: - at `\$\.?(?P<at>[^`]*)`)?$"
)


def validation_field(exc: msgspec.ValidationError, prefix: str = "") -> tuple[str, str]:
    """(field path, message naming it) of a msgspec validation error; the field is
    ``prefix`` (or ``"body"``) when the error points at the whole document."""

    def join(*parts: str | None) -> str:
        return ".".join(p for p in (prefix, *parts) if p) or "body"

    text = str(exc)
    if m := _MISSING.match(text):
        field = join(m["at"], m["field"])
        return field, f"{field}: required"
    if m := _UNKNOWN.match(text):
        field = join(m["at"], m["field"])
        return field, f"{field}: unknown field"
    if m := _AT.match(text):
        field = join(m["field"])
        return field, f"{field}: {m['msg']}"
    field = join()
    return field, f"{field}: {text}"


def decode_json(decoder: msgspec.json.Decoder[T], raw: bytes | str, field: str = "") -> T:
    """``raw`` decoded by ``decoder``, or an :class:`ApiError`: 400 when it is empty or not
    JSON, 422 naming the field when it has the wrong shape or breaks a rule of
    :mod:`shared.json_guard`. ``field`` names where ``raw`` came from (a query parameter),
    the body when empty."""
    where = field or "body"
    if not raw.strip():
        raise ApiError(400, f"{where}: empty; send a JSON object", where)
    try:
        value = decoder.decode(raw)
    except msgspec.ValidationError as exc:
        path, message = validation_field(exc, field)
        raise ApiError(422, message, path) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"{where}: not valid JSON ({exc})", where) from None
    except RecursionError:
        raise ApiError(422, f"{where}: nested deeper than {MAX_DEPTH} levels", where) from None
    if (problem := json_problem(raw, field)) is not None:
        raise ApiError(422, f"{problem[0]}: {problem[1]}", problem[0])
    return value  # type: ignore[return-value]


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
