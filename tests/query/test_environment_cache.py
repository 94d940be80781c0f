"""API keys are read from PostgreSQL once per key and period, however many requests arrive."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from shared import http
from shared.environments import EnvironmentKeys, authenticate
from shared.http import EnvironmentCache


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys read from PostgreSQL (the real read, counted)."""
    seen: list[str] = []
    real = authenticate

    async def counted(pool: asyncpg.Pool, key: str) -> object:
        seen.append(key)
        return await real(pool, key)

    monkeypatch.setattr(http, "authenticate", counted)
    return seen


async def test_concurrent_requests_share_one_read(
    db: asyncpg.Pool, env: EnvironmentKeys, reads: list[str]
) -> None:
    cache = EnvironmentCache(db, ttl=0.2)
    found = await asyncio.gather(*(cache.get(env.writeKey) for _ in range(200)))
    assert {f.id for f in found if f is not None} == {env.id} and None not in found
    assert reads == [env.writeKey]
    unknown = await asyncio.gather(*(cache.get("sk_nobody") for _ in range(50)))
    assert unknown == [None] * 50 and reads.count("sk_nobody") == 1


async def test_an_expired_key_answers_while_read_again_then_revocation_bites(
    db: asyncpg.Pool, env: EnvironmentKeys, reads: list[str]
) -> None:
    cache = EnvironmentCache(db, ttl=0.3)
    assert await cache.get(env.secretKey) is not None
    await db.execute(  # the secret key is rotated: the old one must stop working
        "UPDATE environments SET secret_key_hash = sha256($2::bytea) WHERE id = $1",
        env.id,
        f"rotated-{env.id}".encode(),
    )
    await asyncio.sleep(0.35)  # expired, but less than a ttl ago: still answers, re-read begins
    started = time.perf_counter()
    assert await cache.get(env.secretKey) is not None
    assert time.perf_counter() - started < 0.05  # did not wait for PostgreSQL
    await asyncio.sleep(0.05)
    assert await cache.get(env.secretKey) is None  # the background read saw the revocation
    assert reads == [env.secretKey, env.secretKey]
