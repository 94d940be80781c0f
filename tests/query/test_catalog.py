"""The segment catalog is reloaded ahead of its expiry in the background, so that requests
under traffic never wait for PostgreSQL, and it is still never older than its ttl."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from services.query.catalog import SegmentKeyCache, SegmentKeys
from shared.db import create_pool
from shared.environments import EnvironmentKeys
from shared.settings import Settings
from tests.query.conftest import add_segment


async def _until_replaced(cache: SegmentKeyCache, env_id: int, old: SegmentKeys) -> SegmentKeys:
    """The catalog that replaces ``old`` once the background reload is over."""
    for _ in range(500):
        current = cache._envs[env_id]
        if current is not old:
            return current
        await asyncio.sleep(0.01)
    raise AssertionError("the background reload never finished")


async def test_a_half_expired_catalog_answers_at_once_and_reloads_once_in_background(
    db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    cache = SegmentKeyCache(db, ttl=1000)
    first = await cache.get(env.id)
    assert cache.loads == 1
    late = await add_segment(db, env, "late")
    first.loaded_at -= 600  # past half its ttl
    # every request meanwhile gets the current catalog without waiting, and one reload runs
    answers = [await cache.get(env.id) for _ in range(20)]
    assert all(answer is first for answer in answers)
    fresh = await _until_replaced(cache, env.id, first)
    assert cache.loads == 2 and cache.unknown_loads == 0
    assert fresh.by_key["late"] == late
    assert await cache.get(env.id) is fresh  # young again: no further reload
    assert cache.loads == 2


async def test_an_expired_catalog_is_never_answered(db: asyncpg.Pool, env: EnvironmentKeys) -> None:
    # after a quiet spell longer than the ttl, the request waits for the reload
    cache = SegmentKeyCache(db, ttl=1000)
    first = await cache.get(env.id)
    await add_segment(db, env, "later")
    first.loaded_at -= 1000
    fresh = await cache.get(env.id)
    assert fresh is not first and "later" in fresh.by_key
    assert cache.loads == 2


async def test_a_failed_background_reload_keeps_the_catalog_and_is_not_retried_per_request(
    db: asyncpg.Pool, settings: Settings, env: EnvironmentKeys, caplog: pytest.LogCaptureFixture
) -> None:
    assert settings.database_url is not None
    own = await create_pool(settings.database_url, size=1)
    cache = SegmentKeyCache(own, ttl=1000)
    first = await cache.get(env.id)
    first.loaded_at -= 600
    await own.close()  # PostgreSQL unreachable for this cache
    assert await cache.get(env.id) is first
    for _ in range(500):
        if caplog.text:
            break
        await asyncio.sleep(0.01)
    assert "reloading the segment catalog failed" in caplog.text
    # while PostgreSQL is down, later requests are answered at once and ask it nothing more
    answers = [await cache.get(env.id) for _ in range(20)]
    await asyncio.sleep(0.05)
    assert all(answer is first for answer in answers) and cache.loads == 2
    # once the catalog is ttl old, a request waits for a reload; its success re-arms the
    # background reloads
    cache.pool = db
    first.loaded_at -= 400
    fresh = await cache.get(env.id)
    assert fresh is not first and cache.loads == 3
    fresh.loaded_at -= 600
    assert await cache.get(env.id) is fresh
    assert (await _until_replaced(cache, env.id, fresh)).loaded_at > fresh.loaded_at
