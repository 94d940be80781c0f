"""Incremental and bulk membership agree: random identify streams are drained by the worker
(which evaluates the touched users in Python, batch by batch), then every dynamic segment is
recomputed in bulk by SQL; the bulk recompute must find nothing to change, and the Redis sets
must match PostgreSQL."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.worker import apply
from shared.conditions import parse_condition, referenced_segments
from shared.environments import EnvironmentKeys
from shared.membership import recompute_segment
from shared.membership.graph import dependency_order
from shared.redis_keys import anonymous
from tests.worker.conftest import Worker
from tests.worker.test_segments import _segment

NOW = datetime.now(UTC)
PLANS = ["free", "pro", "Pro", "enterprise", "trial"]
ROLES = ["admin", "editor", "viewer"]

# Every kind of leaf, nested groups and a chain of references. Created before the data, so
# that the worker evaluates them all incrementally.
SEGMENTS: list[tuple[str, Any]] = [
    ("pro", {"attribute": "plan", "op": "in", "value": ["pro", "enterprise"], "ci": True}),
    ("big", {"attribute": "seats", "op": "gte", "value": 50}),
    ("fresh", {"attribute": "signed_up", "op": "within_last_days", "value": 30}),
    ("old", {"attribute": "signed_up", "op": "more_than_days_ago", "value": 90}),
    ("admins", {"attribute": "roles", "op": "includes_any", "value": ["admin"]}),
    ("named", {"attribute": "name", "op": "contains", "value": "an", "ci": True}),
    ("no-email", {"attribute": "email", "op": "is_not_set"}),
    ("sales", {"tag": {"key": "Department", "value": "Sales"}}),
    ("any-dept", {"tag": {"key": "Department"}}),
    ("clicker", {"event": "Clicked", "op": "gte", "value": 2, "withinDays": 7}),
    ("never-clicked", {"event": "Clicked", "op": "is", "value": 0}),
    ("big-company", {"attribute": "employees", "scope": "company", "op": "gt", "value": 100}),
    ("half", {"bucket": {"seed": "exp-1", "from": 0, "to": 50}}),
    ("pro-big", {"all": [{"segment": "pro"}, {"segment": "big"}]}),
    ("pro-big-or-sales", {"any": [{"segment": "pro-big"}, {"segment": "sales"}]}),
    (
        "mixed",
        {
            "any": [
                {"none": [{"segment": "pro"}, {"attribute": "beta", "op": "is", "value": True}]},
                {"all": [{"segment": "admins"}, {"segment": "clicker"}]},
            ]
        },
    ),
]


TYPES = [
    ("user", "plan", "string"),
    ("user", "seats", "number"),
    ("user", "signed_up", "datetime"),
    ("user", "roles", "list"),
    ("user", "name", "string"),
    ("user", "email", "string"),
    ("user", "beta", "boolean"),
    ("company", "employees", "number"),
]


def _iso(days_ago: float) -> str:
    return (NOW - timedelta(days=days_ago)).isoformat()


def _traits(rng: random.Random) -> dict[str, Any]:
    """A few random traits; dates keep clear of the segments' boundaries (no flakiness)."""
    pool: dict[str, Any] = {
        "plan": lambda: rng.choice([*PLANS, None]),
        "seats": lambda: rng.choice(
            [rng.randrange(0, 100), str(rng.randrange(0, 100)), {"add": rng.randrange(-20, 40)}]
        ),
        "signed_up": lambda: rng.choice(
            [_iso(rng.choice([1, 10, 60, 200])), int((NOW - timedelta(days=5)).timestamp()), "soon"]
        ),
        "roles": lambda: rng.choice(
            [
                rng.sample(ROLES, rng.randrange(0, 3)),
                {"append": [rng.choice(ROLES)]},
                {"remove": ["admin"]},
            ]
        ),
        "name": lambda: rng.choice(["Ann", "JAN", "Bob", "Zoë", 42]),
        "email": lambda: rng.choice([f"x{rng.randrange(9)}@example.com", {"unset": True}]),
        "beta": lambda: rng.choice([True, False, "true", {"set_once": True}]),
    }
    return {k: make() for k, make in rng.sample(list(pool.items()), rng.randrange(1, 5))}


def _stream(rng: random.Random, size: int) -> list[dict[str, Any]]:
    """Identify / track / group messages over a few users, some anonymous then identified,
    timestamps shuffled (late messages must not roll a value back)."""
    users = [f"user-{i}" for i in range(25)]
    anons = [f"anon-{i}" for i in range(8)]
    out: list[dict[str, Any]] = []
    for n in range(size):
        at = (NOW - timedelta(minutes=size - n + rng.choice([0, 0, 0, 30]))).isoformat()
        kind = rng.choices(["identify", "track", "group", "alias"], weights=[10, 4, 2, 1])[0]
        who: dict[str, Any]
        if rng.random() < 0.2:
            who = {"anonymousId": rng.choice(anons)}
            if kind == "identify" and rng.random() < 0.3:
                who["userId"] = rng.choice(users)
        else:
            who = {"userId": rng.choice(users)}
        msg: dict[str, Any] = {"type": kind, "timestamp": at, **who}
        if kind == "identify":
            msg["traits"] = _traits(rng)
            if rng.random() < 0.3:
                msg["tags"] = [
                    rng.choice(
                        ["Department:Sales", "Department:Eng", "~Department:Sales", "~Department"]
                    )
                ]
        elif kind == "track":
            msg["event"] = rng.choice(["Clicked", "Viewed"])
        elif kind == "group":
            msg.update(userId=rng.choice(users), anonymousId=None)
            msg["groupId"] = rng.choice(["acme", "globex", "initech"])
            msg["traits"] = {"employees": rng.choice([10, 150, "500", None])}
        else:
            msg = {"type": "alias", "timestamp": at, "userId": rng.choice(users)}
            msg["previousId"] = rng.choice(anons)
        out.append(msg)
    return out


async def _memberships(worker: Worker, env_id: int) -> dict[int, set[int]]:
    rows = await worker.pool.fetch(
        "SELECT segment_id, user_pk FROM memberships WHERE env_id = $1", env_id
    )
    out: dict[int, set[int]] = {}
    for r in rows:
        out.setdefault(r["segment_id"], set()).add(r["user_pk"])
    return out


@pytest.mark.parametrize("seed", range(6))
async def test_bulk_recompute_agrees_with_the_worker(
    worker: Worker, env: EnvironmentKeys, seed: int
) -> None:
    rng = random.Random(seed)
    # declared types, as an admin would: the first value seen must not decide them here
    await worker.pool.executemany(
        """INSERT INTO attribute_types (env_id, scope, name, type, declared)
           VALUES ($1, $2, $3, $4, true)""",
        [(env.id, scope, name, kind) for scope, name, kind in TYPES],
    )
    ids = {key: await _segment(worker, env.id, key, cond) for key, cond in SEGMENTS}
    stream = _stream(rng, 400)
    for start in range(0, len(stream), 60):  # several sends and batches of varied size
        await worker.send(env.id, *stream[start : start + 60])
        await worker.drain(batch=rng.choice([7, 50, 1000]))
    incremental = await _memberships(worker, env.id)
    assert sum(len(incremental.get(s, ())) for s in ids.values()) > 50  # the data matters

    refs = {ids[k]: {ids[r] for r in referenced_segments(parse_condition(c))} for k, c in SEGMENTS}
    for segment_id in dependency_order(refs):
        result = await recompute_segment(worker.pool, worker.cache, env.id, segment_id, NOW)
        assert result is not None
        key = next(k for k, v in ids.items() if v == segment_id)
        assert (key, result.entered, result.exited) == (key, 0, 0)
    assert await _memberships(worker, env.id) == incremental

    # Redis says the same as PostgreSQL for every identified user
    users = await worker.pool.fetch(
        "SELECT id, user_id FROM users WHERE env_id = $1 AND user_id IS NOT NULL", env.id
    )
    for user in users:
        cached = await worker.cache.get(env.id, user["user_id"])
        stored = {s for s, members in incremental.items() if user["id"] in members}
        assert cached is None or cached == stored, user["user_id"]


BIG = {"attribute": "employees", "scope": "company", "op": "gt", "value": 100}


async def _join(worker: Worker, env_id: int, user: str, employees: int) -> None:
    await worker.send(
        env_id,
        {"type": "group", "userId": user, "groupId": "acme", "traits": {"employees": employees}},
    )
    await worker.drain()


async def test_a_company_change_reaches_its_other_members(
    worker: Worker, env: EnvironmentKeys
) -> None:
    seg = await _segment(worker, env.id, "big-co", BIG)
    for user in ("a", "b", "c"):
        await _join(worker, env.id, user, 10)
    assert await worker.segments_of(env.id, "b") == {"all-users"}
    await _join(worker, env.id, "a", 500)  # only a sends; b and c are in the same company
    for user in ("a", "b", "c"):
        assert await worker.segments_of(env.id, user) == {"all-users", "big-co"}, user
        assert seg in (await worker.cache.get(env.id, user) or set()), user
    changes = await worker.pool.fetchval(
        "SELECT count(*) FROM membership_changes WHERE env_id = $1 AND segment_id = $2",
        env.id,
        seg,
    )
    assert changes == 3
    await _join(worker, env.id, "c", 500)  # the same value again changes nothing
    await _join(worker, env.id, "b", 20)
    for user in ("a", "b", "c"):
        assert await worker.segments_of(env.id, user) == {"all-users"}, user


async def test_a_huge_company_change_goes_to_a_bulk_recompute(
    worker: Worker, env: EnvironmentKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    seg = await _segment(worker, env.id, "big-co", BIG)
    other = await _segment(worker, env.id, "plain", {"attribute": "x", "op": "is", "value": 1})
    for user in ("a", "b", "c"):
        await _join(worker, env.id, user, 10)
    await worker.pool.execute("UPDATE segments SET status = 'ready' WHERE env_id = $1", env.id)
    monkeypatch.setattr(apply, "NEIGHBOURS_INLINE", 1)
    await _join(worker, env.id, "a", 500)
    rows = await worker.pool.fetch(
        "SELECT id, status FROM segments WHERE env_id = $1 AND id = ANY($2)", env.id, [seg, other]
    )
    status = {r["id"]: r["status"] for r in rows}
    assert status == {seg: "computing", other: "ready"}
    assert await worker.segments_of(env.id, "b") == {"all-users"}  # not yet
    await recompute_segment(worker.pool, worker.cache, env.id, seg, NOW)  # as the sweep does
    for user in ("a", "b", "c"):
        assert await worker.segments_of(env.id, user) == {"all-users", "big-co"}, user


async def test_every_key_of_a_profile_follows_its_memberships(
    worker: Worker, env: EnvironmentKeys
) -> None:
    """A later message by userId alone still refreshes the anonymous ids' keys."""
    seg = await _segment(worker, env.id, "pro", {"attribute": "plan", "op": "is", "value": "pro"})
    await worker.send(env.id, {"type": "identify", "anonymousId": "anon-k", "traits": {}})
    await worker.drain()
    await worker.send(env.id, {"type": "identify", "anonymousId": "anon-k", "userId": "k"})
    await worker.drain()
    assert seg not in (await worker.cache.get(env.id, anonymous("anon-k")) or {seg})
    await worker.send(env.id, {"type": "identify", "userId": "k", "traits": {"plan": "pro"}})
    await worker.drain()
    for key in ("k", anonymous("anon-k")):
        assert seg in (await worker.cache.get(env.id, key) or set()), key
