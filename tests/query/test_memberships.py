"""Membership answers: Redis hits, PostgreSQL fallback and refill, versions, deleted segments."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from services.query.memberships import Memberships
from shared.environments import EnvironmentKeys
from shared.membership.cache import UNKNOWN_TTL, MembershipCache
from shared.redis_keys import membership_key
from shared.settings import Settings
from tests.query.conftest import add_segment, add_user, all_users_id, bearer, sadd, smembers

Client = AsyncTestClient[Any]


async def _flush_session_keys(redis: aioredis.Redis, settings: Settings) -> int:
    """Delete every Redis key of this test session (never FLUSHALL the shared server)."""
    keys = [k async for k in redis.scan_iter(match=f"{settings.redis_prefix}:*", count=1000)]
    if keys:
        await redis.delete(*keys)
    return len(keys)


async def _segment_keys(query: Client, env: EnvironmentKeys, user: str) -> list[str]:
    resp = await query.get(f"/v1/users/{user}/segments", headers=bearer(env.writeKey))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["userId"] == user
    return [s["key"] for s in body["segments"]]


async def test_hello_and_health(query: Client) -> None:
    assert (await query.get("/hello")).json() == {"hello": "world"}
    assert (await query.get("/health")).status_code == 200


async def test_miss_reads_postgres_and_refills_redis(
    query: Client, db: asyncpg.Pool, redis: aioredis.Redis, env: EnvironmentKeys, settings: Settings
) -> None:
    beta = await add_segment(db, env, "beta", "Beta testers")
    await add_segment(db, env, "gamma")
    await add_user(db, env, "u1", version=3, segments=(beta,))
    everyone = await all_users_id(db, env)

    resp = await query.get("/v1/users/u1/segments", headers=bearer(env.writeKey))
    assert resp.json() == {
        "userId": "u1",
        "segments": [
            {"id": str(everyone), "key": "all-users", "name": "All users"},
            {"id": str(beta), "key": "beta", "name": "Beta testers"},
        ],
    }
    members = await smembers(redis, membership_key(settings.redis_prefix, env.id, "u1"))
    assert members == {"_3", str(beta)}


async def test_hit_answers_from_redis(
    query: Client, db: asyncpg.Pool, env: EnvironmentKeys, redis: aioredis.Redis, settings: Settings
) -> None:
    beta = await add_segment(db, env, "beta")
    gamma = await add_segment(db, env, "gamma")
    await add_user(db, env, "u1", version=1, segments=(beta,))
    # A newer set in Redis (as the worker writes it) is what the query answers with.
    await MembershipCache(redis, settings.redis_prefix).write(env.id, "u1", 2, [gamma])
    assert await _segment_keys(query, env, "u1") == ["all-users", "gamma"]
    h = bearer(env.writeKey)
    assert (await query.get("/v1/users/u1/segments/gamma", headers=h)).json() == {"member": True}
    assert (await query.get("/v1/users/u1/segments/beta", headers=h)).json() == {"member": False}


async def test_flushed_redis_still_answers_correctly(
    query: Client, db: asyncpg.Pool, env: EnvironmentKeys, redis: aioredis.Redis, settings: Settings
) -> None:
    beta = await add_segment(db, env, "beta")
    await add_user(db, env, "u1", segments=(beta,))
    await add_user(db, env, "u2")
    assert await _segment_keys(query, env, "u1") == ["all-users", "beta"]
    assert await _flush_session_keys(redis, settings) >= 1
    assert await _segment_keys(query, env, "u1") == ["all-users", "beta"]
    assert await _segment_keys(query, env, "u2") == ["all-users"]
    h = bearer(env.writeKey)
    assert (await query.get("/v1/users/u2/segments/beta", headers=h)).json() == {"member": False}


async def test_incomplete_set_counts_as_miss(
    query: Client, db: asyncpg.Pool, env: EnvironmentKeys, redis: aioredis.Redis, settings: Settings
) -> None:
    beta = await add_segment(db, env, "beta")
    gamma = await add_segment(db, env, "gamma")
    await add_user(db, env, "u1", version=4, segments=(beta,))
    key = membership_key(settings.redis_prefix, env.id, "u1")
    await sadd(redis, key, str(gamma))  # no version marker: not a complete answer
    assert await _segment_keys(query, env, "u1") == ["all-users", "beta"]
    assert await smembers(redis, key) == {"_4", str(beta)}


async def test_stale_refill_never_overwrites_newer_set(
    db: asyncpg.Pool, env: EnvironmentKeys, redis: aioredis.Redis, settings: Settings
) -> None:
    beta = await add_segment(db, env, "beta")
    gamma = await add_segment(db, env, "gamma")
    await add_user(db, env, "u1", version=3, segments=(beta,))
    cache = MembershipCache(redis, settings.redis_prefix)
    # The worker wrote version 5 after our PostgreSQL read of version 3: the refill must lose.
    await cache.write(env.id, "u1", 5, [gamma])
    reader = Memberships(cache, db)
    known, ids = await reader._load(env.id, "u1", refill=True)
    assert (known, ids) == (True, {beta})  # this one answer is what PostgreSQL said
    assert await cache.get(env.id, "u1") == {gamma}
    assert await reader.read(env.id, "u1") == (True, {gamma})


async def test_unknown_user_is_member_of_nothing(
    query: Client, db: asyncpg.Pool, env: EnvironmentKeys, redis: aioredis.Redis, settings: Settings
) -> None:
    await add_segment(db, env, "beta")
    h = bearer(env.writeKey)
    assert await _segment_keys(query, env, "nobody") == []
    for seg in ("beta", "all-users"):
        resp = await query.get(f"/v1/users/nobody/segments/{seg}", headers=h)
        assert resp.json() == {"member": False}
    key = membership_key(settings.redis_prefix, env.id, "nobody")
    assert await smembers(redis, key) == {"_0"}
    assert 0 < await redis.ttl(key) <= UNKNOWN_TTL
    # Once the user exists (the worker writes a newer version), the cached "unknown" loses.
    beta = await add_segment(db, env, "beta2")
    await add_user(db, env, "nobody", version=1, segments=(beta,))
    await MembershipCache(redis, settings.redis_prefix).write(env.id, "nobody", 1, [beta])
    assert await _segment_keys(query, env, "nobody") == ["all-users", "beta2"]


async def test_anonymous_id_resolves_to_its_profile(
    query: Client, db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    beta = await add_segment(db, env, "beta")
    await add_user(db, env, "u1", segments=(beta,), anonymous_ids=("anon-1",))
    await add_user(db, env, None, anonymous_ids=("anon-2",))
    h = bearer(env.writeKey)
    for anon, keys in (("anon-1", ["all-users", "beta"]), ("anon-2", ["all-users"])):
        resp = await query.get(f"/v1/anonymous/{anon}/segments", headers=h)
        assert resp.json()["anonymousId"] == anon
        assert [s["key"] for s in resp.json()["segments"]] == keys
        resp = await query.get(f"/v1/anonymous/{anon}/segments/beta", headers=h)
        assert resp.json() == {"member": "beta" in keys}
        body = {"anonymousId": anon, "segments": ["beta"]}
        resp = await query.post("/v1/check", json=body, headers=h)
        assert resp.json()["results"] == {"beta": "beta" in keys}
    # separate namespaces: an anonymous id never answers for a userId, nor the reverse
    assert await _segment_keys(query, env, "anon-1") == []
    resp = await query.get("/v1/anonymous/u1/segments", headers=h)
    assert resp.json()["segments"] == []
    resp = await query.post("/v1/check", json={"segments": []}, headers=h)
    assert (resp.status_code, resp.json()["field"]) == (422, "userId")


async def test_segment_by_key_or_id_and_unknown_segment_404(
    query: Client, db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    beta = await add_segment(db, env, "beta")
    await add_user(db, env, "u1", segments=(beta,))
    h = bearer(env.writeKey)
    for ref in ("beta", str(beta)):
        assert (await query.get(f"/v1/users/u1/segments/{ref}", headers=h)).json() == {
            "member": True
        }
    for ref in ("nope", "999999999"):
        resp = await query.get(f"/v1/users/u1/segments/{ref}", headers=h)
        assert resp.status_code == 404
        assert resp.json()["field"] == "segment"
    # A segment created after the catalog was loaded is found at once, not answered 404.
    late = await add_segment(db, env, "late")
    resp = await query.get("/v1/users/u1/segments/late", headers=h)
    assert resp.json() == {"member": False}
    resp = await query.get(f"/v1/users/u1/segments/{late}", headers=h)
    assert resp.json() == {"member": False}


async def test_deleted_segment_is_filtered_out(
    query: Client, db: asyncpg.Pool, env: EnvironmentKeys, settings: Settings
) -> None:
    beta = await add_segment(db, env, "beta")
    gamma = await add_segment(db, env, "gamma")
    await add_user(db, env, "u1", segments=(beta, gamma))
    h = bearer(env.writeKey)
    assert await _segment_keys(query, env, "u1") == ["all-users", "beta", "gamma"]
    # The Redis set still holds beta's id; only the catalog knows the segment is gone.
    await db.execute("DELETE FROM segments WHERE env_id = $1 AND id = $2", env.id, beta)
    await asyncio.sleep(settings.cache_seconds + 0.05)
    assert await _segment_keys(query, env, "u1") == ["all-users", "gamma"]
    assert (await query.get("/v1/users/u1/segments/beta", headers=h)).status_code == 404
    assert (await query.get(f"/v1/users/u1/segments/{beta}", headers=h)).status_code == 404


async def test_unusual_user_ids(query: Client, db: asyncpg.Pool, env: EnvironmentKeys) -> None:
    beta = await add_segment(db, env, "beta")
    await add_user(db, env, "jo@example.com", segments=(beta,))
    await add_user(db, env, "a b é", segments=(beta,))
    assert await _segment_keys(query, env, "jo@example.com") == ["all-users", "beta"]
    resp = await query.get("/v1/users/a%20b%20%C3%A9/segments", headers=bearer(env.writeKey))
    assert resp.json()["userId"] == "a b é"
    assert [s["key"] for s in resp.json()["segments"]] == ["all-users", "beta"]
    resp = await query.get("/v1/users/" + "x" * 256 + "/segments", headers=bearer(env.writeKey))
    assert resp.status_code == 400
