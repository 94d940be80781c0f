"""The worker's start-up waits for a PostgreSQL that refuses it for now, rather than dying."""

from __future__ import annotations

import asyncio
import re
import secrets
from typing import Any

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis

from services.worker.main import _shutdown, _startup
from services.worker.outage import postgres_gone
from shared.settings import Settings


async def test_start_up_waits_while_postgresql_has_no_connection_slot(
    settings: Settings, db: asyncpg.Pool
) -> None:
    """A server at its connection limit answers 53300 (too many connections): transient, so
    the worker waits and starts once a slot frees. A role limited to 0 connections stands for
    a full server (superusers are exempt, so the role is an ordinary one)."""
    assert settings.database_url is not None and settings.redis_url is not None
    role = f"seg_full_{secrets.token_hex(4)}"
    await db.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 0")
    await db.execute(f"GRANT pg_read_all_data, pg_write_all_data TO {role}")
    dsn = re.sub(r"://postgres(:[^@]*)?@", f"://{role}@", settings.database_url, count=1)
    assert role in dsn
    try:
        with pytest.raises(asyncpg.TooManyConnectionsError) as refused:
            await asyncpg.connect(dsn)
        assert postgres_gone(refused.value)

        arq_redis = aioredis.Redis.from_url(settings.redis_url)
        ctx: dict[str, Any] = {
            "settings": msgspec.structs.replace(settings, database_url=dsn),
            "redis": arq_redis,
        }
        starting = asyncio.create_task(_startup(ctx))
        await asyncio.sleep(1.5)
        assert not starting.done(), starting.exception() if starting.done() else None
        await db.execute(f"ALTER ROLE {role} CONNECTION LIMIT -1")
        await asyncio.wait_for(starting, 30)
        assert await ctx["pool"].fetchval("SELECT current_user") == role
        await _shutdown(ctx)
        await arq_redis.aclose()
    finally:
        await db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
        )
        await db.execute(f"DROP ROLE IF EXISTS {role}")
