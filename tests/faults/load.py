"""A steady load on the real services, and the checks that nothing was lost afterwards.

Producers send identify batches the way an SDK does: each message has its own messageId, and a
request that fails (connection refused or reset, 503) is sent again with the same messageIds
until ingest acknowledges it, so a message may arrive twice but must apply once. Readers ask
the query service meanwhile and count what failed.

The final state is known without a second, fault-free run: every user's ``n`` is the number
of messages acknowledged for it (``{"add": 1}`` each: order does not matter), and segment
``busy`` (``n >= BUSY``) holds exactly the users whose final ``n`` reaches it. A fault-free run
of the same load ends in that state (the first test of the suite checks it).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis

from services.cli import verify_cache
from shared.membership.cache import MembershipCache, load_user_memberships
from shared.settings import Settings
from tests.e2e.conftest import Api, eventually

USERS = 60
PER_REQUEST = 20
BUSY = 30


class Load:
    """Producers (identify batches, retried until acknowledged) and query readers."""

    def __init__(self, api: Api, messages: int, producers: int = 4) -> None:
        self.api = api
        self.messages = messages
        self.producers = producers
        self.sent: Counter[str] = Counter()  # acknowledged messages per user
        self.acked = 0
        self.retries = 0
        self.reads_ok = 0
        self.reads_failed = 0
        self._issued = 0
        self._done = asyncio.Event()
        self._running = asyncio.Event()
        self._running.set()
        self._rng = random.Random(7)

    async def run(self) -> None:
        """Until every message is acknowledged (the readers stop then too)."""
        readers = [asyncio.create_task(self._reader()) for _ in range(2)]
        try:
            await asyncio.gather(*(self._producer(k) for k in range(self.producers)))
        finally:
            self._done.set()
            await asyncio.gather(*readers)

    async def _producer(self, k: int) -> None:
        while self._issued < self.messages:
            await self._running.wait()
            start = self._issued
            count = min(PER_REQUEST, self.messages - start)
            self._issued += count
            users = [f"u{self._rng.randrange(USERS)}" for _ in range(count)]
            batch = [
                {
                    "type": "identify",
                    "userId": user,
                    "messageId": f"{self.api.env.id}-{start + i}",
                    "traits": {"n": {"add": 1}},
                }
                for i, user in enumerate(users)
            ]
            await self._send(batch)
            self.sent.update(users)
            self.acked += count

    def pause(self) -> None:
        """Producers stop after their current request (readers go on)."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        while True:
            try:
                resp = await self.api.ingest.post("/v1/batch", json={"batch": batch}, timeout=10)
                if resp.status_code == 200:
                    return
                assert resp.status_code in (502, 503, 504), resp.text  # never a 4xx here
            except httpx.HTTPError:
                pass
            self.retries += 1
            await asyncio.sleep(0.1)

    async def _reader(self) -> None:
        while not self._done.is_set():
            user = f"u{self._rng.randrange(USERS)}"
            try:
                resp = await self.api.query.post(
                    "/v1/check", json={"userId": user, "segments": ["busy"]}, timeout=5
                )
                if resp.status_code == 200:
                    self.reads_ok += 1
                else:
                    self.reads_failed += 1
            except httpx.HTTPError:
                self.reads_failed += 1
            await asyncio.sleep(0.01)


async def create_busy_segment(api: Api) -> int:
    segment = await api.create_segment("busy", {"attribute": "n", "op": "gte", "value": BUSY})
    return int(segment["id"])


async def assert_final_state(
    api: Api, db: asyncpg.Pool, settings: Settings, load: Load, busy_id: int
) -> None:
    """Every acknowledged message applied exactly once, memberships as a fault-free run
    leaves them, Redis agreeing with PostgreSQL (no drift found by ``segments verify-cache``),
    and the query service answering so."""
    env_id = api.env.id
    assert load.acked == load.messages

    async def drained() -> bool:
        inbox = await db.fetchval("SELECT count(*) FROM inbox WHERE env_id = $1", env_id)
        return bool(inbox == 0)

    await eventually(drained, within=60)
    rows = await db.fetch(
        "SELECT user_id, (attributes->>'n')::int AS n FROM users WHERE env_id = $1", env_id
    )
    assert {r["user_id"]: r["n"] for r in rows} == dict(load.sent)
    processed = await db.fetchval(
        "SELECT count(*) FROM processed_messages WHERE env_id = $1", env_id
    )
    assert processed == load.messages
    dead = await db.fetchval("SELECT count(*) FROM dead_letters WHERE env_id = $1", env_id)
    assert dead == 0
    expected_busy = {u for u, n in load.sent.items() if n >= BUSY}
    members = await db.fetch(
        """SELECT u.user_id FROM memberships m JOIN users u ON u.env_id = m.env_id
           AND u.id = m.user_pk WHERE m.env_id = $1 AND m.segment_id = $2""",
        env_id,
        busy_id,
    )
    assert {r["user_id"] for r in members} == expected_busy

    async def redis_agrees() -> bool:
        # `segments verify-cache` (every set of the deployment), then this load's users one
        # by one, the same comparison written out here
        if await verify_cache(settings, repair=False, recheck_after=0.2):
            return False
        return not await cache_drift(db, settings, env_id, list(load.sent))

    await eventually(redis_agrees, within=20)
    for user in sorted(load.sent):
        assert await api.member(user, "busy") == (user in expected_busy), user


async def cache_drift(
    db: asyncpg.Pool, settings: Settings, env_id: int, users: list[str]
) -> list[str]:
    """Users whose Redis set (when there is a complete one) disagrees with PostgreSQL. A
    missing set or a hold is no drift: the query service reads PostgreSQL then."""
    assert settings.redis_url is not None
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    cache = MembershipCache(client, settings.redis_prefix)
    try:
        drift = []
        for user in users:
            cached = await cache.get(env_id, user)
            if cached is None:
                continue
            stored = await load_user_memberships(db, env_id, user)
            if stored is None or set(cached) != stored[1]:
                drift.append(user)
        return drift
    finally:
        await client.aclose()
