"""Memberships and their change log written by COPY (many rows) are the rows the INSERTs write
(few rows): the same memberships and ``since``, the same changes with their cause and time; a
membership already stored is kept as the INSERT keeps it; with an active webhook the changes
still queue their deliveries."""

from __future__ import annotations

from typing import Any

import asyncpg

from shared.db import Conn
from shared.environments import EnvironmentKeys
from shared.membership import write_memberships
from shared.membership.store import insert_memberships


async def _users(conn: Conn, env_id: int, count: int) -> list[int]:
    rows = await conn.fetch(
        """INSERT INTO users (env_id, user_id, first_seen_at, last_seen_at)
           SELECT $1, 'u' || n, now(), now() FROM generate_series(1, $2) AS n RETURNING id""",
        env_id,
        count,
    )
    return [r["id"] for r in rows]


async def _segments(conn: Conn, env_id: int, count: int) -> list[int]:
    rows = await conn.fetch(
        """INSERT INTO segments (env_id, key, name, kind)
           SELECT $1, 'm' || n, 'm' || n, 'manual' FROM generate_series(1, $2) AS n
           RETURNING id""",
        env_id,
        count,
    )
    return [r["id"] for r in rows]


async def _written(
    db: asyncpg.Pool, env: EnvironmentKeys, copy_from: int, hooked: bool = False
) -> tuple[list[Any], ...]:
    """What a write of 40 users' memberships (some entered, some exited) leaves, with the
    transaction's time as ``at`` and ``since``; rolled back after."""
    async with db.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            if hooked:
                await conn.execute(
                    """INSERT INTO webhooks (env_id, url, secret)
                       VALUES ($1, 'http://127.0.0.1:9/', 's')""",
                    env.id,
                )
            users = await _users(conn, env.id, 40)
            segments = await _segments(conn, env.id, 6)
            stored = {
                u: {segments[0], segments[1]} if i % 2 else set() for i, u in enumerate(users)
            }
            await insert_memberships(
                conn,
                env.id,
                [s for u in users for s in sorted(stored[u])],
                [u for u in users for _ in stored[u]],
                copy_from=10**9,
            )
            new = {
                u: {segments[i % 6], segments[(i * 7) % 6], segments[1]}
                for i, u in enumerate(users)
            }
            changed = await write_memberships(
                conn, env.id, stored, new, "message", copy_from=copy_from
            )
            now = await conn.fetchval("SELECT now()")
            user_at = {u: i for i, u in enumerate(users)}
            segment_at = {s: i for i, s in enumerate(segments)}
            members = await conn.fetch(
                "SELECT segment_id, user_pk, since FROM memberships WHERE env_id = $1", env.id
            )
            changes = await conn.fetch(
                """SELECT segment_id, user_pk, entered, cause, at FROM membership_changes
                   WHERE env_id = $1""",
                env.id,
            )
            deliveries = await conn.fetch(
                """SELECT (payload #- '{segment,id}') - 'id' - 'at' AS p
                   FROM webhook_deliveries WHERE env_id = $1""",
                env.id,
            )
        finally:
            await transaction.rollback()
    return (
        [changed],
        sorted((segment_at[r[0]], user_at[r[1]], r[2] == now) for r in members),
        sorted((segment_at[r[0]], user_at[r[1]], r[2], r[3], r[4] == now) for r in changes),
        sorted(str(r["p"]) for r in deliveries),
    )


async def test_copy_writes_the_rows_the_inserts_write(
    db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    by_insert = await _written(db, env, copy_from=10**9)
    by_copy = await _written(db, env, copy_from=1)
    assert by_copy == by_insert
    changed, members, changes, _ = by_copy
    assert changed[0] == len(changes) > 40 and len(members) > 40
    assert {c[2] for c in changes} == {True, False} and {c[3] for c in changes} == {"message"}


async def test_with_an_active_webhook_changes_queue_deliveries(
    db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    by_insert = await _written(db, env, copy_from=10**9, hooked=True)
    by_copy = await _written(db, env, copy_from=1, hooked=True)
    assert by_copy == by_insert
    assert len(by_copy[3]) == by_copy[0][0] > 0


async def test_a_membership_already_stored_is_kept(db: asyncpg.Pool, env: EnvironmentKeys) -> None:
    async with db.acquire() as conn, conn.transaction():
        users = await _users(conn, env.id, 3)
        (segment,) = await _segments(conn, env.id, 1)
        await insert_memberships(conn, env.id, [segment], [users[1]], copy_from=10**9)
        before = await conn.fetchval(
            "SELECT since FROM memberships WHERE env_id = $1 AND user_pk = $2", env.id, users[1]
        )
        # the COPY meets the stored row: its savepoint is undone, the INSERT skips that row
        await insert_memberships(conn, env.id, [segment] * 3, users, copy_from=1)
        rows = await conn.fetch(
            "SELECT user_pk, since FROM memberships WHERE env_id = $1 ORDER BY user_pk", env.id
        )
        assert [r["user_pk"] for r in rows] == sorted(users)
        assert [r["since"] for r in rows if r["user_pk"] == users[1]] == [before]
