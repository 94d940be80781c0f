"""A computing segment's progress in the admin API, and the bulk recompute that reports it (on
a database no worker serves, so nothing moves the segment on behind the test's back)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from shared.db import create_pool
from shared.environments import EnvironmentKeys
from shared.membership import recompute, recompute_segment
from shared.membership.cache import MembershipCache
from shared.membership.progress import Progress
from shared.settings import Settings
from tests.admin.conftest import get_ok, make_user, secret

Client = AsyncTestClient[Any]
PLAN_PRO = {"attribute": "plan", "op": "is", "value": "pro"}


async def _get(admin: Client, env: EnvironmentKeys, key: str) -> dict[str, Any]:
    return await get_ok(admin, env, f"/v1/segments/{key}")


async def test_progress_is_shown_while_computing_only(
    admin: Client, env: EnvironmentKeys, db: asyncpg.Pool
) -> None:
    resp = await admin.post(
        "/v1/segments",
        json={"name": "Pro", "kind": "dynamic", "conditions": PLAN_PRO},
        headers=secret(env),
    )
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert (created["status"], created["progress"]) == (
        "computing",
        {"phase": "queued", "percent": 0},
    )
    await db.execute(
        """INSERT INTO segment_progress (env_id, segment_id, phase, percent, started_at)
           VALUES ($1, $2, 'writing', 42, now())""",
        env.id,
        int(created["id"]),
    )
    assert (await _get(admin, env, "pro"))["progress"] == {"phase": "writing", "percent": 42}
    listed = (await admin.get("/v1/segments", headers=secret(env))).json()["segments"]
    by_key = {s["key"]: s for s in listed}
    assert by_key["pro"]["progress"] == {"phase": "writing", "percent": 42}
    assert by_key["all-users"]["progress"] is None
    await db.execute(
        "UPDATE segments SET status = 'ready' WHERE env_id = $1 AND id = $2",
        env.id,
        int(created["id"]),
    )
    assert (await _get(admin, env, "pro"))["progress"] is None  # a leftover row is not shown


async def test_recompute_reports_each_phase_then_clears(
    admin: Client,
    env: EnvironmentKeys,
    db: asyncpg.Pool,
    redis: aioredis.Redis,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(recompute, "RANGE_USERS", 10)  # three ranges of users
    monkeypatch.setattr(Progress, "EVERY", 0.0)  # a report per range
    for i in range(30):
        await make_user(db, env, f"p{i}", {"plan": "pro" if i % 3 else "free"})
    resp = await admin.post(
        "/v1/segments",
        json={"name": "Pro2", "kind": "dynamic", "conditions": PLAN_PRO},
        headers=secret(env),
    )
    seg_id = int(resp.json()["id"])
    # every report the recompute writes, as the admin API would read them mid-run
    await db.execute(
        """CREATE TABLE IF NOT EXISTS progress_seen (phase text, percent int, n serial);
           CREATE OR REPLACE FUNCTION progress_seen() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN INSERT INTO progress_seen (phase, percent) VALUES (NEW.phase, NEW.percent);
           RETURN NEW; END $$;
           CREATE OR REPLACE TRIGGER progress_seen AFTER INSERT OR UPDATE ON segment_progress
           FOR EACH ROW EXECUTE FUNCTION progress_seen();"""
    )
    try:
        result = await recompute_segment(
            db, MembershipCache(redis, settings.redis_prefix), env.id, seg_id, datetime.now(UTC)
        )
        assert result is not None and result.members == 20
        seen = [
            (r["phase"], r["percent"])
            for r in await db.fetch("SELECT phase, percent FROM progress_seen ORDER BY n")
        ]
    finally:
        await db.execute("DROP TRIGGER progress_seen ON segment_progress; DROP TABLE progress_seen")
    assert seen[0] == ("selecting", 0)
    assert [phase for phase, _ in seen[1:]] == ["writing"] * 3, seen
    assert seen[-1] == ("writing", 100)
    assert [p for _, p in seen] == sorted(p for _, p in seen)  # never goes back
    assert not await db.fetchval(
        "SELECT count(*) FROM segment_progress WHERE env_id = $1 AND segment_id = $2",
        env.id,
        seg_id,
    )
    body = await _get(admin, env, "pro2")
    assert (body["status"], body["progress"], body["memberCount"]) == ("ready", None, 20)


async def test_progress_never_blocks_a_recompute_when_the_pool_is_full(
    env: EnvironmentKeys, db: asyncpg.Pool, redis: aioredis.Redis, settings: Settings
) -> None:
    """With every other connection taken, reports are dropped (after a second), the work isn't."""
    seg_id = await db.fetchval(
        """INSERT INTO segments (env_id, key, name, kind, conditions, status)
           VALUES ($1, 'busy', 'Busy', 'dynamic', $2, 'computing') RETURNING id""",
        env.id,
        PLAN_PRO,
    )
    await make_user(db, env, "busy-1", {"plan": "pro"})
    assert settings.database_url is not None
    pool = await create_pool(settings.database_url, size=1)
    try:
        started = time.perf_counter()
        result = await asyncio.wait_for(
            recompute_segment(
                pool,
                MembershipCache(redis, settings.redis_prefix),
                env.id,
                seg_id,
                datetime.now(UTC),
            ),
            timeout=30,
        )
    finally:
        await pool.close()
    assert result is not None and result.members == 1
    # the one report that waited gave up, and no later report waited again
    assert time.perf_counter() - started < 10
