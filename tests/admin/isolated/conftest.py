"""Admin tests that count rows a worker would change (inbox, deliveries) run on a database and
Redis prefix of their own: the session's end-to-end stack runs a worker on the shared one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import redis.asyncio as aioredis

from shared.db import create_pool
from shared.settings import Settings
from tests.conftest import private_database


@pytest.fixture(scope="package")
def settings() -> Iterator[Settings]:
    with private_database(None, "isolated") as private:
        yield private


@pytest.fixture(scope="package")
def quiet_settings(settings: Settings) -> Settings:
    return settings  # no worker serves this prefix


@pytest.fixture(scope="package")
async def db(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    assert settings.database_url is not None
    pool = await create_pool(settings.database_url, size=3)
    yield pool
    await pool.close()


@pytest.fixture(scope="package")
async def redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    assert settings.redis_url is not None
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    yield client
    keys = [k async for k in client.scan_iter(match=f"{settings.redis_prefix}:*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()
