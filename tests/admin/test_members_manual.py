"""Manual segment members through the admin API: by userId and email, one or thousands per
call, with the change log, webhook outbox, membership versions, Redis sets and dependents."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from shared.environments import EnvironmentKeys
from shared.membership.cache import parse_members
from shared.messages import inbox_decoder
from shared.redis_keys import anonymous, membership_key
from shared.settings import Settings
from tests.admin.conftest import make_user, queued_recomputes, secret

Client = AsyncTestClient[Any]


@pytest.fixture
def admin(quiet_admin: Client) -> Client:
    return quiet_admin


async def _segment(admin: Client, env: EnvironmentKeys, key: str, **extra: Any) -> dict[str, Any]:
    body = {"name": key, "key": key, "kind": "manual"} | extra
    resp = await admin.post("/v1/segments", json=body, headers=secret(env))
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


async def _members(
    admin: Client, env: EnvironmentKeys, seg: str, body: Any, add: bool = True
) -> Any:
    resp = await admin.request(
        "POST" if add else "DELETE",
        f"/v1/segments/{seg}/members",
        content=msgspec.json.encode(body),
        headers=secret(env) | {"content-type": "application/json"},
    )
    return resp


async def _member_pks(db: asyncpg.Pool, env: EnvironmentKeys, seg_id: str) -> set[int]:
    rows = await db.fetch(
        "SELECT user_pk FROM memberships WHERE env_id = $1 AND segment_id = $2",
        env.id,
        int(seg_id),
    )
    return {r["user_pk"] for r in rows}


async def _redis_set(
    redis: aioredis.Redis, settings: Settings, env: EnvironmentKeys, ident: str
) -> tuple[int | None, set[int]]:
    members = await redis.smembers(membership_key(settings.redis_prefix, env.id, ident))  # type: ignore[misc]
    return parse_members(members)


async def test_add_by_user_id_email_and_anonymous_id(
    admin: Client,
    env: EnvironmentKeys,
    db: asyncpg.Pool,
    redis: aioredis.Redis,
    quiet_settings: Settings,
) -> None:
    beta = await _segment(admin, env, "beta")
    ann = await make_user(db, env, "ann", {"email": "Ann@Example.com"})
    bob = await make_user(db, env, "bob", {"email": "bob@example.com"})
    anon = await make_user(db, env, None, anonymous_ids=("anon-1",))
    await make_user(db, env, "carl")

    resp = await _members(
        admin,
        env,
        "beta",
        {
            "userIds": ["bob", "anon-1", "bob"],
            "emails": ["ANN@example.COM", "nobody@example.com"],
        },
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "added": 3,
        "removed": 0,
        "created": [],
        "unknownUserIds": [],
        "unknownEmails": ["nobody@example.com"],
    }
    assert await _member_pks(db, env, beta["id"]) == {ann, bob, anon}

    # versions bumped under the lock, and Redis holds the new sets under userId and anon id
    versions = {
        r["id"]: r["membership_version"]
        for r in await db.fetch(
            "SELECT id, membership_version FROM users WHERE env_id = $1", env.id
        )
    }
    assert versions[ann] == versions[bob] == versions[anon] == 2
    for ident in ("ann", "bob", anonymous("anon-1")):
        assert await _redis_set(redis, quiet_settings, env, ident) == (2, {int(beta["id"])})
    assert await _redis_set(redis, quiet_settings, env, "carl") == (None, set())

    # the change log: one entry each, cause admin
    rows = await db.fetch(
        """SELECT user_pk, entered, cause FROM membership_changes
           WHERE env_id = $1 AND segment_id = $2""",
        env.id,
        int(beta["id"]),
    )
    assert sorted((r["user_pk"], r["entered"], r["cause"]) for r in rows) == sorted(
        (pk, True, "admin") for pk in (ann, bob, anon)
    )

    # adding again changes nothing and bumps nobody
    resp = await _members(admin, env, "beta", {"userIds": ["ann", "bob"]})
    assert resp.json()["added"] == 0
    assert (
        await db.fetchval(
            "SELECT membership_version FROM users WHERE env_id = $1 AND id = $2", env.id, ann
        )
        == 2
    )
    resp = await admin.get("/v1/segments/beta", headers=secret(env))
    assert resp.json()["memberCount"] == 3


async def test_unknown_user_ids_are_created_and_evaluated_by_the_worker(
    admin: Client, env: EnvironmentKeys, db: asyncpg.Pool
) -> None:
    beta = await _segment(admin, env, "beta")
    resp = await _members(admin, env, "beta", {"userIds": ["future-1", "future-2", 42]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["added"] == 3
    assert body["created"] == ["42", "future-1", "future-2"]
    rows = await db.fetch(
        """SELECT u.user_id, u.attributes, array_agg(s.key ORDER BY s.key) AS segs
           FROM users u JOIN memberships m ON m.env_id = u.env_id AND m.user_pk = u.id
           JOIN segments s ON s.env_id = m.env_id AND s.id = m.segment_id
           WHERE u.env_id = $1 GROUP BY u.user_id, u.attributes ORDER BY u.user_id""",
        env.id,
    )
    assert [(r["user_id"], r["attributes"], r["segs"]) for r in rows] == [
        (u, {}, ["all-users", "beta"]) for u in ("42", "future-1", "future-2")
    ]
    # an empty identify per created user went into the inbox for the worker's evaluation
    # (a worker of the end-to-end stack may already have applied them)
    waiting = [
        inbox_decoder.decode(r["body"])
        for r in await db.fetch("SELECT body FROM inbox WHERE env_id = $1", env.id)
    ]
    assert all((m.type, m.attributes, m.segments) == ("identify", {}, []) for m in waiting)
    applied = await db.fetchval(
        "SELECT count(*) FROM processed_messages WHERE env_id = $1 AND message_id LIKE 'admin-%'",
        env.id,
    )
    assert len(waiting) + applied == 3
    assert {m.userId for m in waiting} <= {"42", "future-1", "future-2"}
    await db.execute("DELETE FROM inbox WHERE env_id = $1", env.id)
    assert len(await _member_pks(db, env, beta["id"])) == 3


async def test_remove_and_unknowns(
    admin: Client,
    env: EnvironmentKeys,
    db: asyncpg.Pool,
    redis: aioredis.Redis,
    quiet_settings: Settings,
) -> None:
    beta = await _segment(admin, env, "beta")
    other = await _segment(admin, env, "other")
    for u in ("a", "b", "c"):
        await make_user(db, env, u, {"email": f"{u}@x.io"})
    await _members(admin, env, "beta", {"userIds": ["a", "b", "c"]})
    await _members(admin, env, "other", {"userIds": ["a"]})

    resp = await _members(
        admin, env, "beta", {"userIds": ["a", "ghost"], "emails": ["B@X.IO", "z@x.io"]}, add=False
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "added": 0,
        "removed": 2,
        "created": [],
        "unknownUserIds": ["ghost"],
        "unknownEmails": ["z@x.io"],
    }
    assert await db.fetchval("SELECT count(*) FROM users WHERE env_id = $1", env.id) == 3
    version, segs = await _redis_set(redis, quiet_settings, env, "a")
    assert segs == {int(other["id"])} and version == 4
    rows = await db.fetch(
        """SELECT u.user_id, c.entered FROM membership_changes c
           JOIN users u ON u.env_id = c.env_id AND u.id = c.user_pk
           WHERE c.env_id = $1 AND c.segment_id = $2 ORDER BY c.id""",
        env.id,
        int(beta["id"]),
    )
    assert [(r["user_id"], r["entered"]) for r in rows][-2:] in (
        [("a", False), ("b", False)],
        [("b", False), ("a", False)],
    )
    # removing someone not in the segment is not a change
    resp = await _members(admin, env, "beta", {"userIds": ["a"]}, add=False)
    assert resp.json()["removed"] == 0


async def test_thousands_in_one_call(admin: Client, env: EnvironmentKeys, db: asyncpg.Pool) -> None:
    await _segment(admin, env, "csv")
    ids = [f"user-{i:05d}" for i in range(3000)]
    await db.execute(
        """INSERT INTO users (env_id, user_id, first_seen_at, last_seen_at)
           SELECT $1, u, now(), now() FROM unnest($2::text[]) AS x(u)""",
        env.id,
        ids[:1500],
    )
    resp = await _members(admin, env, "csv", {"userIds": ids})
    assert resp.status_code == 200, resp.text
    assert resp.json()["added"] == 3000
    assert len(resp.json()["created"]) == 1500
    resp = await admin.get("/v1/segments/csv", headers=secret(env))
    assert resp.json()["memberCount"] == 3000
    resp = await _members(admin, env, "csv", {"userIds": ids[::2]}, add=False)
    assert resp.json()["removed"] == 1500
    await db.execute("DELETE FROM inbox WHERE env_id = $1", env.id)


async def test_refusals(admin: Client, env: EnvironmentKeys) -> None:
    await _segment(admin, env, "beta")
    resp = await admin.post(
        "/v1/segments",
        json={
            "name": "Pro",
            "kind": "dynamic",
            "conditions": {"attribute": "plan", "op": "is", "value": "pro"},
        },
        headers=secret(env),
    )
    assert resp.status_code == 201
    for seg in ("pro", "all-users"):
        resp = await _members(admin, env, seg, {"userIds": ["a"]})
        assert resp.status_code == 409, resp.text
        assert resp.json()["field"] == "segment"
    resp = await _members(admin, env, "nope", {"userIds": ["a"]})
    assert resp.status_code == 404
    cases: list[tuple[Any, str | None]] = [
        ({}, "userIds"),
        ({"userIds": []}, "userIds"),
        ({"userIds": ["ok", "null"]}, "userIds[1]"),
        ({"userIds": [None]}, "userIds[0]"),
        ({"userIds": [True]}, "userIds[0]"),
        ({"emails": ["not-an-email"]}, "emails[0]"),
        ({"emails": [3]}, "emails[0]"),
        ({"userIds": ["a"], "extra": 1}, "extra"),
        ({"userIds": [str(i) for i in range(10_001)]}, "userIds"),
    ]
    for body, field in cases:
        resp = await _members(admin, env, "beta", body)
        assert resp.status_code == 422, (body, resp.text)
        assert resp.json()["field"] == field, (body, resp.json())
    resp = await admin.post("/v1/segments/beta/members", content=b"nope", headers=secret(env))
    assert resp.status_code == 400
    resp = await _members(admin, env, "beta", {"userIds": ["a"]})
    assert resp.status_code == 200


async def test_webhook_outbox_for_manual_changes(
    admin: Client, env: EnvironmentKeys, db: asyncpg.Pool
) -> None:
    beta = await _segment(admin, env, "beta")
    await make_user(db, env, "ann")
    await make_user(db, env, None, anonymous_ids=("anon-7",))
    hook = await db.fetchval(
        """INSERT INTO webhooks (env_id, url, secret)
           VALUES ($1, 'http://127.0.0.1:9/', 's') RETURNING id""",
        env.id,
    )
    await _members(admin, env, "beta", {"userIds": ["ann", "anon-7"]})
    await _members(admin, env, "beta", {"userIds": ["ann"]}, add=False)
    rows = await db.fetch(
        "SELECT payload FROM webhook_deliveries WHERE env_id = $1 AND webhook_id = $2 ORDER BY id",
        env.id,
        hook,
    )
    # anonymous profiles are not announced to webhooks
    assert [
        (r["payload"]["type"], r["payload"]["userId"], r["payload"]["cause"]) for r in rows
    ] == [
        ("segment.entered", "ann", "admin"),
        ("segment.exited", "ann", "admin"),
    ]
    assert rows[0]["payload"]["segment"] == {"id": beta["id"], "key": "beta", "name": "beta"}


async def test_dynamic_segments_referring_to_it_are_recomputed(
    admin: Client,
    env: EnvironmentKeys,
    db: asyncpg.Pool,
    redis: aioredis.Redis,
    quiet_settings: Settings,
) -> None:
    await _segment(admin, env, "beta")
    await _segment(admin, env, "unrelated")
    await make_user(db, env, "ann")
    created = []
    for key, cond in (
        ("uses-beta", {"segment": "beta"}),
        ("uses-uses-beta", {"none": [{"segment": "uses-beta"}]}),
        ("uses-unrelated", {"segment": "unrelated"}),
    ):
        resp = await admin.post(
            "/v1/segments",
            json={"name": key, "key": key, "kind": "dynamic", "conditions": cond},
            headers=secret(env),
        )
        assert resp.status_code == 201, resp.text
        created.append(resp.json())
    await db.execute(
        "UPDATE segments SET status = 'ready' WHERE env_id = $1 AND kind = 'dynamic'", env.id
    )
    before = {
        c["key"]: len(await queued_recomputes(quiet_settings, redis, env.id, c["id"]))
        for c in created
    }

    await _members(admin, env, "beta", {"userIds": ["ann"]})
    after = {
        c["key"]: len(await queued_recomputes(quiet_settings, redis, env.id, c["id"]))
        for c in created
    }
    assert {k: after[k] - before[k] for k in after} == {
        "uses-beta": 1,
        "uses-uses-beta": 0,  # the worker's recompute of uses-beta continues to it
        "uses-unrelated": 0,
    }
    statuses = {
        r["key"]: r["status"]
        for r in await db.fetch("SELECT key, status FROM segments WHERE env_id = $1", env.id)
    }
    assert statuses["uses-beta"] == "computing"
    assert statuses["uses-uses-beta"] == statuses["uses-unrelated"] == "ready"
    # no change, no recompute
    await _members(admin, env, "beta", {"userIds": ["ann"]})
    again = {
        c["key"]: len(await queued_recomputes(quiet_settings, redis, env.id, c["id"]))
        for c in created
    }
    assert again == after
