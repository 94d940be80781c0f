"""The time pass evaluates only the users whose answer can have changed by time alone since
the segment's last pass, and ends where a pass over every user would."""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta
from typing import Any

from services.worker.timed import TimePass, recheck_timed_segments
from shared.attribute_types import load_types
from shared.conditions import compile_sql, parse_condition
from shared.environments import EnvironmentKeys
from shared.membership import recompute_with_dependents
from shared.membership.graph import segment_names
from tests.worker.conftest import Worker
from tests.worker.test_segments import _segment
from tests.worker.test_time import _changes, new_and_new_pro


async def _pass(worker: Worker, env_id: int, now: datetime) -> TimePass:
    return await recheck_timed_segments(
        worker.pool, worker.cache, worker.catalog, now, env_id=env_id
    )


async def _datetimes(worker: Worker, env_id: int, *names: str) -> None:
    await worker.pool.execute(
        """INSERT INTO attribute_types (env_id, scope, name, type, declared)
           SELECT $1, 'user', n, 'datetime', true FROM unnest($2::text[]) AS n""",
        env_id,
        list(names),
    )


async def _identify(worker: Worker, env_id: int, **traits: dict[str, Any]) -> None:
    await worker.send(
        env_id,
        *({"type": "identify", "userId": user, "traits": t} for user, t in traits.items()),
    )
    await worker.drain()


async def test_a_pass_evaluates_only_the_users_whose_answer_can_have_changed(
    worker: Worker, env: EnvironmentKeys
) -> None:
    await new_and_new_pro(worker, env.id)
    await _datetimes(worker, env.id, "signed_up")
    now = datetime.now(UTC)
    day = timedelta(days=1)
    await _identify(
        worker,
        env.id,
        leaving={"signed_up": (now - day + timedelta(minutes=20)).isoformat(), "plan": "pro"},
        staying={"signed_up": (now - timedelta(hours=2)).isoformat(), "plan": "pro"},
        out={"signed_up": (now - 5 * day).isoformat()},
        epoch={"signed_up": int((now - 3 * day).timestamp())},
    )
    first = await _pass(worker, env.id, now)
    assert (first.segments, first.whole, first.targeted) == (1, 1, 0)  # no mark: every user

    later = await _pass(worker, env.id, now + timedelta(minutes=30))
    # one user evaluated for "new"; new-pro, built on it, recomputed after it
    assert (later.segments, later.targeted, later.evaluated, later.whole) == (1, 1, 1, 1)
    assert (later.entered, later.exited) == (0, 2)
    assert await worker.segments_of(env.id, "leaving") == {"all-users"}
    assert await worker.segments_of(env.id, "staying") == {"all-users", "new", "new-pro"}
    assert [c for c in await _changes(worker, env.id) if c[2] == "time"] == [
        ("new", False, "time"),
        ("new-pro", False, "time"),
    ]
    members = await worker.cache.get(env.id, "leaving")
    assert members is not None and len(members) == 1  # Redis followed

    quiet = await _pass(worker, env.id, now + timedelta(minutes=31))
    assert (quiet.segments, quiet.whole, quiet.targeted, quiet.evaluated) == (1, 0, 1, 0)
    assert (quiet.entered, quiet.exited) == (0, 0)


async def test_more_than_days_ago_enters_at_its_instant(
    worker: Worker, env: EnvironmentKeys
) -> None:
    await _segment(
        worker, env.id, "idle", {"attribute": "seen", "op": "more_than_days_ago", "value": 30}
    )
    now = datetime.now(UTC)
    month = timedelta(days=30)
    await _datetimes(worker, env.id, "seen")
    await _identify(
        worker,
        env.id,
        soon={"seen": (now - month + timedelta(minutes=10)).isoformat()},
        later={"seen": (now - month + timedelta(hours=3)).isoformat()},
        gone={"seen": (now - 2 * month).isoformat()},
    )
    await _pass(worker, env.id, now)
    done = await _pass(worker, env.id, now + timedelta(minutes=15))
    assert (done.whole, done.evaluated, done.entered, done.exited) == (0, 1, 1, 0)
    assert await worker.segments_of(env.id, "soon") == {"all-users", "idle"}
    assert await worker.segments_of(env.id, "later") == {"all-users"}
    assert await worker.segments_of(env.id, "gone") == {"all-users", "idle"}


async def test_a_company_date_moves_the_users_of_that_company(
    worker: Worker, env: EnvironmentKeys
) -> None:
    await worker.pool.execute(
        """INSERT INTO attribute_types (env_id, scope, name, type, declared)
           VALUES ($1, 'company', 'renewed', 'datetime', true)""",
        env.id,
    )
    await _segment(
        worker,
        env.id,
        "renewed",
        {"attribute": "renewed", "scope": "company", "op": "within_last_days", "value": 1},
    )
    now = datetime.now(UTC)
    soon = now - timedelta(days=1) + timedelta(minutes=10)
    await worker.send(
        env.id,
        {
            "type": "group",
            "userId": "u",
            "groupId": "acme",
            "traits": {"renewed": soon.isoformat()},
        },
        {
            "type": "group",
            "userId": "v",
            "groupId": "other",
            "traits": {"renewed": (now - timedelta(hours=2)).isoformat()},
        },
    )
    await worker.drain()
    await _pass(worker, env.id, now)
    assert await worker.segments_of(env.id, "u") == {"all-users", "renewed"}
    done = await _pass(worker, env.id, now + timedelta(minutes=15))
    assert (done.whole, done.evaluated, done.exited) == (0, 1, 1)
    assert await worker.segments_of(env.id, "u") == {"all-users"}
    assert await worker.segments_of(env.id, "v") == {"all-users", "renewed"}


async def test_an_event_window_moves_when_the_utc_date_changes(
    worker: Worker, env: EnvironmentKeys
) -> None:
    await _segment(
        worker,
        env.id,
        "active",
        {"event": "Login", "op": "gte", "value": 1, "withinDays": 2},
    )
    now = datetime.now(UTC)
    await worker.send(
        env.id,
        {"type": "track", "userId": "today", "event": "Login"},
        {"type": "track", "userId": "old", "event": "Login", "timestamp": "2020-01-01T00:00:00Z"},
        {"type": "identify", "userId": "quiet", "traits": {}},
    )
    await worker.drain()
    day = await worker.pool.fetchval(
        """SELECT day FROM event_counts c JOIN users u ON u.env_id = c.env_id AND u.id = c.user_pk
           WHERE c.env_id = $1 AND u.user_id = 'today'""",
        env.id,
    )
    assert await worker.segments_of(env.id, "today") == {"all-users", "active"}
    # the Login's day and the next stay in a two-day window; the day after that ends it
    evening = datetime.combine(day + timedelta(days=1), time(23, 58), UTC)
    await _pass(worker, env.id, max(now, evening - timedelta(minutes=30)))
    same_day = await _pass(worker, env.id, evening)
    assert (same_day.whole, same_day.evaluated) == (0, 0)
    assert await worker.segments_of(env.id, "today") == {"all-users", "active"}
    midnight = await _pass(worker, env.id, evening + timedelta(minutes=4))
    assert (midnight.whole, midnight.evaluated, midnight.exited) == (0, 1, 1)
    assert await worker.segments_of(env.id, "today") == {"all-users"}
    assert ("active", False, "time") in await _changes(worker, env.id)


async def test_a_changed_definition_gets_a_pass_over_every_user(
    worker: Worker, env: EnvironmentKeys
) -> None:
    seg = await _segment(
        worker, env.id, "new", {"attribute": "signed_up", "op": "within_last_days", "value": 1}
    )
    now = datetime.now(UTC)
    await _identify(worker, env.id, u={"signed_up": (now - timedelta(hours=1)).isoformat()})
    await _pass(worker, env.id, now)
    assert (await _pass(worker, env.id, now + timedelta(minutes=1))).whole == 0
    await worker.pool.execute(
        """UPDATE segments SET conditions = $3, version = version + 1
           WHERE env_id = $1 AND id = $2""",
        env.id,
        seg,
        {"attribute": "signed_up", "op": "within_last_days", "value": 2},
    )
    await recompute_with_dependents(worker.pool, worker.cache, env.id, seg, now)
    assert (await _pass(worker, env.id, now + timedelta(minutes=2))).whole == 1
    assert (await _pass(worker, env.id, now + timedelta(minutes=3))).whole == 0
    # a requested recompute (the data under the segment changed) moves the generation
    await worker.pool.execute(
        "UPDATE segments SET status = 'computing' WHERE env_id = $1 AND id = $2", env.id, seg
    )
    assert (await _pass(worker, env.id, now + timedelta(minutes=4))).whole == 1
    # and so does a long time without a pass
    assert (await _pass(worker, env.id, now + timedelta(hours=7))).whole == 1


_DAY = timedelta(days=1)


def _moment(rng: random.Random, at: datetime) -> Any:
    """``at`` written one of the ways a datetime attribute may be stored."""
    form = rng.randrange(5)
    if form == 0:
        return at.isoformat()
    if form == 1:
        return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if form == 2:
        return int(at.timestamp())  # epoch seconds
    if form == 3:
        return int(at.timestamp() * 1000)  # epoch milliseconds
    return at.date().isoformat()


async def _from_scratch(worker: Worker, env_id: int, now: datetime) -> dict[str, set[int]]:
    """Every dynamic segment's members at ``now`` by its SQL, over every user (the segments
    it refers to as stored)."""
    out: dict[str, set[int]] = {}
    async with worker.pool.acquire() as conn:
        types = await load_types(conn, env_id)
        names = await segment_names(conn, env_id)
        for seg in await conn.fetch(
            "SELECT key, conditions FROM segments WHERE env_id = $1 AND kind = 'dynamic'",
            env_id,
        ):
            where, params = compile_sql(
                parse_condition(seg["conditions"], types),
                first_param=3,
                now_param=2,
                types=types,
                segments=names,
            )
            rows = await conn.fetch(
                f"""SELECT id FROM users u
                    WHERE env_id = $1 AND $2::timestamptz IS NOT NULL AND {where}""",
                env_id,
                now,
                *params,
            )
            out[seg["key"]] = {r["id"] for r in rows}
    return out


async def _stored(worker: Worker, env_id: int) -> dict[str, set[int]]:
    rows = await worker.pool.fetch(
        """SELECT s.key, m.user_pk FROM segments s
           LEFT JOIN memberships m ON m.env_id = s.env_id AND m.segment_id = s.id
           WHERE s.env_id = $1 AND s.kind = 'dynamic'""",
        env_id,
    )
    out: dict[str, set[int]] = {}
    for r in rows:
        out.setdefault(r["key"], set())
        if r["user_pk"] is not None:
            out[r["key"]].add(r["user_pk"])
    return out


async def test_targeted_passes_end_where_a_pass_over_every_user_would(
    worker: Worker, env: EnvironmentKeys
) -> None:
    """Random users around the segments' instants, passes at random later times (some
    across a UTC midnight): after each, the stored members are what each segment's SQL
    gives over every user at that time."""
    rng = random.Random(20261201)
    start = datetime.combine(datetime.now(UTC).date(), time(21, 0), UTC) + 3 * _DAY
    await _datetimes(worker, env.id, "a", "b")
    await _segment(
        worker, env.id, "recent", {"attribute": "a", "op": "within_last_days", "value": 2}
    )
    await _segment(
        worker,
        env.id,
        "lapsed",
        {
            "any": [
                {"attribute": "b", "op": "more_than_days_ago", "value": 1},
                {"attribute": "a", "op": "within_last_days", "value": 0},
            ]
        },
    )
    await _segment(
        worker,
        env.id,
        "busy",
        {
            "all": [
                {"event": "E", "op": "gte", "value": 2, "withinDays": 1},
                {"none": [{"attribute": "b", "op": "within_last_days", "value": 3}]},
            ]
        },
    )
    await _segment(
        worker,
        env.id,
        "mixed",
        {"any": [{"segment": "recent"}, {"event": "E", "op": "lt", "value": 1, "withinDays": 2}]},
    )
    await _segment(worker, env.id, "plain", {"none": [{"segment": "lapsed"}]})
    users = {}
    for i in range(300):
        traits: dict[str, Any] = {}
        for name, days in (("a", 2), ("b", 1)):
            if rng.random() < 0.85:
                offset = timedelta(minutes=rng.randrange(-600, 900))
                anchor = start - days * _DAY if rng.random() < 0.7 else start
                traits[name] = _moment(rng, anchor + offset)
        users[f"u{i}"] = traits
    await _identify(worker, env.id, **users)
    pks = await worker.pool.fetch(
        "SELECT id FROM users WHERE env_id = $1 AND user_id IS NOT NULL", env.id
    )
    event_days = [start.date() - timedelta(days=d) for d in range(-1, 4)]
    await worker.pool.execute(
        """INSERT INTO event_counts (env_id, user_pk, name, day, count)
           SELECT $1, pk, 'E', day, n FROM unnest($2::bigint[], $3::date[], $4::int[])
                  AS r(pk, day, n)
           ON CONFLICT DO NOTHING""",
        env.id,
        [r["id"] for r in pks for _ in range(2)],
        [rng.choice(event_days) for _ in range(2 * len(pks))],
        [rng.randrange(1, 3) for _ in range(2 * len(pks))],
    )

    now = start
    await _pass(worker, env.id, now)
    targeted = evaluated = 0
    for _ in range(12):
        now += timedelta(minutes=rng.randrange(1, 120))
        done = await _pass(worker, env.id, now)
        targeted += done.targeted
        evaluated += done.evaluated
        assert await _stored(worker, env.id) == await _from_scratch(worker, env.id, now), now
    assert targeted >= 12  # three timed segments, twelve passes, a few over every user
    assert evaluated < targeted * len(users) / 4
