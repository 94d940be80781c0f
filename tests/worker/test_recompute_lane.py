"""The recompute lane: computing segments are claimed from PostgreSQL and recomputed; a
recompute resumes at its cursor; one that fails for good ends 'failed' with its reason."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.worker import recompute_lane
from services.worker.recompute_lane import RecomputeLane
from shared.environments import EnvironmentKeys
from tests.worker.conftest import Worker

PRO = {"attribute": "plan", "op": "is", "value": "pro"}


async def _users(worker: Worker, env_id: int, count: int, traits: Any) -> None:
    await worker.pool.execute(
        """INSERT INTO users (env_id, user_id, attributes, first_seen_at, last_seen_at)
           SELECT $1, 'lane-' || g, $2::jsonb, now(), now() FROM generate_series(1, $3) AS g""",
        env_id,
        traits,
        count,
    )


async def _computing(worker: Worker, env_id: int, key: str, conditions: Any) -> int:
    seg: int = await worker.pool.fetchval(
        """INSERT INTO segments (env_id, key, name, kind, conditions, status)
           VALUES ($1, $2, $2, 'dynamic', $3, 'computing') RETURNING id""",
        env_id,
        key,
        conditions,
    )
    return seg


async def _settle(lane: RecomputeLane, worker: Worker, env_id: int, seg: int) -> dict[str, Any]:
    """Run the lane until the segment is no longer computing; its row."""
    for _ in range(400):
        await lane.fill()
        if lane.running:
            await asyncio.gather(*lane.running.values(), return_exceptions=True)
        row = await worker.pool.fetchrow(
            """SELECT status, status_reason, recompute_attempts FROM segments
               WHERE env_id = $1 AND id = $2""",
            env_id,
            seg,
        )
        assert row is not None
        if row["status"] != "computing":
            return dict(row)
        await asyncio.sleep(0.02)
    raise AssertionError("still computing")


def _lane(worker: Worker, statement_seconds: float = 30.0) -> RecomputeLane:
    return RecomputeLane(
        worker.pool, worker.cache, concurrency=2, statement_seconds=statement_seconds
    )


async def test_the_lane_recomputes_computing_segments_in_dependency_order(
    worker: Worker, env: EnvironmentKeys
) -> None:
    await _users(worker, env.id, 50, {"plan": "pro"})
    base = await _computing(worker, env.id, "lane-pro", PRO)
    built = await _computing(worker, env.id, "lane-built", {"segment": "lane-pro"})
    lane = _lane(worker)
    # the segment built on a computing one waits for it
    claims = await recompute_lane.claim(worker.pool, 5, exclude=set())
    assert [c.segment_id for c in claims] == [base]
    await asyncio.sleep(0)
    await recompute_lane._release(worker.pool, claims[0], delay=0)
    assert (await _settle(lane, worker, env.id, base))["status"] == "ready"
    assert (await _settle(lane, worker, env.id, built))["status"] == "ready"
    count = await worker.pool.fetchval(
        "SELECT count(*) FROM memberships WHERE env_id = $1 AND segment_id = $2", env.id, built
    )
    assert count == 50


async def test_a_recompute_resumes_at_its_cursor(worker: Worker, env: EnvironmentKeys) -> None:
    await _users(worker, env.id, 30, {"plan": "pro"})
    seg = await _computing(worker, env.id, "lane-resume", PRO)
    pks = [
        r["id"]
        for r in await worker.pool.fetch(
            "SELECT id FROM users WHERE env_id = $1 AND user_id LIKE 'lane-%' ORDER BY id", env.id
        )
    ]
    # as if an earlier attempt had done the first 10 users before it was interrupted
    await worker.pool.execute(
        "UPDATE segments SET recompute_cursor = $3 WHERE env_id = $1 AND id = $2",
        env.id,
        seg,
        pks[9],
    )
    assert (await _settle(_lane(worker), worker, env.id, seg))["status"] == "ready"
    members = {
        r["user_pk"]
        for r in await worker.pool.fetch(
            "SELECT user_pk FROM memberships WHERE env_id = $1 AND segment_id = $2", env.id, seg
        )
    }
    assert members == set(pks[10:])


async def test_conditions_that_no_longer_compile_fail_the_segment(
    worker: Worker, env: EnvironmentKeys
) -> None:
    seg = await _computing(worker, env.id, "lane-broken", {"attribute": "x", "op": "nonsense"})
    row = await _settle(_lane(worker), worker, env.id, seg)
    assert row["status"] == "failed"
    assert "no longer compile" in row["status_reason"]
    # a new request (the conditions changed) tries again from scratch
    await worker.pool.execute(
        "UPDATE segments SET conditions = $3, status = 'computing' WHERE env_id = $1 AND id = $2",
        env.id,
        seg,
        PRO,
    )
    row = await _settle(_lane(worker), worker, env.id, seg)
    assert (row["status"], row["status_reason"]) == ("ready", None)


async def test_a_recompute_that_keeps_timing_out_ends_failed(
    worker: Worker, env: EnvironmentKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recompute_lane, "RETRY_SECONDS", 0.01)
    await _users(worker, env.id, 3000, {"bio": "x" * 3000})
    seg = await _computing(
        worker,
        env.id,
        "lane-slow",
        {"attribute": "bio", "op": "regex", "value": "x+y"},
    )
    row = await _settle(_lane(worker, statement_seconds=0.001), worker, env.id, seg)
    assert row["status"] == "failed", row
    assert "timed out" in row["status_reason"]
    assert row["recompute_attempts"] == recompute_lane.MAX_ATTEMPTS
