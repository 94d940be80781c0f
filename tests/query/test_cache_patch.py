"""The Redis sets' versions under a bulk recompute's patches and holds (real Redis).

A patch applies to a set at exactly the version before the recompute's; any other set becomes a
hold: a read misses (and refills from PostgreSQL), while late writes of older states are turned
away, whatever order the writers land in."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from shared.membership.cache import HOLD_TTL, MembershipCache, parse_members
from shared.settings import Settings

ENV = 7  # users are named apart: the module's keys live until its end


def _prefix(settings: Settings) -> str:
    """A prefix of this module's own: the session's end-to-end worker verifies (and repairs)
    every set under the session's prefix against PostgreSQL, where these users do not exist,
    so on a slow machine it deleted sets between a test's writes and its reads."""
    return f"{settings.redis_prefix}-patch"


@pytest.fixture(scope="module", autouse=True)
async def _own_keys(redis: aioredis.Redis, settings: Settings) -> AsyncIterator[None]:
    yield
    keys = [k async for k in redis.scan_iter(match=f"{_prefix(settings)}:*", count=1000)]
    if keys:
        await redis.delete(*keys)


def _cache(redis: aioredis.Redis, settings: Settings) -> MembershipCache:
    return MembershipCache(redis, _prefix(settings))


async def _state(cache: MembershipCache, user: str) -> set[str]:
    return {
        m.decode() if isinstance(m, bytes) else m
        for m in await cache.redis.smembers(cache.key(ENV, user))  # type: ignore[misc]
    }


async def test_patch_adds_and_removes_on_the_exact_predecessor(
    redis: aioredis.Redis, settings: Settings
) -> None:
    cache = _cache(redis, settings)
    await cache.write(ENV, "in", 4, [1, 2])
    await cache.write(ENV, "out", 9, [1, 2, 5])
    patched = await cache.patch_segment(ENV, 5, [("in", 5, True), ("out", 10, False)])
    assert patched == 2
    assert await _state(cache, "in") == {"_5", "1", "2", "5"}
    assert await _state(cache, "out") == {"_10", "1", "2"}
    assert await cache.get(ENV, "in") == {1, 2, 5}
    # the key's expiry is kept (a patch is not a new complete write)
    assert 0 < await redis.ttl(cache.key(ENV, "in")) <= 7 * 24 * 3600


async def test_missing_or_behind_sets_become_holds_that_miss(
    redis: aioredis.Redis, settings: Settings
) -> None:
    cache = _cache(redis, settings)
    await cache.write(ENV, "behind", 2, [1, 3])  # the recompute's version is 5: 3 and 4 unseen
    patched = await cache.patch_segment(ENV, 3, [("behind", 5, False), ("missing", 8, True)])
    assert patched == 0
    assert await _state(cache, "behind") == {"~5"}
    assert await _state(cache, "missing") == {"~8"}
    for user in ("behind", "missing"):
        assert await cache.get(ENV, user) is None  # a read misses and goes to PostgreSQL
        assert parse_members(await _state(cache, user)) == (None, set())
        assert 0 < await redis.ttl(cache.key(ENV, user)) <= HOLD_TTL


async def test_a_hold_turns_away_older_writes_and_takes_its_own_version(
    redis: aioredis.Redis, settings: Settings
) -> None:
    cache = _cache(redis, settings)
    await cache.patch_segment(ENV, 3, [("u", 5, True)])
    # a late writer of the state before the recompute (a worker, a refill on an old snapshot)
    await cache.write(ENV, "u", 4, [1])
    assert await _state(cache, "u") == {"~5"}
    # the refill that reads the recompute's committed state (version 5) fills the set
    await cache.write(ENV, "u", 5, [1, 3])
    assert await cache.get(ENV, "u") == {1, 3}
    # and once complete, the same version is not written again
    await cache.write(ENV, "u", 5, [1])
    assert await cache.get(ENV, "u") == {1, 3}


async def test_newer_sets_are_left_alone(redis: aioredis.Redis, settings: Settings) -> None:
    cache = _cache(redis, settings)
    await cache.write(ENV, "ahead", 7, [1])  # the worker already wrote a later state
    await cache.patch_segment(ENV, 3, [("ahead", 6, True), ("same", 2, True)])
    await cache.write(ENV, "same", 2, [4])
    await cache.patch_segment(ENV, 3, [("same", 2, True)])
    assert await _state(cache, "ahead") == {"_7", "1"}
    assert await _state(cache, "same") == {"_2", "4"}


async def test_patches_in_many_calls_and_batches(redis: aioredis.Redis, settings: Settings) -> None:
    cache = _cache(redis, settings)
    users = {f"user-{i}": (1, [1]) for i in range(2_503)}
    await cache.write_many(ENV, users)
    changes = [(u, 2, i % 3 != 0) for i, u in enumerate(users)]
    patched = await cache.patch_segment(ENV, 9, changes, keys_per_call=7, calls_per_send=11)
    assert patched == len(users)
    for i, user in enumerate(users):
        expected = {1, 9} if i % 3 != 0 else {1}
        assert await cache.get(ENV, user) == expected, user


async def test_patch_script_loads_after_a_script_flush(
    redis: aioredis.Redis, settings: Settings
) -> None:
    cache = _cache(redis, settings)
    await cache.write(ENV, "flushed", 1, [])
    await redis.script_flush()
    assert await cache.patch_segment(ENV, 4, [("flushed", 2, True)]) == 1
    assert await cache.get(ENV, "flushed") == {4}
