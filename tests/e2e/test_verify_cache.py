"""``segments verify-cache``: drift made by hand in Redis is found, counted and repaired."""

from __future__ import annotations

import asyncpg
import pytest
import redis.asyncio as aioredis

from services.cli import verify_cache
from shared.membership.cache import MembershipCache
from shared.membership.verify import CacheVerifier
from shared.settings import Settings
from tests.e2e.conftest import Api, eventually


async def _drift(api: Api, redis: aioredis.Redis, settings: Settings, pro_id: int) -> None:
    """Three sets that disagree with PostgreSQL, each with its version marker intact: a
    member no more, a member it is not, a set for nobody PostgreSQL knows."""
    key = f"{settings.redis_prefix}:m:{{{api.env.id}:"
    await redis.srem(key + "vc-pro}", str(pro_id))  # type: ignore[misc]
    await redis.sadd(key + "vc-free}", str(pro_id))  # type: ignore[misc]
    await redis.sadd(key + "vc-ghost}", "_3", str(pro_id))  # type: ignore[misc]


async def test_verify_cache_finds_and_repairs_drift(
    api: Api,
    db: asyncpg.Pool,
    redis: aioredis.Redis,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seg = await api.create_segment("vc", {"attribute": "plan", "op": "is", "value": "pro"})
    await api.identify("vc-pro", {"plan": "pro"})
    await api.identify("vc-free", {"plan": "free"})
    await eventually(lambda: api.member("vc-pro", "vc"))
    await eventually(lambda: api.profile("vc-free"))
    assert not await api.member("vc-free", "vc")  # (its set is in Redis now)
    verifier = CacheVerifier(db, MembershipCache(redis, settings.redis_prefix))
    clean = await verifier.verify_all(repair=False, recheck_after=0, env_id=api.env.id)
    assert clean.checked >= 2 and clean.disagreeing == 0, clean

    await _drift(api, redis, settings, int(seg["id"]))
    found = await verifier.verify_all(repair=False, recheck_after=0, env_id=api.env.id)
    assert found.disagreeing == 3, found
    assert not await api.member("vc-pro", "vc")  # the drift is what Redis answers

    repairs = int(await redis.get(f"{settings.redis_prefix}:cache-repairs") or 0)
    wrong = await verify_cache(settings, repair=True, recheck_after=0)
    assert wrong >= 3
    out = capsys.readouterr().out
    assert "disagree with PostgreSQL" in out and "repaired" in out, out
    assert int(await redis.get(f"{settings.redis_prefix}:cache-repairs") or 0) >= repairs + 3
    assert await api.member("vc-pro", "vc")
    assert not await api.member("vc-free", "vc")
    assert not await api.member("vc-ghost", "vc")
    after = await verifier.verify_all(repair=False, recheck_after=0, env_id=api.env.id)
    assert after.disagreeing == 0, after


async def test_the_background_slices_repair_drift(
    api: Api, db: asyncpg.Pool, redis: aioredis.Redis, settings: Settings
) -> None:
    """What the worker's cron runs: a round of slices covers every set."""
    seg = await api.create_segment("vc2", {"attribute": "plan", "op": "is", "value": "pro"})
    await api.identify("vc-pro", {"plan": "pro"})
    await eventually(lambda: api.member("vc-pro", "vc2"))
    key = f"{settings.redis_prefix}:m:{{{api.env.id}:vc-pro}}"
    await redis.srem(key, seg["id"])  # type: ignore[misc]
    verifier = CacheVerifier(db, MembershipCache(redis, settings.redis_prefix))
    repaired = 0
    while True:
        repaired += (await verifier.verify_slice(repair=True, recheck_after=0)).repaired
        if verifier.cursor == 0:
            break
    assert repaired >= 1
    assert await api.member("vc-pro", "vc2")
