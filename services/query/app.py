"""The query service (default port 8002): targeting checks for renderers.

``create_app(settings)`` builds the Litestar app; its lifespan opens the PostgreSQL pool and the
Redis client, and puts a :class:`QueryState` on ``app.state.query``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from litestar import Litestar, Request, Response, get

from services.query.catalog import SegmentKeyCache
from services.query.handlers import (
    anonymous_in_segment,
    anonymous_segments,
    check,
    user_in_segment,
    user_segments,
)
from services.query.memberships import Memberships
from services.query.redis_reader import PipelinedReader
from services.query.state import QueryState
from shared.db import create_pool
from shared.http import (
    EXCEPTION_HANDLERS,
    EnvironmentCache,
    browser_cors,
    health_response,
    refuse_nul,
)
from shared.http_metrics import metrics_route, observe_requests
from shared.membership.cache import MembershipCache
from shared.rate_limit import RequestLimits
from shared.settings import Settings

_HELLO = b'{"hello":"world"}'
MAX_BODY_BYTES = 300 * 1024
# URL schemes the pipelined reader speaks (TLS ones go through redis-py).
_PIPELINED = ("redis://", "unix://")


@get("/hello")
async def hello() -> Response[bytes]:
    """A static answer: the floor that benchmarks compare the real endpoints with."""
    return Response(_HELLO, media_type="application/json")


@get("/health")
async def health(request: Request[Any, Any, Any]) -> Response[bytes]:
    """200 ``{"status": "ok"}``; 200 ``{"status": "degraded", "redis": "<error>"}`` while
    Redis does not answer (answers then come from PostgreSQL); 503 without PostgreSQL."""
    q: QueryState = request.app.state.query
    return await health_response(q.pool, q.redis.ping, redis_optional=True)


def create_app(settings: Settings) -> Litestar:
    """The query service's Litestar app for ``settings``."""
    if settings.database_url is None or settings.redis_url is None:
        raise ValueError("the query service needs database_url and redis_url")
    database_url, redis_url = settings.database_url, settings.redis_url

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = await create_pool(database_url, size=settings.db_pool_size, reset_session=False)
        redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
        reader = PipelinedReader(redis_url) if redis_url.startswith(_PIPELINED) else None
        try:
            cache = MembershipCache(redis, settings.redis_prefix)
            app.state.query = QueryState(
                pool=pool,
                redis=redis,
                envs=EnvironmentCache(pool, settings.cache_seconds),
                catalog=SegmentKeyCache(pool, settings.cache_seconds),
                memberships=Memberships(cache, pool, reader),
                limits=RequestLimits.from_settings(settings),
                token_max_age=settings.identity_token_max_age_seconds,
            )
            yield
        finally:
            if reader is not None:
                await reader.aclose()
            await redis.aclose()
            await pool.close()

    app = Litestar(
        route_handlers=[
            hello,
            health,
            user_segments,
            user_in_segment,
            anonymous_segments,
            anonymous_in_segment,
            check,
            metrics_route(lambda r: r.app.state.query.envs, settings.metrics_token),
        ],
        lifespan=[lifespan],
        exception_handlers=dict(EXCEPTION_HANDLERS),
        middleware=[refuse_nul],
        cors_config=browser_cors(),
        # the largest legitimate body, a check of 1,000 segment keys of 255 characters, is
        # 258 KB; everything else is refused with a 413 before it is read
        request_max_body_size=MAX_BODY_BYTES,
        openapi_config=None,
        logging_config=None,  # the process configures logging (shared.logs)
    )
    return observe_requests(app, settings)
