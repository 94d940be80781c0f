"""A new identified user is written to ``users`` once, with what its batch made of it (its
attributes, attr_ts, first/last seen), by the drain and by imports alike; a user created by
another transaction between the batch's read and its insert makes the batch start again, so
that it applies exactly once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime

import asyncpg
import pytest
import redis.asyncio as aioredis

from services.worker import apply, identity
from services.worker.identity import BatchState
from services.worker.imports import run_imports
from shared.db import Conn
from shared.environments import EnvironmentKeys
from shared.import_mapping import ColumnMapping
from shared.messages import InboxMessage
from shared.settings import Settings
from tests.worker.conftest import Worker
from tests.worker.test_import_lanes import _ctx, _started

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:01:00Z"
T2 = "2026-01-01T00:02:00Z"
SIGNED_UP = "2025-06-01T10:00:00Z"
SIGNED_UP_US = int(datetime(2025, 6, 1, 10, tzinfo=UTC).timestamp()) * 1_000_000

Writes = Callable[[], Awaitable[dict[str, int]]]


@pytest.fixture
async def user_writes(db: asyncpg.Pool, env: EnvironmentKeys) -> AsyncIterator[Writes]:
    """Counts the committed row writes to ``users`` of the test's environment, by operation
    ({"INSERT": n, "UPDATE": n}), with a trigger that lives as long as the test."""
    await db.execute(
        f"""CREATE TABLE test_user_writes (op text NOT NULL);
            CREATE FUNCTION test_log_user_write() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN INSERT INTO test_user_writes VALUES (TG_OP); RETURN NULL; END $$;
            CREATE TRIGGER test_user_writes AFTER INSERT OR UPDATE ON users FOR EACH ROW
                WHEN (NEW.env_id = {env.id}) EXECUTE FUNCTION test_log_user_write();"""
    )

    async def counts() -> dict[str, int]:
        rows = await db.fetch("SELECT op, count(*) AS n FROM test_user_writes GROUP BY op")
        return {r["op"]: r["n"] for r in rows}

    try:
        yield counts
    finally:
        await db.execute(
            """DROP TRIGGER test_user_writes ON users;
               DROP FUNCTION test_log_user_write();
               DROP TABLE test_user_writes;"""
        )


async def _user(db: asyncpg.Pool, env_id: int, user_id: str) -> asyncpg.Record:
    row = await db.fetchrow(
        """SELECT id, attributes, attr_ts, epochs, email_lower, first_seen_at, last_seen_at,
                  membership_version
           FROM users WHERE env_id = $1 AND user_id = $2""",
        env_id,
        user_id,
    )
    assert row is not None
    return row


def _at(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


async def test_a_new_identified_user_is_inserted_once(
    worker: Worker, env: EnvironmentKeys, user_writes: Writes
) -> None:
    users = [f"new{i}" for i in range(20)]
    await worker.send(
        env.id,
        *(
            {
                "type": "identify",
                "userId": u,
                "timestamp": T1,
                "traits": {"email": f"{u.upper()}@Example.com", "signedUpAt": SIGNED_UP},
            }
            for u in users
        ),
        *({"type": "track", "userId": u, "timestamp": T0, "event": "Opened"} for u in users),
        *({"type": "track", "userId": u, "timestamp": T2, "event": "Closed"} for u in users),
    )
    assert await worker.drain() == 60
    # one INSERT each, at the version the batch bumps it to (its memberships: all-users)
    assert await user_writes() == {"INSERT": 20}
    t1_ms = int(_at(T1).timestamp() * 1000)
    for u in users:
        row = await _user(worker.pool, env.id, u)
        assert dict(row["attributes"]) == {
            "email": f"{u.upper()}@Example.com",
            "signedUpAt": SIGNED_UP,
        }
        assert dict(row["attr_ts"]) == {"email": t1_ms, "signedUpAt": t1_ms}
        assert dict(row["epochs"]) == {"signedUpAt": SIGNED_UP_US}
        assert row["email_lower"] == f"{u}@example.com"
        assert (row["first_seen_at"], row["last_seen_at"]) == (_at(T0), _at(T2))
        assert row["membership_version"] == 1
        assert await worker.segments_of(env.id, u) == {"all-users"}
    assert (
        await worker.pool.fetchval("SELECT count(*) FROM events WHERE env_id = $1", env.id)
        == len(users) * 2
    )

    # stored users keep their path: updated, never inserted again
    await worker.send(
        env.id,
        *({"type": "identify", "userId": u, "timestamp": T2, "traits": {"n": 1}} for u in users),
    )
    await worker.drain()
    assert (await user_writes())["INSERT"] == 20
    assert dict((await _user(worker.pool, env.id, "new3"))["attributes"])["n"] == 1


async def test_a_new_user_absorbs_anonymous_profiles_of_its_batch_and_stored(
    worker: Worker, env: EnvironmentKeys, user_writes: Writes
) -> None:
    await worker.pool.execute(
        """INSERT INTO segments (env_id, key, name, kind) VALUES ($1, 'beta', 'beta', 'manual')""",
        env.id,
    )
    # a stored anonymous profile, in a manual segment, with a version of its own
    await worker.send(
        env.id,
        {
            "type": "identify",
            "anonymousId": "stored-anon",
            "timestamp": T0,
            "traits": {"lang": "fr", "plan": "free"},
            "segments": ["beta"],
        },
    )
    await worker.drain()
    stored = await worker.pool.fetchrow(
        """SELECT u.id, u.membership_version FROM identities i
           JOIN users u ON u.env_id = i.env_id AND u.id = i.user_pk
           WHERE i.env_id = $1 AND i.anonymous_id = 'stored-anon'""",
        env.id,
    )
    assert stored is not None
    stored_pk, stored_version = stored
    await worker.pool.execute(
        "UPDATE users SET membership_version = 41 WHERE env_id = $1 AND id = $2",
        env.id,
        stored_pk,
    )
    before = await user_writes()
    # one batch: a new anonymous profile, then a new user absorbing it and the stored one
    await worker.send(
        env.id,
        {"type": "track", "anonymousId": "fresh-anon", "timestamp": T0, "event": "Viewed"},
        {
            "type": "identify",
            "anonymousId": "fresh-anon",
            "timestamp": T0,
            "traits": {"theme": "dark", "plan": "trial"},
        },
        {
            "type": "identify",
            "userId": "carol",
            "anonymousId": "fresh-anon",
            "timestamp": T1,
            "traits": {"plan": "pro"},
        },
        {"type": "alias", "userId": "carol", "previousId": "stored-anon", "timestamp": T2},
    )
    await worker.drain()
    after = await user_writes()
    # carol inserted once, the fresh anonymous profile never (merged in memory)
    assert after["INSERT"] - before.get("INSERT", 0) == 1
    carol = await _user(worker.pool, env.id, "carol")
    assert dict(carol["attributes"]) == {"plan": "pro", "theme": "dark", "lang": "fr"}
    assert (carol["first_seen_at"], carol["last_seen_at"]) == (_at(T0), _at(T2))
    # the stored profile's version carried over (the floor), then bumped once
    assert stored_version < 41
    assert carol["membership_version"] == 42
    assert await worker.segments_of(env.id, "carol") == {"all-users", "beta"}
    links = await worker.pool.fetch(
        "SELECT anonymous_id, user_pk FROM identities WHERE env_id = $1 ORDER BY 1", env.id
    )
    assert [(r["anonymous_id"], r["user_pk"]) for r in links] == [
        ("fresh-anon", carol["id"]),
        ("stored-anon", carol["id"]),
    ]
    assert await worker.pool.fetchval("SELECT count(*) FROM users WHERE env_id = $1", env.id) == 1
    events = await worker.pool.fetch("SELECT user_pk FROM events WHERE env_id = $1", env.id)
    assert [e["user_pk"] for e in events] == [carol["id"]]


async def test_without_all_users_new_users_are_bumped_only_when_rewritten(
    worker: Worker, env: EnvironmentKeys, user_writes: Writes
) -> None:
    # an environment without All users (not one ensure_environment makes): a new user in no
    # segment keeps version 0 and no Redis set, as before; one in a segment is bumped once
    await worker.pool.execute("DELETE FROM segments WHERE env_id = $1 AND kind = 'all'", env.id)
    await worker.pool.execute(
        "INSERT INTO segments (env_id, key, name, kind) VALUES ($1, 'beta', 'beta', 'manual')",
        env.id,
    )
    await worker.send(
        env.id,
        {"type": "identify", "userId": "nowhere", "timestamp": T0, "traits": {"a": 1}},
        {"type": "identify", "userId": "inbeta", "timestamp": T0, "segments": ["beta"]},
    )
    await worker.drain()
    assert (await _user(worker.pool, env.id, "nowhere"))["membership_version"] == 0
    assert (await _user(worker.pool, env.id, "inbeta"))["membership_version"] == 1
    assert await worker.segments_of(env.id, "inbeta") == {"beta"}
    assert await worker.cache.redis.exists(worker.cache.key(env.id, "nowhere")) == 0
    assert await user_writes() == {"INSERT": 2, "UPDATE": 1}


async def test_a_new_users_id_is_not_linked_as_another_users_anonymous_id(
    worker: Worker, env: EnvironmentKeys
) -> None:
    # both new in one batch: "dave" is a userId (the batch's own), so not erin's anonymous id
    await worker.send(
        env.id,
        {"type": "identify", "userId": "dave", "timestamp": T0, "traits": {"who": "dave"}},
        {"type": "identify", "userId": "erin", "anonymousId": "dave", "timestamp": T1},
    )
    await worker.drain()
    assert await worker.profile(env.id, "dave") == {"who": "dave"}
    assert await worker.profile(env.id, "erin") == {}
    assert (
        await worker.pool.fetchval(
            "SELECT count(*) FROM identities WHERE env_id = $1 AND anonymous_id = 'dave'", env.id
        )
        == 0
    )


class Racing:
    """A load_state that, the first time it finds ``user_id`` missing, lets another
    transaction create that user (and commit): the window between the batch's read and its
    insert, made to happen."""

    def __init__(self, db: asyncpg.Pool, env_id: int, user_id: str) -> None:
        self.db, self.env_id, self.user_id = db, env_id, user_id
        self.original = identity.load_state
        self.raced = False
        self.loads = 0  # of batches naming ``user_id``

    async def __call__(self, conn: Conn, env: int, msgs: Sequence[InboxMessage]) -> BatchState:
        state = await self.original(conn, env, msgs)
        if self.user_id not in state.by_user_id:
            return state
        self.loads += 1
        if not self.raced and state.profiles[state.by_user_id[self.user_id]].new:
            self.raced = True
            await self.db.execute(
                """INSERT INTO users (env_id, user_id, attributes, attr_ts, first_seen_at,
                                      last_seen_at)
                   VALUES ($1, $2, '{"other": "writer"}', '{"other": 1}', $3, $3)""",
                self.env_id,
                self.user_id,
                _at(T0),
            )
        return state


async def test_a_user_created_meanwhile_makes_the_batch_apply_once_again(
    worker: Worker, env: EnvironmentKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    racing = Racing(worker.pool, env.id, "racer")
    monkeypatch.setattr(apply, "load_state", racing)
    await worker.send(
        env.id,
        {"type": "identify", "userId": "calm", "timestamp": T1, "traits": {"n": {"add": 1}}},
        {"type": "identify", "userId": "racer", "timestamp": T1, "traits": {"n": {"add": 1}}},
        {"type": "track", "userId": "racer", "timestamp": T2, "event": "Raced"},
    )
    assert await worker.drain() == 3
    assert racing.raced and racing.loads == 2
    assert worker.stats.dead == 0
    assert await worker.profile(env.id, "racer") == {"other": "writer", "n": 1}
    assert await worker.profile(env.id, "calm") == {"n": 1}
    racer = await _user(worker.pool, env.id, "racer")
    assert (racer["first_seen_at"], racer["last_seen_at"]) == (_at(T0), _at(T2))
    assert await worker.segments_of(env.id, "racer") == {"all-users"}
    counts = await worker.pool.fetchrow(
        """SELECT (SELECT count(*) FROM users WHERE env_id = $1) AS users,
                  (SELECT count(*) FROM events WHERE env_id = $1) AS events,
                  (SELECT count(*) FROM dead_letters WHERE env_id = $1) AS dead,
                  (SELECT count(*) FROM inbox WHERE env_id = $1) AS inbox,
                  (SELECT count(*) FROM processed_messages WHERE env_id = $1) AS processed""",
        env.id,
    )
    assert counts is not None
    assert dict(counts) == {"users": 2, "events": 1, "dead": 0, "inbox": 0, "processed": 3}


IMPORT_MAPPING = {
    "userId": ColumnMapping(as_="userId"),
    "email": ColumnMapping(as_="attribute"),
    "signedUpAt": ColumnMapping(as_="attribute"),
}


async def _import(db: asyncpg.Pool, env_id: int, lines: list[str]) -> int:
    return await _started(db, env_id, lines, "userId,email,signedUpAt", IMPORT_MAPPING)


async def test_an_import_of_new_users_inserts_each_once(
    db: asyncpg.Pool,
    redis: aioredis.Redis,
    settings: Settings,
    env: EnvironmentKeys,
    user_writes: Writes,
) -> None:
    users = [f"imp{i}" for i in range(50)]
    import_id = await _import(
        db, env.id, [f"{u},{u.upper()}@Example.com,{SIGNED_UP}" for u in users]
    )
    assert await run_imports(_ctx(db, redis, settings)) == 1
    status = await db.fetchrow(
        "SELECT status, created, updated, rejected, started_at FROM imports WHERE id = $1",
        import_id,
    )
    assert status is not None
    assert tuple(status)[:4] == ("done", 50, 0, 0)
    assert await user_writes() == {"INSERT": 50}
    for u in users:
        row = await _user(db, env.id, u)
        assert dict(row["attributes"]) == {
            "email": f"{u.upper()}@Example.com",
            "signedUpAt": SIGNED_UP,
        }
        assert dict(row["epochs"]) == {"signedUpAt": SIGNED_UP_US}
        assert row["email_lower"] == f"{u}@example.com"
        # an import is not the user being seen: a new user starts at the import's start
        assert row["first_seen_at"] == row["last_seen_at"]
        assert abs(row["first_seen_at"] - status["started_at"]).total_seconds() < 0.001


async def test_an_import_lane_retries_when_a_user_is_created_meanwhile(
    db: asyncpg.Pool,
    redis: aioredis.Redis,
    settings: Settings,
    env: EnvironmentKeys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    racing = Racing(db, env.id, "imp-racer")
    monkeypatch.setattr(apply, "load_state", racing)
    import_id = await _import(
        db, env.id, [f"imp-racer,racer@example.com,{SIGNED_UP}", f"imp-calm,calm@x.io,{T0}"]
    )
    assert await run_imports(_ctx(db, redis, settings)) == 1
    assert racing.raced and racing.loads == 2
    status = await db.fetchrow(
        "SELECT status, created, updated, rejected FROM imports WHERE id = $1", import_id
    )
    assert status is not None
    # the retried lane found the racer stored: it updated it
    assert tuple(status) == ("done", 1, 1, 0)
    racer = await _user(db, env.id, "imp-racer")
    assert dict(racer["attributes"]) == {
        "other": "writer",
        "email": "racer@example.com",
        "signedUpAt": SIGNED_UP,
    }
    assert racer["email_lower"] == "racer@example.com"
    assert await db.fetchval("SELECT count(*) FROM users WHERE env_id = $1", env.id) == 2
