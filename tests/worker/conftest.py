"""Worker test helpers: put messages in the inbox as ingest would, and drain it in-process.

The package runs on a database and Redis prefix of its own: the session's end-to-end stack
runs a worker on the shared one, which would claim these tests' inbox rows and race their
in-process drain (a test could read memberships while that worker still held a batch)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis

from services.worker.drain import DrainStats, drain_round
from shared.membership import SegmentCatalog
from shared.membership.cache import MembershipCache
from shared.messages import inbox_encoder, normalise, wire_decoder
from shared.settings import Settings
from tests.conftest import private_package_fixtures


class Worker:
    """Drives the worker's drain against the test database, without arq."""

    def __init__(self, pool: asyncpg.Pool, cache: MembershipCache) -> None:
        self.pool = pool
        self.cache = cache
        self.catalog = SegmentCatalog()
        self.stats = DrainStats()

    async def send(self, env_id: int, *messages: dict[str, Any]) -> None:
        """Insert messages into the inbox exactly as ingest does (normalised, encoded)."""
        now = datetime.now(UTC)
        bodies = [
            inbox_encoder.encode(normalise(wire_decoder.decode(msgspec.json.encode(m)), now))
            for m in messages
        ]
        await self.pool.execute(
            """INSERT INTO inbox (env_id, body)
               SELECT $1, b FROM unnest($2::bytea[]) AS b""",
            env_id,
            bodies,
        )

    async def drain(self, batch: int = 1000) -> int:
        total = 0
        while n := await drain_round(self.pool, self.cache, self.catalog, batch, self.stats):
            total += n
        return total

    async def profile(self, env_id: int, user_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(
            "SELECT attributes FROM users WHERE env_id = $1 AND user_id = $2", env_id, user_id
        )
        return None if row is None else dict(row["attributes"])

    async def segments_of(self, env_id: int, user_id: str) -> set[str]:
        rows = await self.pool.fetch(
            """SELECT s.key FROM memberships m
               JOIN users u ON u.env_id = m.env_id AND u.id = m.user_pk
               JOIN segments s ON s.env_id = m.env_id AND s.id = m.segment_id
               WHERE m.env_id = $1 AND u.user_id = $2""",
            env_id,
            user_id,
        )
        return {r["key"] for r in rows}


settings, db, redis = private_package_fixtures("worker")


@pytest.fixture
async def worker(
    db: asyncpg.Pool, redis: aioredis.Redis, settings: Settings
) -> AsyncIterator[Worker]:
    yield Worker(db, MembershipCache(redis, settings.redis_prefix))
