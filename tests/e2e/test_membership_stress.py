"""Every membership writer at once on the real services (issue 10): bulk recomputes of changing
definitions, incremental batches, manual member changes, tag changes, erases and query refills
over a few thousand users. Afterwards Redis disagrees with PostgreSQL nowhere, the query
service answers what PostgreSQL stores, and a fresh full recompute changes nothing."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from shared.membership import dependency_order, recompute_segment
from shared.membership.cache import MembershipCache
from shared.membership.graph import load_refs
from shared.settings import Settings
from tests.e2e.conftest import Api, eventually
from tests.e2e.membership_world import PLANS, World, drift

LOAD_SECONDS = 6.0


async def _setup(api: Api, world: World) -> str:
    """Segments reading attributes, a tag, a manual segment and each other; the tag's id."""
    resp = await api.admin.post("/v1/segments", json={"name": "vipm", "kind": "manual"})
    assert resp.status_code == 201, resp.text
    resp = await api.admin.post("/v1/tags", json={"key": "team", "value": "red"})
    assert resp.status_code == 201, resp.text
    tag_id: str = resp.json()["id"]
    for key, cond in [
        ("plan-pro", {"attribute": "plan", "op": "is", "value": "pro"}),
        ("score-hi", {"attribute": "score", "op": "gt", "value": 50}),
        ("tagged", {"tag": {"key": "team", "value": "red"}}),
        ("in-vip", {"segment": "vipm"}),
        ("pro-and-vip", {"all": [{"segment": "plan-pro"}, {"segment": "in-vip"}]}),
        ("flip", {"attribute": "score", "op": "lt", "value": 30}),
    ]:
        await world.create(key, cond, lambda _t: False)
    await world.all_ready(within=60)
    return tag_id


async def _until(deadline: float, step: Any) -> None:
    while time.monotonic() < deadline:
        await step()


async def test_every_writer_at_once_leaves_no_drift(
    api: Api, db: asyncpg.Pool, redis: aioredis.Redis, settings: Settings
) -> None:
    world = World(api, db)
    await world.load_users(2500)
    tag_id = await _setup(api, world)
    rng = random.Random(10)
    users = sorted(world.users)
    erasable, users = users[:40], users[40:]
    deadline = time.monotonic() + LOAD_SECONDS

    async def redefine() -> None:  # bulk recomputes, one after the other
        value = rng.randrange(10, 90)
        resp = await api.admin.patch(
            "/v1/segments/flip",
            json={"conditions": {"attribute": "score", "op": "lt", "value": value}},
        )
        assert resp.status_code == 200, resp.text
        await asyncio.sleep(0.3)

    async def batches() -> None:  # incremental batches
        batch = [
            {
                "type": "identify",
                "userId": u,
                "traits": {"plan": rng.choice(PLANS), "score": rng.randrange(100)},
                **({"tags": ["team:red"]} if rng.random() < 0.1 else {}),
            }
            for u in rng.sample(users, 40)
        ]
        resp = await api.ingest.post("/v1/batch", json={"batch": batch})
        assert resp.status_code == 200, resp.text
        await asyncio.sleep(0.05)

    async def manual() -> None:  # manual members
        method = rng.choice(["POST", "DELETE"])
        resp = await api.admin.request(
            method, "/v1/segments/vipm/members", json={"userIds": rng.sample(users, 25)}
        )
        assert resp.status_code == 200, resp.text

    async def tags() -> None:  # tag changes through the admin API
        method = rng.choice(["POST", "DELETE"])
        resp = await api.admin.request(
            method, f"/v1/tags/{tag_id}/users", json={"userIds": rng.sample(users, 25)}
        )
        assert resp.status_code == 200, resp.text

    async def refills() -> None:  # query refills after evictions
        chosen = rng.sample(users, 20)
        await redis.delete(*(f"{settings.redis_prefix}:m:{{{api.env.id}:{u}}}" for u in chosen))
        for u in chosen:
            resp = await api.query.get(f"/v1/users/{u}/segments")
            assert resp.status_code == 200, resp.text

    async def erases() -> None:
        for u in erasable:
            if time.monotonic() > deadline:
                return
            resp = await api.admin.delete(f"/v1/users/{u}")
            assert resp.status_code == 204, resp.text
            world.users.pop(u)
            await asyncio.sleep(0.1)

    await asyncio.gather(
        _until(deadline, redefine),
        _until(deadline, batches),
        _until(deadline, batches),
        _until(deadline, manual),
        _until(deadline, tags),
        _until(deadline, refills),
        erases(),
    )
    await eventually(_quiet(api, db), within=60, interval=0.2)
    await world.all_ready(within=60)

    found = await drift(db, redis, settings, api.env.id)
    assert found.checked > 1000 and found.disagreeing == 0, found
    await _query_answers_postgres(api, db, world)
    await _fresh_recompute_changes_nothing(api, db, redis, settings)


def _quiet(api: Api, db: asyncpg.Pool) -> Any:
    async def check() -> bool:
        pending = await db.fetchval("SELECT count(*) FROM inbox WHERE env_id = $1", api.env.id)
        return bool(pending == 0)

    return check


async def _query_answers_postgres(api: Api, db: asyncpg.Pool, world: World) -> None:
    rows = await db.fetch(
        """SELECT u.user_id, array_agg(s.key) AS keys FROM users u
           JOIN memberships m ON m.env_id = u.env_id AND m.user_pk = u.id
           JOIN segments s ON s.env_id = m.env_id AND s.id = m.segment_id
           WHERE u.env_id = $1 AND u.user_id IS NOT NULL GROUP BY u.user_id""",
        api.env.id,
    )
    stored = {r["user_id"]: set(r["keys"]) for r in rows}

    async def one(user_id: str) -> None:
        resp = await api.query.get(f"/v1/users/{user_id}/segments")
        got = {s["key"] for s in resp.json()["segments"]}
        assert got == stored.get(user_id, set()), user_id

    ids = [*sorted(stored), "u0", "u1"]  # two erased users: members of nothing
    for start in range(0, len(ids), 50):
        await asyncio.gather(*(one(u) for u in ids[start : start + 50]))


async def _fresh_recompute_changes_nothing(
    api: Api, db: asyncpg.Pool, redis: aioredis.Redis, settings: Settings
) -> None:
    cache = MembershipCache(redis, settings.redis_prefix)
    async with db.acquire() as conn:
        refs = await load_refs(conn, api.env.id)
    for segment_id in dependency_order(refs):
        result = await recompute_segment(
            db, cache, api.env.id, segment_id, datetime.now(UTC), cause="verify"
        )
        assert result is not None
        assert (result.entered, result.exited) == (0, 0), segment_id
