"""The ingest service: Segment-compatible tracking API that commits messages to the inbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from arq.connections import ArqRedis
from litestar import Litestar

from services.ingest.inbox import InboxWriter
from services.ingest.routes import Ingest, build_routes
from shared.db import create_pool
from shared.http import EXCEPTION_HANDLERS, EnvironmentCache, browser_cors, refuse_nul
from shared.http_metrics import metrics_route, observe_requests
from shared.messages import MAX_REQUEST_BYTES
from shared.rate_limit import RequestLimits
from shared.settings import Settings

#: Flusher tasks of the inbox writer: one flushing while the others gather the next batches.
FLUSHERS = 3


def create_app(settings: Settings) -> Litestar:
    """The ingest ASGI app; its lifespan opens the PostgreSQL and Redis pools and the writer."""
    if settings.database_url is None or settings.redis_url is None:
        raise ValueError("ingest needs database_url and redis_url")
    database_url, redis_url = settings.database_url, settings.redis_url
    ingest = Ingest()
    ingest.limits = RequestLimits.from_settings(settings)
    ingest.token_max_age = settings.identity_token_max_age_seconds

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = await create_pool(database_url, size=settings.db_pool_size, reset_session=False)
        try:
            # connects on first use: ingest starts, and acknowledges, while Redis is down (the
            # worker's sweep drains what it commits); arq's create_pool would refuse to start
            arq_pool = ArqRedis.from_url(redis_url, socket_connect_timeout=1)
            try:
                writer = InboxWriter(
                    pool,
                    arq_pool,
                    redis_prefix=settings.redis_prefix,
                    max_rows=settings.ingest_batch_rows,
                    flushers=FLUSHERS,
                )
                await writer.start()
                ingest.pool = pool
                ingest.cache = EnvironmentCache(pool, settings.cache_seconds)
                ingest.writer = writer
                app.state.ingest = ingest  # for tests and operators: the writer's counters
                try:
                    yield
                finally:
                    await writer.stop()
            finally:
                await arq_pool.aclose()
        finally:
            await pool.close()

    app = Litestar(
        route_handlers=[
            *build_routes(ingest),
            metrics_route(lambda _: ingest.cache, settings.metrics_token),
        ],
        lifespan=[lifespan],
        exception_handlers=dict(EXCEPTION_HANDLERS),
        middleware=[refuse_nul],
        cors_config=browser_cors(),
        # we enforce (and word) the 500 KB limit ourselves; this is only a backstop
        request_max_body_size=2 * MAX_REQUEST_BYTES,
        openapi_config=None,
        debug=False,
        logging_config=None,  # the process configures logging (shared.logs)
    )
    return observe_requests(app, settings)
