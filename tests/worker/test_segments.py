"""Incremental evaluation in the worker for every kind of leaf: composition in dependency
order within one batch, tags, companies, events (with per-day counts kept across merges),
and attribute types with their warnings."""

from __future__ import annotations

from typing import Any

from shared.environments import EnvironmentKeys
from tests.worker.conftest import Worker

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:01:00Z"


async def _segment(
    worker: Worker, env_id: int, key: str, conditions: Any, kind: str = "dynamic"
) -> int:
    seg_id: int = await worker.pool.fetchval(
        """INSERT INTO segments (env_id, key, name, kind, conditions)
           VALUES ($1, $2, $2, $3, $4) RETURNING id""",
        env_id,
        key,
        kind,
        conditions,
    )
    return seg_id


async def test_composition_chain_updates_in_the_same_batch(
    worker: Worker, env: EnvironmentKeys
) -> None:
    # created in reverse dependency order, so id order is not evaluation order
    await _segment(
        worker, env.id, "c", {"all": [{"segment": "b"}, {"attribute": "x", "op": "is", "value": 1}]}
    )
    await _segment(
        worker, env.id, "b", {"all": [{"segment": "a"}, {"attribute": "y", "op": "is", "value": 1}]}
    )
    await _segment(worker, env.id, "a", {"attribute": "plan", "op": "is", "value": "pro"})
    await worker.send(
        env.id,
        {
            "type": "identify",
            "userId": "u",
            "timestamp": T0,
            "traits": {"plan": "pro", "x": 1, "y": 1},
        },
    )
    await worker.drain()
    assert await worker.segments_of(env.id, "u") == {"all-users", "a", "b", "c"}
    await worker.send(
        env.id, {"type": "identify", "userId": "u", "timestamp": T1, "traits": {"plan": "free"}}
    )
    await worker.drain()
    assert await worker.segments_of(env.id, "u") == {"all-users"}


async def test_manual_segment_feeds_a_dynamic_one(worker: Worker, env: EnvironmentKeys) -> None:
    await _segment(worker, env.id, "beta", None, kind="manual")
    await _segment(
        worker,
        env.id,
        "beta-pro",
        {"all": [{"segment": "beta"}, {"attribute": "plan", "op": "is", "value": "pro"}]},
    )
    await worker.send(
        env.id, {"type": "identify", "userId": "u", "traits": {"plan": "pro"}, "segments": ["beta"]}
    )
    await worker.drain()
    assert await worker.segments_of(env.id, "u") == {"all-users", "beta", "beta-pro"}


async def test_an_anonymous_profiles_manual_segments_move_to_the_identified_user(
    worker: Worker, env: EnvironmentKeys
) -> None:
    await _segment(worker, env.id, "course", None, kind="manual")
    await worker.send(env.id, {"type": "identify", "anonymousId": "anon-m", "segments": ["course"]})
    await worker.drain()
    await worker.send(env.id, {"type": "identify", "userId": "known", "traits": {"a": 1}})
    await worker.drain()
    assert await worker.segments_of(env.id, "known") == {"all-users"}
    # the merge comes in a later batch than the anonymous profile's manual segment
    await worker.send(env.id, {"type": "identify", "userId": "known", "anonymousId": "anon-m"})
    await worker.drain()
    assert await worker.segments_of(env.id, "known") == {"all-users", "course"}
    assert not await worker.pool.fetchval(
        """SELECT count(*) FROM memberships m
           WHERE m.env_id = $1 AND NOT EXISTS
             (SELECT 1 FROM users u WHERE u.env_id = m.env_id AND u.id = m.user_pk)""",
        env.id,
    )


async def test_tag_conditions(worker: Worker, env: EnvironmentKeys) -> None:
    await _segment(
        worker,
        env.id,
        "dallas-sales",
        {
            "all": [
                {"tag": {"key": "Department", "value": "Sales"}},
                {"tag": {"key": "Location", "value": "Dallas"}},
            ]
        },
    )
    await _segment(worker, env.id, "has-dept", {"tag": {"key": "Department"}})
    await worker.send(
        env.id,
        {
            "type": "identify",
            "userId": "u",
            "timestamp": T0,
            "tags": ["Department:Sales", "Location:Dallas"],
        },
    )
    await worker.drain()
    assert await worker.segments_of(env.id, "u") == {"all-users", "dallas-sales", "has-dept"}
    # a message with no tag operation still sees the stored tags
    await worker.send(
        env.id,
        {
            "type": "identify",
            "userId": "u",
            "timestamp": T1,
            "traits": {"a": 1},
            "tags": ["~Location"],
        },
    )
    await worker.drain()
    assert await worker.segments_of(env.id, "u") == {"all-users", "has-dept"}


async def test_company_conditions(worker: Worker, env: EnvironmentKeys) -> None:
    await _segment(
        worker, env.id, "big", {"attribute": "seats", "scope": "company", "op": "gte", "value": 50}
    )
    await worker.send(
        env.id,
        {"type": "group", "userId": "u", "groupId": "small", "traits": {"seats": 5}},
        {"type": "group", "userId": "v", "groupId": "acme", "traits": {"seats": 80}},
    )
    await worker.drain()
    assert await worker.segments_of(env.id, "u") == {"all-users"}
    assert await worker.segments_of(env.id, "v") == {"all-users", "big"}
    await worker.send(env.id, {"type": "group", "userId": "u", "groupId": "acme"})
    await worker.drain()
    assert await worker.segments_of(env.id, "u") == {"all-users", "big"}


async def test_event_conditions_and_counts_across_a_merge(
    worker: Worker, env: EnvironmentKeys
) -> None:
    await _segment(worker, env.id, "clicker", {"event": "Clicked Upgrade", "op": "gte", "value": 3})
    await _segment(
        worker,
        env.id,
        "never",
        {"event": "Clicked Upgrade", "op": "is", "value": 0, "withinDays": 30},
    )
    await worker.send(
        env.id,
        *[
            {"type": "track", "anonymousId": "ev-anon", "event": "Clicked Upgrade"}
            for _ in range(2)
        ],
    )
    await worker.drain()
    await worker.send(env.id, {"type": "identify", "userId": "ev", "traits": {"a": 1}})
    await worker.drain()
    assert await worker.segments_of(env.id, "ev") == {"all-users", "never"}
    await worker.send(
        env.id,
        {"type": "identify", "userId": "ev", "anonymousId": "ev-anon"},
        {"type": "track", "userId": "ev", "event": "Clicked Upgrade"},
    )
    await worker.drain()
    assert await worker.segments_of(env.id, "ev") == {"all-users", "clicker"}
    counts = await worker.pool.fetch(
        """SELECT c.count FROM event_counts c
           JOIN users u ON u.env_id = c.env_id AND u.id = c.user_pk
           WHERE c.env_id = $1 AND u.user_id = 'ev'""",
        env.id,
    )
    assert sum(r["count"] for r in counts) == 3
    assert await worker.pool.fetchval(
        "SELECT count(*) FROM event_counts WHERE env_id = $1", env.id
    ) == len(counts)


async def test_types_are_inferred_and_misfits_warned(worker: Worker, env: EnvironmentKeys) -> None:
    await worker.send(
        env.id,
        {
            "type": "identify",
            "userId": "u",
            "timestamp": T0,
            "traits": {"seats": 5, "signed": "2026-01-01T00:00:00Z", "plan": "pro"},
        },
    )
    await worker.drain()
    types = {
        r["name"]: r["type"]
        for r in await worker.pool.fetch(
            "SELECT name, type FROM attribute_types WHERE env_id = $1", env.id
        )
    }
    assert types == {"seats": "number", "signed": "datetime", "plan": "string"}
    await _segment(worker, env.id, "many", {"attribute": "seats", "op": "gt", "value": 1})
    await worker.send(
        env.id, {"type": "identify", "userId": "u", "timestamp": T1, "traits": {"seats": "lots"}}
    )
    await worker.drain()
    warnings = await worker.pool.fetch(
        "SELECT attribute, warning FROM ingest_warnings WHERE env_id = $1", env.id
    )
    assert [w["attribute"] for w in warnings] == ["seats"]
    assert await worker.profile(env.id, "u") == {
        "seats": "lots",
        "signed": "2026-01-01T00:00:00Z",
        "plan": "pro",
    }
    assert await worker.segments_of(env.id, "u") == {"all-users"}  # a misfit counts as missing


async def test_catalog_is_rebuilt_exactly_when_a_definition_or_type_changes(
    worker: Worker, env: EnvironmentKeys
) -> None:
    """The worker reads a digest per batch and rebuilds its compiled segments only when it
    moves: a new segment, a new version of one, a renamed key, a new or corrected type."""
    seg = await _segment(worker, env.id, "pro", {"attribute": "plan", "op": "is", "value": "pro"})
    catalog = worker.catalog
    async with worker.pool.acquire() as conn:
        first = await catalog.load(conn, env.id)
        assert await catalog.load(conn, env.id) is first  # nothing changed: the same object
        assert [s.key for s in first.dynamic] == ["pro"]

        await conn.execute(
            """UPDATE segments SET conditions = $2, version = version + 1 WHERE id = $1""",
            seg,
            {"attribute": "plan", "op": "is", "value": "team"},
        )
        edited = await catalog.load(conn, env.id)
        assert edited is not first
        assert edited.dynamic[0].version == first.dynamic[0].version + 1
        assert edited.dynamic[0].predicate is not first.dynamic[0].predicate

        await conn.execute("UPDATE segments SET key = 'team' WHERE id = $1", seg)
        renamed = await catalog.load(conn, env.id)
        assert [s.key for s in renamed.dynamic] == ["team"]

        await conn.execute(
            """INSERT INTO attribute_types (env_id, scope, name, type)
               VALUES ($1, 'user', 'plan', 'string')""",
            env.id,
        )
        typed = await catalog.load(conn, env.id)
        assert typed is not renamed and typed.types == {"plan": "string"}
        await conn.execute(
            "UPDATE attribute_types SET type = 'number' WHERE env_id = $1 AND name = 'plan'",
            env.id,
        )
        corrected = await catalog.load(conn, env.id)
        assert corrected.types == {"plan": "number"}
        # 'team' can't be a number: the segment no longer compiles and matches nobody
        assert corrected.dynamic == ()

        await _segment(worker, env.id, "big", {"attribute": "n", "op": "gt", "value": 1})
        added = await catalog.load(conn, env.id)
        assert [s.key for s in added.dynamic] == ["big"]
        assert await catalog.load(conn, env.id) is added
