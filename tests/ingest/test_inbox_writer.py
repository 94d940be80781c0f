"""The inbox writer: grouped inserts, all-or-nothing acknowledgement, the drain job."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from arq.connections import ArqRedis, RedisSettings, create_pool

from services.embedded import free_port
from services.ingest.inbox import InboxUnavailable, InboxWriter, Row
from shared.db import create_pool as create_db_pool
from shared.environments import EnvironmentKeys
from shared.redis_keys import drain_job_id, queue_name
from shared.settings import Settings
from tests.ingest.conftest import inbox_count, job_key


@pytest.fixture
async def arq_pool(ingest_settings: Settings) -> AsyncIterator[ArqRedis]:
    assert ingest_settings.redis_url is not None
    pool = await create_pool(RedisSettings.from_dsn(ingest_settings.redis_url))
    yield pool
    await pool.aclose()


def rows(env_id: int, n: int) -> list[Row]:
    now = datetime.now(UTC)
    return [(env_id, now, f"body-{i}".encode()) for i in range(n)]


async def started(writer: InboxWriter) -> InboxWriter:
    await writer.start()
    return writer


async def test_concurrent_writes_share_inserts(
    ingest_db: asyncpg.Pool, arq_pool: ArqRedis, ingest_settings: Settings, ienv: EnvironmentKeys
) -> None:
    writer = await started(
        InboxWriter(ingest_db, arq_pool, redis_prefix=ingest_settings.redis_prefix)
    )
    try:
        await asyncio.gather(*(writer.write(rows(ienv.id, 2)) for _ in range(100)))
    finally:
        await writer.stop()
    assert await inbox_count(ingest_db, ienv.id) == 200
    assert writer.rows_written == 200
    assert 1 <= writer.flushes < 100
    # each INSERT is one transaction: rows of one flush share their xmin
    transactions = await ingest_db.fetchval(
        "SELECT count(DISTINCT xmin::text) FROM inbox WHERE env_id = $1", ienv.id
    )
    assert transactions == writer.flushes


async def test_max_rows_bounds_each_insert_but_never_splits_a_request(
    ingest_db: asyncpg.Pool, arq_pool: ArqRedis, ingest_settings: Settings, ienv: EnvironmentKeys
) -> None:
    writer = InboxWriter(
        ingest_db, arq_pool, redis_prefix=ingest_settings.redis_prefix, max_rows=10, flushers=1
    )
    await writer.start()
    try:
        await asyncio.gather(
            writer.write(rows(ienv.id, 25)),  # larger than max_rows: goes alone, whole
            *(writer.write(rows(ienv.id, 3)) for _ in range(10)),
        )
    finally:
        await writer.stop()
    assert await inbox_count(ingest_db, ienv.id) == 55
    sizes = await ingest_db.fetch(
        "SELECT count(*) AS n FROM inbox WHERE env_id = $1 GROUP BY xmin::text", ienv.id
    )
    counts = sorted(r["n"] for r in sizes)
    assert counts[-1] == 25
    assert all(n <= 10 for n in counts[:-1])
    assert sum(counts) == 55


async def test_drain_job_is_enqueued_after_a_flush(
    ingest_db: asyncpg.Pool,
    arq_pool: ArqRedis,
    ingest_settings: Settings,
    ingest_redis: aioredis.Redis,
    ienv: EnvironmentKeys,
) -> None:
    prefix = ingest_settings.redis_prefix
    await ingest_redis.delete(job_key(prefix), queue_name(prefix))
    writer = await started(InboxWriter(ingest_db, arq_pool, redis_prefix=prefix))
    try:
        await writer.write(rows(ienv.id, 1))
        for _ in range(100):
            if await ingest_redis.exists(job_key(prefix)):
                break
            await asyncio.sleep(0.02)
    finally:
        await writer.stop()
    assert await ingest_redis.exists(job_key(prefix))
    assert await ingest_redis.zscore(queue_name(prefix), drain_job_id(prefix)) is not None
    assert writer.drain_enqueues >= 1


async def test_redis_down_does_not_fail_the_write(
    ingest_db: asyncpg.Pool,
    ingest_settings: Settings,
    ienv: EnvironmentKeys,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # a real client for a port where nothing listens: every command fails to connect
    dead = ArqRedis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    writer = await started(InboxWriter(ingest_db, dead, redis_prefix=ingest_settings.redis_prefix))
    try:
        with caplog.at_level(logging.WARNING, logger="services.ingest.inbox"):
            await writer.write(rows(ienv.id, 3))
            await asyncio.sleep(0)  # let the enqueue attempt start
    finally:
        await writer.stop()
        await dead.aclose()
    assert await inbox_count(ingest_db, ienv.id) == 3
    assert writer.drain_enqueues == 0
    assert "could not enqueue the drain job" in caplog.text


async def test_database_down_acknowledges_nothing(
    ingest_settings: Settings, arq_pool: ArqRedis, ingest_db: asyncpg.Pool, ienv: EnvironmentKeys
) -> None:
    assert ingest_settings.database_url is not None
    pool = await create_db_pool(ingest_settings.database_url, size=1)
    writer = await started(InboxWriter(pool, arq_pool, redis_prefix=ingest_settings.redis_prefix))
    await pool.close()
    try:
        with pytest.raises(InboxUnavailable):
            await writer.write(rows(ienv.id, 2))
    finally:
        await writer.stop()
    assert writer.flushes == 0
    assert await inbox_count(ingest_db, ienv.id) == 0


async def test_a_connection_closed_while_idle_is_replaced_within_the_flush(
    ingest_settings: Settings, arq_pool: ArqRedis, ingest_db: asyncpg.Pool, ienv: EnvironmentKeys
) -> None:
    """A flusher keeps its connection between flushes; when PostgreSQL drops it (restart,
    failover, an administrator's pg_terminate_backend), that flush runs again on a new
    connection: no client sees a 503 for a connection the server closed while idle."""
    assert ingest_settings.database_url is not None
    dsn = ingest_settings.database_url
    dsn += ("&" if "?" in dsn else "?") + "application_name=inbox-writer-test"
    pool = await create_db_pool(dsn, size=2, reset_session=False)
    writer = await started(
        InboxWriter(pool, arq_pool, redis_prefix=ingest_settings.redis_prefix, flushers=1)
    )
    try:
        await writer.write(rows(ienv.id, 1))
        # the pool's only connection, kept by the flusher between flushes
        killed = await ingest_db.fetchval(
            """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
               WHERE application_name = 'inbox-writer-test'"""
        )
        assert killed == 1
        await writer.write(rows(ienv.id, 1))
        await writer.write(rows(ienv.id, 2))
    finally:
        await writer.stop()
        await pool.close()  # returns: the writer gave its connection back on stop
    assert writer.flushes == 3
    assert await inbox_count(ingest_db, ienv.id) == 4


async def test_stop_flushes_what_is_queued_then_refuses(
    ingest_db: asyncpg.Pool, arq_pool: ArqRedis, ingest_settings: Settings, ienv: EnvironmentKeys
) -> None:
    writer = await started(
        InboxWriter(ingest_db, arq_pool, redis_prefix=ingest_settings.redis_prefix)
    )
    pending: list[asyncio.Task[Any]] = [
        asyncio.create_task(writer.write(rows(ienv.id, 1))) for _ in range(20)
    ]
    await asyncio.sleep(0)  # the writes are queued
    await writer.stop()
    await asyncio.gather(*pending)
    assert await inbox_count(ingest_db, ienv.id) == 20
    with pytest.raises(InboxUnavailable):
        await writer.write(rows(ienv.id, 1))
