"""Fixtures of the ingest tests: a database of their own, an app client, inbox readers.

Ingest tests count and decode inbox rows, so they use a database that no worker drains (the
session's ``stack`` fixture may run a worker on the shared one) and a Redis prefix whose queue
no worker consumes, so that the drain job they enqueue stays visible.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from services.ingest.app import create_app
from services.ingest.routes import Ingest
from shared.db import create_pool
from shared.environments import EnvironmentKeys, ensure_environment
from shared.messages import InboxMessage, inbox_decoder
from shared.redis_keys import drain_job_id, queue_name
from shared.settings import Settings
from tests.conftest import private_database


@pytest.fixture(scope="session")
def ingest_settings(settings: Settings) -> Iterator[Settings]:
    """The session settings with a private database and Redis prefix for ingest tests."""
    with private_database(settings, "ing") as private:
        yield private


@pytest.fixture(scope="session")
async def ingest_db(ingest_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    assert ingest_settings.database_url is not None
    pool = await create_pool(ingest_settings.database_url, size=3)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def ingest_redis(ingest_settings: Settings) -> AsyncIterator[aioredis.Redis]:
    """A Redis client; removes the ingest tests' arq job and queue at the end."""
    assert ingest_settings.redis_url is not None
    client = aioredis.Redis.from_url(ingest_settings.redis_url, decode_responses=True)
    yield client
    await client.delete(
        job_key(ingest_settings.redis_prefix), queue_name(ingest_settings.redis_prefix)
    )
    await client.aclose()


def job_key(prefix: str) -> str:
    """arq's key of the (deduplicated) drain job."""
    return f"arq:job:{drain_job_id(prefix)}"


@pytest.fixture
async def ienv(ingest_db: asyncpg.Pool) -> EnvironmentKeys:
    """A new environment in the ingest tests' database."""
    async with ingest_db.acquire() as conn:
        return await ensure_environment(conn, f"ingest-{secrets.token_hex(6)}")


@pytest.fixture(scope="session")
async def client(ingest_settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    """The ingest app, lifespan started, behind an in-process HTTP client."""
    async with AsyncTestClient(app=create_app(ingest_settings)) as test_client:
        yield test_client


def ingest_of(client: AsyncTestClient[Any]) -> Ingest:
    """The running app's resources (the inbox writer and its counters)."""
    ingest: Ingest = client.app.state.ingest
    return ingest


async def inbox_count(pool: asyncpg.Pool, env_id: int) -> int:
    """Inbox rows of one environment."""
    count: int = await pool.fetchval("SELECT count(*) FROM inbox WHERE env_id = $1", env_id)
    return count


async def inbox_messages(pool: asyncpg.Pool, env_id: int) -> list[InboxMessage]:
    """The decoded inbox rows of one environment, in insertion order."""
    rows = await pool.fetch("SELECT body FROM inbox WHERE env_id = $1 ORDER BY id", env_id)
    return [inbox_decoder.decode(row["body"]) for row in rows]
