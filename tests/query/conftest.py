"""Fixtures and SQL set-up helpers for the query service tests: state is written straight into
PostgreSQL (users, memberships with their membership_version), as the worker would leave it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from services.query.app import create_app
from shared.environments import EnvironmentKeys
from shared.settings import Settings


@pytest.fixture
async def query(settings: Settings) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    """A client of a fresh query app (its own caches), lifespan run."""
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def add_segment(
    db: asyncpg.Pool, env: EnvironmentKeys, key: str, name: str | None = None
) -> int:
    """A manual segment; returns its id."""
    seg_id: int = await db.fetchval(
        "INSERT INTO segments (env_id, key, name, kind) VALUES ($1, $2, $3, 'manual') RETURNING id",
        env.id,
        key,
        name or key.title(),
    )
    return seg_id


async def add_user(
    db: asyncpg.Pool,
    env: EnvironmentKeys,
    user_id: str | None,
    *,
    version: int = 1,
    segments: tuple[int, ...] = (),
    anonymous_ids: tuple[str, ...] = (),
) -> int:
    """A user with ``membership_version`` and memberships of ``segments``; returns its pk."""
    async with db.acquire() as conn, conn.transaction():
        pk: int = await conn.fetchval(
            """INSERT INTO users (env_id, user_id, first_seen_at, last_seen_at, membership_version)
               VALUES ($1, $2, now(), now(), $3) RETURNING id""",
            env.id,
            user_id,
            version,
        )
        for seg in segments:
            await conn.execute(
                "INSERT INTO memberships (env_id, segment_id, user_pk) VALUES ($1, $2, $3)",
                env.id,
                seg,
                pk,
            )
        for anon in anonymous_ids:
            await conn.execute(
                "INSERT INTO identities (env_id, anonymous_id, user_pk) VALUES ($1, $2, $3)",
                env.id,
                anon,
                pk,
            )
    return pk


async def all_users_id(db: asyncpg.Pool, env: EnvironmentKeys) -> int:
    seg_id: int = await db.fetchval(
        "SELECT id FROM segments WHERE env_id = $1 AND kind = 'all'", env.id
    )
    return seg_id


async def smembers(redis: aioredis.Redis, key: str) -> set[str]:
    """SMEMBERS, typed (redis-py's stubs mix the sync and async signatures)."""
    found: set[str] = await redis.smembers(key)  # type: ignore[misc]
    return found


async def sadd(redis: aioredis.Redis, key: str, *members: str) -> None:
    await redis.sadd(key, *members)  # type: ignore[misc]
