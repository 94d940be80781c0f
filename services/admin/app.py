"""The admin service (default port 8003): segments and users, for people and back-ends.

``create_app(settings)`` builds the Litestar app; its lifespan opens the PostgreSQL pool and
the arq Redis pool (for recompute jobs) and puts an :class:`AdminState` on ``app.state.admin``.
Every ``/v1`` route needs the environment's secret key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from arq.connections import RedisSettings
from arq.connections import create_pool as create_arq_pool
from litestar import Litestar, Request, Response, get
from litestar.di import Provide

from services.admin.attributes.controller import AttributeController
from services.admin.console.routes import console_router
from services.admin.identity.controller import IdentityController
from services.admin.imports.controller import ImportController
from services.admin.keys.controller import KeyController
from services.admin.queries.controller import QueryController
from services.admin.segments.controller import SegmentController
from services.admin.state import Admin, AdminState, provide_env, provide_state
from services.admin.tags.controller import TagController
from services.admin.users.controller import UserController
from services.admin.webhooks.controller import WebhookController
from shared.backlog import publish, read_backlog
from shared.db import create_pool
from shared.http import EXCEPTION_HANDLERS, EnvironmentCache, health_response, refuse_nul
from shared.http_metrics import metrics_route, observe_requests
from shared.membership.cache import MembershipCache
from shared.metrics import BACKLOG_READ
from shared.redis_keys import queue_name
from shared.settings import Settings

log = logging.getLogger(__name__)

_HELLO = b'{"hello":"world"}'
#: Seconds a scrape waits for the state figures.
BACKLOG_TIMEOUT = 5.0
MAX_BODY_BYTES = 3 * 1024 * 1024


@get("/hello")
async def hello() -> Response[bytes]:
    """A static answer (the benchmark floor)."""
    return Response(_HELLO, media_type="application/json")


@get("/health")
async def health(admin: Admin) -> Response[bytes]:
    """200 when PostgreSQL and Redis both answer, else 503 naming the one that did not."""
    return await health_response(admin.pool, admin.arq.ping)


async def _backlog(request: Request[Any, Any, Any]) -> None:
    """Before a scrape: the deployment's state figures (shared.backlog), read now."""
    state: AdminState = request.app.state.admin
    try:
        async with asyncio.timeout(BACKLOG_TIMEOUT):
            backlog = await read_backlog(state.pool, state.redis, state.settings.redis_prefix)
    except Exception as exc:  # the scrape still answers, with the process's own figures
        log.warning("metrics: could not read the state figures: %r", exc)
        BACKLOG_READ.set(0)
        return
    publish(backlog)
    BACKLOG_READ.set(1)


def create_app(settings: Settings) -> Litestar:
    """The admin service's Litestar app for ``settings``."""
    if settings.database_url is None or settings.redis_url is None:
        raise ValueError("the admin service needs database_url and redis_url")
    database_url, redis_url = settings.database_url, settings.redis_url

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = await create_pool(database_url, size=settings.db_pool_size)
        try:
            arq = await create_arq_pool(
                RedisSettings.from_dsn(redis_url),
                default_queue_name=queue_name(settings.redis_prefix),
            )
        except BaseException:
            await pool.close()
            raise
        cache_redis = aioredis.Redis.from_url(redis_url)
        try:
            app.state.admin = AdminState(
                settings=settings,
                pool=pool,
                arq=arq,
                envs=EnvironmentCache(pool, settings.cache_seconds),
                redis=cache_redis,
                cache=MembershipCache(cache_redis, settings.redis_prefix),
            )
            yield
        finally:
            await cache_redis.aclose()
            await arq.aclose()
            await pool.close()

    app = Litestar(
        route_handlers=[
            hello,
            health,
            SegmentController,
            UserController,
            TagController,
            WebhookController,
            QueryController,
            AttributeController,
            ImportController,
            KeyController,
            IdentityController,
            console_router(),  # the web console at /
            metrics_route(lambda r: r.app.state.admin.envs, settings.metrics_token, _backlog),
        ],
        dependencies={"admin": Provide(provide_state), "env": Provide(provide_env)},
        lifespan=[lifespan],
        exception_handlers=dict(EXCEPTION_HANDLERS),
        middleware=[refuse_nul],
        # the largest JSON body is 10,000 members of 255 characters (2.6 MB); CSV imports
        # stream under their own limit (their route lifts this one)
        request_max_body_size=MAX_BODY_BYTES,
        logging_config=None,  # the process configures logging (shared.logs)
    )
    return observe_requests(app, settings)
