"""Drain lanes: the rounds of one worker run at once (SEGMENTS_DRAIN_LANES) without applying
two messages about one identity out of order, also for operations that carry no timestamp
(manual segments, tags) and for merges of an anonymous profile (identified values win)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import msgspec

from services.worker import main as worker_main
from services.worker.drain import InFlight, drain_round
from shared.environments import EnvironmentKeys
from shared.membership import SegmentCatalog
from shared.membership.verify import CacheVerifier
from shared.settings import Settings
from tests.worker.conftest import Worker


async def _manual_segments(worker: Worker, env_id: int, *keys: str) -> None:
    for key in keys:
        await worker.pool.execute(
            "INSERT INTO segments (env_id, key, name, kind) VALUES ($1, $2, $2, 'manual')",
            env_id,
            key,
        )


def _context(worker: Worker, settings: Settings, **changes: Any) -> dict[str, Any]:
    """A worker's ctx as its start-up makes it (arq hands each job a copy: call jobs with
    ``{**ctx}``)."""
    return {
        "settings": msgspec.structs.replace(settings, **changes),
        "pool": worker.pool,
        "cache": worker.cache,
        "catalog": SegmentCatalog(),
        "drain_lock": asyncio.Lock(),
        "verifier": CacheVerifier(worker.pool, worker.cache),
        **worker_main.drain_state(),
    }


async def test_a_round_puts_aside_rows_about_an_identity_another_round_holds(
    worker: Worker, env: EnvironmentKeys
) -> None:
    """While another round holds u's first message, a round applies other users' messages
    but not u's second one: applied first, its `~a` would come before the `a` it undoes."""
    await _manual_segments(worker, env.id, "a", "b")
    await worker.send(env.id, {"type": "identify", "userId": "u", "segments": ["a"]})
    await worker.send(env.id, {"type": "identify", "userId": "u", "segments": ["~a", "b"]})
    await worker.send(env.id, {"type": "identify", "userId": "v", "segments": ["b"]})
    inflight = InFlight()
    async with worker.pool.acquire() as holder:
        tx = holder.transaction()
        await tx.start()
        first = await holder.fetch(  # what the other round's claim took
            """SELECT env_id, id, received_at, body FROM inbox WHERE env_id = $1
               ORDER BY id LIMIT 1 FOR UPDATE""",
            env.id,
        )
        mine, taken = inflight.take(first)
        assert mine == first
        applied = await drain_round(
            worker.pool, worker.cache, worker.catalog, 100, worker.stats, inflight
        )
        assert applied == 1
        assert await worker.segments_of(env.id, "v") == {"all-users", "b"}
        assert await worker.segments_of(env.id, "u") == set()  # neither row applied
        await tx.rollback()
        inflight.release(taken)
    assert not inflight.held
    await worker.drain()
    assert await worker.segments_of(env.id, "u") == {"all-users", "b"}


async def test_lanes_keep_each_identitys_order(
    worker: Worker, env: EnvironmentKeys, settings: Settings
) -> None:
    """Four lanes, rounds of 7 rows: every user's manual segments and tags end as its
    messages, in order, say."""
    keys = ("s0", "s1", "s2", "s3")
    await _manual_segments(worker, env.id, *keys)
    rng = random.Random(7)
    users = [f"lane-user-{i}" for i in range(60)]
    expected_segments: dict[str, set[str]] = {u: set() for u in users}
    expected_tags: dict[str, set[tuple[str, str]]] = {u: set() for u in users}
    for step in range(6):
        messages: list[dict[str, Any]] = []
        for user in users:
            key = rng.choice(keys)
            if rng.random() < 0.5:
                ops, tags = [key], [f"Step:{step}"]
                expected_segments[user].add(key)
                expected_tags[user].add(("Step", str(step)))
            else:
                ops, tags = ["~", key], ["~Step", f"Step:{step}"]
                expected_segments[user] = {key}
                expected_tags[user] = {("Step", str(step))}
            messages.append({"type": "identify", "userId": user, "segments": ops, "tags": tags})
        rng.shuffle(messages)
        for message in messages:  # one insert each: ids in this order
            await worker.send(env.id, message)

    ctx = _context(worker, settings, worker_batch=7, drain_lanes=4)
    assert await worker_main.drain({**ctx}) == 6 * len(users)
    assert not ctx["inflight"].held
    for user in users:
        assert await worker.segments_of(env.id, user) == {"all-users"} | expected_segments[user]
        rows = await worker.pool.fetch(
            """SELECT t.key, t.value FROM user_tags ut
               JOIN tags t ON t.env_id = ut.env_id AND t.id = ut.tag_id
               JOIN users u ON u.env_id = ut.env_id AND u.id = ut.user_pk
               WHERE ut.env_id = $1 AND u.user_id = $2""",
            env.id,
            user,
        )
        assert {(r["key"], r["value"]) for r in rows} == expected_tags[user], user


async def test_lanes_merge_anonymous_profiles_after_the_users_earlier_messages(
    worker: Worker, env: EnvironmentKeys, settings: Settings
) -> None:
    """A server identifies a user, the user's device sends anonymous attributes, then the
    device identifies (a merge): the identified user's value wins even though the three
    rows may be claimed by three lanes at once (the SDK's anonymous-merge vector)."""
    pairs = [(f"merged-{i}", f"device-{i}") for i in range(24)]
    for user, device in pairs:  # each pair's three rows one after the other
        await worker.send(
            env.id, {"type": "identify", "userId": user, "traits": {"theme": "light"}}
        )
        await worker.send(
            env.id,
            {"type": "identify", "anonymousId": device, "traits": {"theme": "dark", "src": "ads"}},
        )
        await worker.send(
            env.id,
            {"type": "identify", "userId": user, "anonymousId": device, "traits": {"e": 1}},
        )
    ctx = _context(worker, settings, worker_batch=1, drain_lanes=3)
    assert await worker_main.drain({**ctx}) == 3 * len(pairs)
    for user, _ in pairs:
        assert await worker.profile(env.id, user) == {"theme": "light", "src": "ads", "e": 1}


async def test_the_cache_verifier_waits_while_the_inbox_has_a_backlog(
    worker: Worker, env: EnvironmentKeys, settings: Settings
) -> None:
    """A full drain round marks a backlog; the verifier's slice waits until none has been full
    for BACKLOG_QUIET_SECONDS, then repairs what it finds."""
    await worker.send(env.id, *({"type": "identify", "userId": f"b{i}"} for i in range(3)))
    ctx = _context(worker, settings, worker_batch=2, drain_lanes=1)
    assert await worker_main.drain({**ctx}) == 3
    assert ctx["backlog"].recent()  # its first round was full
    ghost = f"{worker.cache.prefix}:m:{{{env.id}:nobody-{env.id}}}"
    await worker.cache.redis.sadd(ghost, "_3", "1")  # type: ignore[misc]
    assert await worker_main.verify_cache({**ctx}) == 0
    assert await worker.cache.redis.exists(ghost)
    ctx["backlog"].seen -= worker_main.BACKLOG_QUIET_SECONDS
    for _ in range(100):  # slices until the round reaches the ghost's set
        if await worker_main.verify_cache({**ctx}):
            break
    assert not await worker.cache.redis.exists(ghost)
