"""Redis is a cache: after losing everything, answers stay correct and a rebuild refills it."""

from __future__ import annotations

import redis.asyncio as aioredis

from shared.membership.cache import parse_members
from shared.settings import Settings
from tests.e2e.conftest import Api, eventually


async def test_lost_redis_is_rebuilt_by_the_worker(
    api: Api, redis: aioredis.Redis, settings: Settings
) -> None:
    await api.create_segment("gold", {"attribute": "tier", "op": "is", "value": "gold"})
    for i in range(20):
        await api.identify(f"cache-{i}", {"tier": "gold" if i % 2 else "silver"})
    await eventually(lambda: api.member("cache-19", "gold"))
    await eventually(lambda: api.profile("cache-18"))
    key = f"{settings.redis_prefix}:m:{{{api.env.id}:cache-%d}}"

    # what FLUSHALL does to us: every key of this deployment gone (the test Redis is shared,
    # so only this session's prefix is wiped)
    ours = [k async for k in redis.scan_iter(match=f"{settings.redis_prefix}:*")]
    await redis.delete(*ours)

    async def rebuilt() -> bool:
        return all([await redis.exists(key % i) for i in range(20)])

    await eventually(rebuilt)  # no query asked for these users: the worker refilled them
    for i in range(20):
        _, segments = parse_members(await redis.smembers(key % i))  # type: ignore[misc]
        gold = await api.member(f"cache-{i}", "gold")
        assert gold == bool(i % 2)
        assert len(segments) == (2 if gold else 1)
