"""Erasing a user: nothing that identifies them is left in any table or in Redis; the exits
are recorded and announced; other users are untouched."""

from __future__ import annotations

import json
import time
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from services.worker.webhooks import deliver_webhooks
from shared.environments import EnvironmentKeys
from shared.membership.cache import UNKNOWN_TTL, MembershipCache
from shared.messages import InboxMessage, inbox_decoder, inbox_encoder
from shared.redis_keys import anonymous, membership_key
from shared.settings import Settings
from tests.admin.conftest import Receiver, make_user, secret

Client = AsyncTestClient[Any]
ERIN = "erin-7f3a9c"
ERIN_ANON = ("anon-erin-7f3a9c-1", "anon-erin-7f3a9c-2")
ERIN_EMAIL = "Erin.Q7f3a9c@Example.com"
KEEP = "keep-5d2e81"


@pytest.fixture
def admin(quiet_admin: Client) -> Client:
    return quiet_admin


def _inbox_body(user_id: str | None, anonymous_id: str | None = None) -> bytes:
    now = int(time.time() * 1000)
    return inbox_encoder.encode(
        InboxMessage(
            type="identify",
            messageId=f"m-{user_id}-{anonymous_id}",
            timestamp=now,
            receivedAt=now,
            userId=user_id,
            anonymousId=anonymous_id,
        )
    )


async def _person(
    db: asyncpg.Pool, env: EnvironmentKeys, user_id: str, anon: tuple[str, ...], email: str
) -> int:
    """A profile with a row in every table that can hold one."""
    pk = await make_user(db, env, user_id, {"email": email, "name": f"Name {user_id}"}, anon)
    async with db.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO memberships (env_id, segment_id, user_pk)
               SELECT $1, id, $2 FROM segments WHERE env_id = $1 AND kind = 'all'""",
            env.id,
            pk,
        )
        await conn.execute(
            """INSERT INTO events (env_id, user_pk, name, properties, ts, message_id)
               VALUES ($1, $2, 'Lesson Completed', $3, now(), $4)""",
            env.id,
            pk,
            {"by": user_id},
            f"ev-{user_id}",
        )
        if await conn.fetchval("SELECT to_regclass('event_counts') IS NOT NULL"):
            await conn.execute(
                """INSERT INTO event_counts (env_id, user_pk, name, day, count)
                   VALUES ($1, $2, 'Lesson Completed', current_date, 1)""",
                env.id,
                pk,
            )
        company = await conn.fetchval(
            """INSERT INTO companies (env_id, company_id) VALUES ($1, 'acme')
               ON CONFLICT (env_id, company_id) DO UPDATE SET company_id = 'acme' RETURNING id""",
            env.id,
        )
        await conn.execute(
            """INSERT INTO company_members (env_id, user_pk, company_pk, attributes)
               VALUES ($1, $2, $3, $4)""",
            env.id,
            pk,
            company,
            {"role": f"role of {user_id}"},
        )
        await conn.execute(
            """INSERT INTO ingest_warnings (env_id, message_id, user_id, attribute, warning)
               VALUES ($1, 'w1', $2, 'plan', 'misfit'), ($1, 'w2', $3, 'plan', 'misfit')""",
            env.id,
            user_id,
            anon[0],
        )
        await conn.execute(
            """INSERT INTO inbox (env_id, body) VALUES ($1, $2), ($1, $3)""",
            env.id,
            _inbox_body(user_id),
            _inbox_body(None, anon[-1]),
        )
        await conn.execute(
            """INSERT INTO dead_letters (env_id, inbox_id, received_at, body, error)
               VALUES ($1, 0, now(), $2, 'boom')""",
            env.id,
            _inbox_body(user_id),
        )
    return pk


async def _leftovers(db: asyncpg.Pool, needles: list[str], pk: int) -> dict[str, int]:
    """{table: rows} of every table in the database holding one of ``needles`` anywhere in
    a row (text, JSON or bytes), or the profile's primary key in a ``user_pk`` column (a
    partitioned table is read whole, through its parent)."""
    found: dict[str, int] = {}
    tables = await db.fetch(
        """SELECT table_name FROM information_schema.tables t
           JOIN pg_class r ON r.oid = format('%I.%I', t.table_schema, t.table_name)::regclass
           WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'
             AND NOT r.relispartition"""
    )
    patterns = [f"%{n.lower()}%" for n in needles]
    for (table,) in tables:
        columns = {
            r["column_name"]: r["data_type"]
            for r in await db.fetch(
                """SELECT column_name, data_type FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = $1""",
                table,
            )
        }
        ident = '"' + table + '"'
        # (the second term only types the parameters every query is given)
        tests = ["lower(x::text) LIKE ANY($1::text[])", "($2::bytea[] IS NULL AND $3::bigint < 0)"]
        tests += [
            f"EXISTS (SELECT 1 FROM unnest($2::bytea[]) AS n(b) WHERE position(n.b IN x.{c}) > 0)"
            for c, kind in columns.items()
            if kind == "bytea"
        ]
        if "user_pk" in columns and table != "membership_changes":
            tests.append("x.user_pk = $3")
        count = await db.fetchval(
            f"SELECT count(*) FROM {ident} x WHERE ({' OR '.join(tests)})",
            patterns,
            [n.encode() for n in needles],
            pk,
        )
        if count:
            found[table] = count
    return found


async def test_erase_leaves_nothing_behind(
    admin: Client,
    env: EnvironmentKeys,
    db: asyncpg.Pool,
    redis: aioredis.Redis,
    quiet_settings: Settings,
    settings: Settings,
) -> None:
    receiver = await Receiver().start()
    try:
        erin = await _person(db, env, ERIN, ERIN_ANON, ERIN_EMAIL)
        keep = await _person(db, env, KEEP, ("anon-keep-5d2e81",), "keep@example.com")
        resp = await admin.post("/v1/webhooks", json={"url": receiver.url}, headers=secret(env))
        hook = resp.json()
        seg = await admin.post(
            "/v1/segments", json={"name": "Course 7", "kind": "manual"}, headers=secret(env)
        )
        course = seg.json()
        resp = await admin.post(
            "/v1/tags", json={"key": "Department", "value": "Sales"}, headers=secret(env)
        )
        tag = resp.json()
        for path in (f"/v1/segments/{course['key']}/members", f"/v1/tags/{tag['id']}/users"):
            resp = await admin.post(
                path, json={"userIds": [ERIN, KEEP, "newbie-x"]}, headers=secret(env)
            )
            assert resp.status_code == 200, resp.text
        # an announced (delivered) entry and one still waiting
        await db.execute(
            """UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now()
               WHERE webhook_id = $1 AND payload ->> 'userId' = $2""",
            int(hook["id"]),
            ERIN,
        )
        await db.execute(
            """INSERT INTO webhook_deliveries (env_id, webhook_id, change_id, payload)
               VALUES ($1, $2, 0, $3)""",
            env.id,
            int(hook["id"]),
            {"type": "segment.entered", "userId": ERIN, "cause": "message"},
        )
        prefix = quiet_settings.redis_prefix
        erin_idents = (ERIN, *(anonymous(a) for a in ERIN_ANON))
        erin_keys = [membership_key(prefix, env.id, i) for i in erin_idents]
        assert await redis.exists(*erin_keys) == 3
        keep_key = membership_key(prefix, env.id, KEEP)
        assert await redis.exists(keep_key) == 1
        needles = [ERIN, *ERIN_ANON, ERIN_EMAIL, f"Name {ERIN}"]
        assert len(await _leftovers(db, needles, erin)) >= 10  # the check can see them
        keep_before = await _leftovers(db, [KEEP], keep)
        memberships = await db.fetchval(
            "SELECT count(*) FROM memberships WHERE env_id = $1 AND user_pk = $2", env.id, erin
        )
        assert memberships == 2  # All users and the course

        erin_version = await db.fetchval(
            "SELECT membership_version FROM users WHERE env_id = $1 AND id = $2", env.id, erin
        )

        resp = await admin.delete(f"/v1/users/{ERIN_ANON[1]}", headers=secret(env))
        assert resp.status_code == 204, resp.text

        assert (await admin.get(f"/v1/users/{ERIN}", headers=secret(env))).status_code == 404
        # Each of Erin's keys is now a short hold naming no segment; a query refill that read
        # her before the erase (her last version) and writes after it is turned away.
        cache = MembershipCache(redis, prefix)
        for ident, key in zip(erin_idents, erin_keys, strict=True):
            members = await redis.smembers(key)  # type: ignore[misc]
            assert members == {f"~{erin_version + 1}"}
            assert 0 < await redis.ttl(key) <= UNKNOWN_TTL
            await cache.write(env.id, ident, erin_version, [int(course["id"])])
            assert await cache.get(env.id, ident) is None
        assert await redis.exists(keep_key) == 1
        # the exits: in the change log (naming nobody now) and queued for the webhook
        feed = await admin.get(f"/v1/segments/{course['key']}/changes", headers=secret(env))
        exits = [c for c in feed.json()["changes"] if not c["entered"]]
        assert [(c["userId"], c["cause"]) for c in exits] == [(None, "erase")]
        pending = await db.fetch(
            """SELECT payload FROM webhook_deliveries
               WHERE webhook_id = $1 AND status = 'pending'""",
            int(hook["id"]),
        )
        assert sorted(
            (p["payload"]["type"], p["payload"]["segment"]["key"], p["payload"]["userId"])
            for p in pending
            if p["payload"]["cause"] == "erase"
        ) == [("segment.exited", "all-users", ERIN), ("segment.exited", course["key"], ERIN)]
        # Erin's older pending ones were dropped; other people's stay
        assert {p["payload"]["userId"] for p in pending if p["payload"]["cause"] != "erase"} == {
            KEEP,
            "newbie-x",
        }

        # subscribers hear of the exits; after that nothing names Erin anywhere
        for _ in range(50):
            await deliver_webhooks({"pool": db, "settings": settings})
            left = await db.fetchval(
                """SELECT count(*) FROM webhook_deliveries
                   WHERE webhook_id = $1 AND status = 'pending'""",
                int(hook["id"]),
            )
            if not left:
                break
            await db.execute(
                "UPDATE webhook_deliveries SET next_attempt_at = now() WHERE webhook_id = $1",
                int(hook["id"]),
            )
        heard = [json.loads(r.body) for r in receiver.requests]
        assert {(h["type"], h["userId"], h["cause"]) for h in heard if h["cause"] == "erase"} == {
            ("segment.exited", ERIN, "erase")
        }
        assert await _leftovers(db, needles, erin) == {}
        # history kept: the entry and both exits, under a key that resolves to nothing
        history = await db.fetch(
            """SELECT entered, cause FROM membership_changes
               WHERE env_id = $1 AND user_pk = $2 ORDER BY id""",
            env.id,
            erin,
        )
        assert [(r["entered"], r["cause"]) for r in history] == [
            (True, "admin"),
            (False, "erase"),
            (False, "erase"),
        ]

        # the other user kept everything
        assert await _leftovers(db, [KEEP], keep) == keep_before
        profile = await admin.get(f"/v1/users/{KEEP}", headers=secret(env))
        assert [t["key"] for t in profile.json()["tags"]] == ["Department"]
        assert (await admin.get(f"/v1/tags/{tag['id']}", headers=secret(env))).json()[
            "userCount"
        ] == 2
        assert (await admin.delete(f"/v1/users/{ERIN}", headers=secret(env))).status_code == 404
    finally:
        await receiver.close()
        await db.execute("DELETE FROM inbox WHERE env_id = $1", env.id)


async def test_erase_unknown_and_auth(
    admin: Client, env: EnvironmentKeys, db: asyncpg.Pool
) -> None:
    assert (await admin.delete("/v1/users/nobody", headers=secret(env))).status_code == 404
    await make_user(db, env, "x1")
    resp = await admin.delete("/v1/users/x1", headers={"Authorization": f"Bearer {env.writeKey}"})
    assert resp.status_code == 403
    assert (await admin.get("/v1/users/x1", headers=secret(env))).status_code == 200


async def test_erasing_a_user_keeps_the_messages_of_another_whose_user_id_it_used(
    admin: Client, env: EnvironmentKeys, db: asyncpg.Pool
) -> None:
    """User ids and anonymous ids are separate: A holding "victim-b" as an anonymous id (a link
    made before the worker refused such links) does not take B's pending messages with it."""
    await make_user(db, env, "victim-b", {"plan": "free"}, ())
    await make_user(db, env, "attacker-a", {"plan": "pro"}, ("victim-b",))
    rows = [_inbox_body("victim-b"), _inbox_body("attacker-a", "victim-b"), _inbox_body(None, "x")]
    for body in rows:
        await db.execute(
            "INSERT INTO inbox (env_id, received_at, body) VALUES ($1, now(), $2)", env.id, body
        )
    resp = await admin.delete("/v1/users/attacker-a", headers=secret(env))
    assert resp.status_code == 204, resp.text
    left = await db.fetch("SELECT body FROM inbox WHERE env_id = $1", env.id)
    kept = sorted(
        (m.userId or "", m.anonymousId or "")
        for m in (inbox_decoder.decode(r["body"]) for r in left)
    )
    assert kept == [("", "x"), ("victim-b", "")]
    assert (await admin.get("/v1/users/victim-b", headers=secret(env))).status_code == 200
