"""Fault tests run the four real services on a PostgreSQL and a Redis of their own (see
:mod:`tests.faults.servers`), which they kill and restart; the shared servers are never
touched. Each test makes its own environment; the stack is shared by the package."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from shared.db import create_pool
from shared.environments import EnvironmentKeys
from shared.migrate import migrate
from shared.settings import Settings
from tests.conftest import TEST_DATA, ServiceStack, pool_for, running_stack
from tests.e2e.conftest import Api
from tests.faults.servers import PrivateServers


@pytest.fixture(scope="package")
def servers() -> Iterator[PrivateServers]:
    private = PrivateServers().start()
    try:
        yield private
    finally:
        private.close()


@pytest.fixture(scope="package")
def fault_settings(servers: PrivateServers) -> Settings:
    async def create() -> None:
        conn = await asyncpg.connect(servers.postgres.dsn())
        try:
            await conn.execute("CREATE DATABASE segments")
        finally:
            await conn.close()
        pool = await create_pool(servers.postgres.dsn("segments"), size=1)
        async with pool.acquire() as c:
            await migrate(c)
        await pool.close()

    asyncio.run(create())
    return Settings(
        database_url=servers.postgres.dsn("segments"),
        redis_url=servers.redis.url,
        redis_prefix="segfaults",
        data_dir=str(servers.folder),
        sweep_seconds=1,
        cache_seconds=0.2,
        db_pool_size=5,
        webhook_allow_private=True,
    )


@pytest.fixture(scope="package")
def fault_stack(fault_settings: Settings, servers: PrivateServers) -> Iterator[ServiceStack]:
    # the logs outlive the servers' temporary folder, to read after a failure
    with running_stack(fault_settings, TEST_DATA / "logs" / "faults") as stack:
        yield stack


@pytest.fixture(scope="package")
async def db(fault_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """The private database (overrides the session's ``db``, so ``env`` is made here)."""
    async with pool_for(fault_settings) as pool:
        yield pool


@pytest.fixture
async def api(fault_stack: ServiceStack, env: EnvironmentKeys) -> AsyncIterator[Api]:
    client = Api(fault_stack, env)
    yield client
    await client.close()
