"""A world of users and segments whose right answers are known in Python, for the
concurrency tests on the real services: load users, create segments, check PostgreSQL, the
query service and Redis against the expected memberships."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from shared.membership.cache import MembershipCache
from shared.membership.verify import CacheVerifier, Drift
from shared.settings import Settings
from tests.e2e.conftest import Api, eventually

PLANS = ("free", "pro", "team")
Traits = dict[str, Any]
Predicate = Callable[[Traits], bool]


def traits_of(i: int) -> Traits:
    return {"n": i, "plan": PLANS[i % 3], "score": (i * 37) % 100}


def segment_def(k: int) -> tuple[dict[str, Any], Predicate]:
    """The ``k``-th segment: its conditions and the same rule in Python."""
    low, high, plan = (k * 13) % 90, (k * 29) % 100, PLANS[k % 3]
    if k % 3 == 0:
        return (
            {
                "all": [
                    {"attribute": "score", "op": "gt", "value": low},
                    {"attribute": "plan", "op": "is", "value": plan},
                ]
            },
            lambda t: t["score"] > low and t["plan"] == plan,
        )
    if k % 3 == 1:
        return (
            {"attribute": "score", "op": "lt", "value": high},
            lambda t: t["score"] < high,
        )
    return (
        {
            "any": [
                {"attribute": "plan", "op": "is", "value": plan},
                {"attribute": "score", "op": "gte", "value": 95 - k % 10},
            ]
        },
        lambda t: t["plan"] == plan or t["score"] >= 95 - k % 10,
    )


class World:
    """Users (userId -> traits) and segments (key -> predicate) of one environment."""

    def __init__(self, api: Api, db: asyncpg.Pool) -> None:
        self.api = api
        self.db = db
        self.users: dict[str, Traits] = {}
        self.segments: dict[str, Predicate] = {}

    async def load_users(self, count: int, prefix: str = "u") -> None:
        """``count`` users through ingest's batch endpoint, then wait until applied."""
        batch = []
        for i in range(count):
            user_id = f"{prefix}{i}"
            self.users[user_id] = traits_of(i)
            batch.append({"type": "identify", "userId": user_id, "traits": traits_of(i)})
        for start in range(0, len(batch), 2000):
            resp = await self.api.ingest.post(
                "/v1/batch", json={"batch": batch[start : start + 2000]}
            )
            assert resp.status_code == 200, resp.text
        await eventually(self._applied, within=60)

    async def _applied(self) -> bool:
        env_id = self.api.env.id
        users = await self.db.fetchval("SELECT count(*) FROM users WHERE env_id = $1", env_id)
        pending = await self.db.fetchval("SELECT count(*) FROM inbox WHERE env_id = $1", env_id)
        return bool(users == len(self.users) and pending == 0)

    async def create(self, key: str, conditions: Any, predicate: Predicate) -> None:
        """Create a dynamic segment (without waiting for it)."""
        resp = await self.api.admin.post(
            "/v1/segments",
            json={"name": key, "key": key, "kind": "dynamic", "conditions": conditions},
        )
        assert resp.status_code == 201, resp.text
        self.segments[key] = predicate

    async def all_ready(self, within: float) -> None:
        async def ready() -> bool:
            resp = await self.api.admin.get("/v1/segments")
            statuses = {s["key"]: s["status"] for s in resp.json()["segments"]}
            assert "failed" not in statuses.values(), statuses
            return all(statuses[k] == "ready" for k in self.segments)

        await eventually(ready, within=within, interval=0.1)

    def expected(self, user_id: str) -> set[str]:
        traits = self.users[user_id]
        return {"all-users"} | {k for k, rule in self.segments.items() if rule(traits)}

    async def check_postgres(self) -> None:
        rows = await self.db.fetch(
            """SELECT s.key, array_agg(u.user_id) AS members FROM memberships m
               JOIN segments s ON s.env_id = m.env_id AND s.id = m.segment_id
               JOIN users u ON u.env_id = m.env_id AND u.id = m.user_pk
               WHERE m.env_id = $1 GROUP BY s.key""",
            self.api.env.id,
        )
        stored = {r["key"]: set(r["members"]) for r in rows}
        for key in self.segments:
            want = {u for u in self.users if key in self.expected(u)}
            assert stored.get(key, set()) == want, key

    async def check_query(self) -> None:
        """Every user's answer from the query service."""

        async def one(user_id: str) -> None:
            resp = await self.api.query.get(f"/v1/users/{user_id}/segments")
            assert resp.status_code == 200, resp.text
            got = {s["key"] for s in resp.json()["segments"]}
            assert got == self.expected(user_id), user_id

        users = sorted(self.users)
        for start in range(0, len(users), 50):
            await asyncio.gather(*(one(u) for u in users[start : start + 50]))


async def drift(
    db: asyncpg.Pool,
    redis: aioredis.Redis,
    settings: Settings,
    env_id: int,
    *,
    repair: bool = False,
) -> Drift:
    """What ``segments verify-cache`` finds for one environment."""
    verifier = CacheVerifier(db, MembershipCache(redis, settings.redis_prefix))
    return await verifier.verify_all(repair=repair, env_id=env_id)
