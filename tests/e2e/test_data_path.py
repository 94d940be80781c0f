"""One identify all the way: snippet -> ingest -> PostgreSQL -> worker -> membership -> query,
against the real services over HTTP."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from shared.settings import Settings
from tests.e2e.conftest import Api, eventually


async def test_identify_enters_and_leaves_a_dynamic_segment(api: Api) -> None:
    await api.create_segment("pro", {"attribute": "plan", "op": "is", "value": "pro"})
    await api.identify("ada", {"plan": "pro"})
    await eventually(lambda: api.member("ada", "pro"))
    assert await api.member("ada", "all-users")
    resp = await api.query.get("/v1/users/ada/segments")
    assert {s["key"] for s in resp.json()["segments"]} == {"all-users", "pro"}

    await api.identify("ada", {"plan": "free"})

    async def left() -> bool:
        return not await api.member("ada", "pro")

    await eventually(left)
    check = await api.query.post(
        "/v1/check", json={"userId": "ada", "segments": ["pro", "all-users"]}
    )
    assert check.json()["results"] == {"pro": False, "all-users": True}


async def test_segment_created_after_the_users_is_computed_in_bulk(api: Api) -> None:
    for i in range(5):
        await api.identify(f"bulk-{i}", {"seats": i * 10})
    await eventually(lambda: api.profile("bulk-4"))
    await api.create_segment("big", {"attribute": "seats", "op": "gt", "value": 15})
    assert [await api.member(f"bulk-{i}", "big") for i in range(5)] == [
        False,
        False,
        True,
        True,
        True,
    ]


async def test_the_same_batch_twice_applies_once(api: Api) -> None:
    batch = {
        "batch": [
            {
                "type": "identify",
                "userId": "dup",
                "messageId": f"m-{i}",
                "traits": {"n": {"add": 1}},
            }
            for i in range(3)
        ]
    }
    for _ in range(2):
        resp = await api.ingest.post("/v1/batch", json=batch)
        assert resp.status_code == 200, resp.text
    await eventually(lambda: api.profile("dup"))

    async def settled() -> bool:
        profile = await api.profile("dup")
        return profile is not None and profile["attributes"].get("n") == 3

    await eventually(settled)
    # one more batch proves the duplicates were not merely still queued
    await api.identify("dup", {"marker": True})

    async def marked() -> dict[str, Any] | None:
        profile = await api.profile("dup")
        return profile if profile and profile["attributes"].get("marker") else None

    profile = await eventually(marked)
    assert profile["attributes"]["n"] == 3


async def test_an_older_message_does_not_overwrite_a_newer_value(api: Api) -> None:
    await api.identify("late", {"plan": "pro"}, timestamp="2026-03-01T12:00:00Z")
    await api.identify("late", {"plan": "free", "seen": 1}, timestamp="2026-03-01T11:00:00Z")

    async def both() -> dict[str, Any] | None:
        profile = await api.profile("late")
        return profile if profile and profile["attributes"].get("seen") == 1 else None

    profile = await eventually(both)
    assert profile["attributes"]["plan"] == "pro"


async def test_anonymous_then_identified_keeps_attributes_and_events(
    api: Api, db: asyncpg.Pool
) -> None:
    anon = f"anon-{uuid.uuid4()}"
    resp = await api.ingest.post(
        "/v1/batch",
        json={
            "batch": [
                {"type": "identify", "anonymousId": anon, "traits": {"lang": "fr"}},
                {"type": "track", "anonymousId": anon, "event": "Viewed Pricing"},
            ]
        },
    )
    assert resp.status_code == 200, resp.text

    async def anonymous_applied() -> int:
        return int(
            await db.fetchval(
                "SELECT count(*) FROM identities WHERE env_id = $1 AND anonymous_id = $2",
                api.env.id,
                anon,
            )
        )

    await eventually(anonymous_applied)
    await api.identify("grace", {"plan": "pro"}, anonymousId=anon)

    async def merged() -> dict[str, Any] | None:
        profile = await api.profile("grace")
        return profile if profile and profile["attributes"].get("lang") == "fr" else None

    profile = await eventually(merged)
    assert profile["attributes"] == {"lang": "fr", "plan": "pro"}
    events = await db.fetch(
        """SELECT e.name FROM events e JOIN users u ON u.env_id = e.env_id AND u.id = e.user_pk
           WHERE e.env_id = $1 AND u.user_id = 'grace'""",
        api.env.id,
    )
    assert [e["name"] for e in events] == ["Viewed Pricing"]


async def test_a_flushed_redis_still_answers_correctly(
    api: Api, redis: aioredis.Redis, settings: Settings
) -> None:
    await api.create_segment("vip", {"attribute": "vip", "op": "is", "value": True})
    await api.identify("vip-1", {"vip": True})
    await api.identify("vip-2", {"vip": False})
    await eventually(lambda: api.member("vip-1", "vip"))
    await eventually(lambda: api.profile("vip-2"))
    keys = [k async for k in redis.scan_iter(match=f"{settings.redis_prefix}:m:*")]
    assert keys
    await redis.delete(*keys)
    assert await api.member("vip-1", "vip")
    assert not await api.member("vip-2", "vip")
    assert await api.member("vip-2", "all-users")
    assert not await api.member("nobody-at-all", "all-users")
    # and the answers refilled the cache
    assert await redis.exists(f"{settings.redis_prefix}:m:{{{api.env.id}:vip-1}}")
