"""Admin tests that count rows a worker would change (inbox, deliveries) run on a database and
Redis prefix of their own: the session's end-to-end stack runs a worker on the shared one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import redis.asyncio as aioredis

from shared.settings import Settings
from tests.conftest import pool_for, private_database, redis_for


@pytest.fixture(scope="package")
def settings() -> Iterator[Settings]:
    with private_database(None, "isolated") as private:
        yield private


@pytest.fixture(scope="package")
def quiet_settings(settings: Settings) -> Settings:
    return settings  # no worker serves this prefix


@pytest.fixture(scope="package")
async def db(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    async with pool_for(settings) as pool:
        yield pool


@pytest.fixture(scope="package")
async def redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    async with redis_for(settings) as client:
        yield client
