"""Stored memberships: the difference written, the change log and webhook outbox filled, and
the one rule that bumps ``users.membership_version``.

The version rule: a transaction that changes what a user's Redis keys must answer (their
memberships, or which anonymous ids resolve to them) bumps that user's ``membership_version``
exactly once, through :func:`bump_versions`, while it holds the user's row lock (taken in id
order, see :mod:`shared.membership.locking`); a user it creates may instead be inserted at
:func:`inserted_version`, the same result in one write. The Redis copy carries the version,
so a set written from an older state can never replace a newer one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import repeat
from typing import Any

import asyncpg
import msgspec

from shared.db import Conn


class Bumped(msgspec.Struct, frozen=True):
    """A user whose version a transaction bumped: its pk, userId (None: anonymous) and new
    version."""

    pk: int
    user_id: str | None
    version: int


async def bump_versions(
    conn: Conn, env_id: int, pks: Sequence[int], floors: Sequence[int] | None = None
) -> dict[int, Bumped]:
    """THE version rule: ``membership_version = greatest(membership_version, floor) + 1`` for
    each of ``pks`` (``floors``, when given, carry a merged profile's version over to the
    profile it merged into, so that its anonymous keys move on too). The caller holds the
    rows' locks. Returns {pk: Bumped}."""
    if not pks:
        return {}
    order = sorted(range(len(pks)), key=lambda i: pks[i])
    rows = await conn.fetch(
        """UPDATE users u SET membership_version = greatest(u.membership_version, x.f) + 1
           FROM unnest($2::bigint[], $3::bigint[]) AS x(i, f)
           WHERE u.env_id = $1 AND u.id = x.i
           RETURNING u.id, u.user_id, u.membership_version""",
        env_id,
        [pks[i] for i in order],
        [floors[i] if floors is not None else 0 for i in order],
    )
    return {r["id"]: Bumped(r["id"], r["user_id"], r["membership_version"]) for r in rows}


def inserted_version(floor: int) -> int:
    """The version to insert a user with when the inserting transaction would bump it
    anyway: what :func:`bump_versions` makes of a row inserted with the default 0 and
    ``floor`` (nobody else can write a row before its insert commits). Such a user is then
    not passed to bump_versions; one that the transaction would not bump must be inserted
    with the default."""
    return max(0, floor) + 1


async def stored_memberships(conn: Conn, env_id: int, user_pks: list[int]) -> dict[int, set[int]]:
    """{user pk: segment ids} as stored, for ``user_pks`` (users with none map to an empty set)."""
    out: dict[int, set[int]] = {pk: set() for pk in user_pks}
    rows = await conn.fetch(
        "SELECT user_pk, segment_id FROM memberships WHERE env_id = $1 AND user_pk = ANY($2)",
        env_id,
        user_pks,
    )
    for row in rows:
        out[row["user_pk"]].add(row["segment_id"])
    return out


#: From this many rows on, memberships and change-log rows are written by COPY (about half
#: the cost of an INSERT of the same rows: bench.world); fewer go by one INSERT, which costs
#: one round trip less.
COPY_FROM = 500


async def write_memberships(
    conn: Conn,
    env_id: int,
    old: Mapping[int, set[int]],
    new: Mapping[int, set[int]],
    cause: str,
    *,
    copy_from: int = COPY_FROM,
) -> int:
    """Write the difference between ``old`` and ``new`` ({user pk: segment ids}) and log each
    entry and exit (by COPY from ``copy_from`` rows on). Returns how many (user, segment)
    pairs changed."""
    entered: list[tuple[int, int]] = []
    exited: list[tuple[int, int]] = []
    for pk, segments in new.items():
        before = old.get(pk, set())
        entered.extend((seg, pk) for seg in segments - before)
        exited.extend((seg, pk) for seg in before - segments)
    await insert_memberships(
        conn, env_id, [s for s, _ in entered], [u for _, u in entered], copy_from=copy_from
    )
    await delete_memberships(conn, env_id, [s for s, _ in exited], [u for _, u in exited])
    changes = [(s, u, True) for s, u in entered] + [(s, u, False) for s, u in exited]
    await record_changes(
        conn,
        env_id,
        [c[0] for c in changes],
        [c[1] for c in changes],
        [c[2] for c in changes],
        cause,
        copy_from=copy_from,
    )
    return len(changes)


async def insert_memberships(
    conn: Conn,
    env_id: int,
    segment_ids: list[int],
    user_pks: list[int],
    *,
    copy_from: int = COPY_FROM,
) -> None:
    """Insert (segment, user) rows; one already there is left as it is (its ``since``)."""
    if len(segment_ids) >= copy_from:
        try:
            async with conn.transaction():  # a savepoint: a row already there undoes only this
                await conn.copy_records_to_table(
                    "memberships",
                    records=zip(repeat(env_id), segment_ids, user_pks, strict=False),
                    columns=("env_id", "segment_id", "user_pk"),
                )
            return
        except asyncpg.UniqueViolationError:
            pass  # writers lock the users first, so none should be; the INSERT skips it
    if segment_ids:
        await conn.execute(
            """INSERT INTO memberships (env_id, segment_id, user_pk)
               SELECT $1, s, u FROM unnest($2::bigint[], $3::bigint[]) AS x(s, u)
               ON CONFLICT DO NOTHING""",
            env_id,
            segment_ids,
            user_pks,
        )


async def delete_memberships(
    conn: Conn, env_id: int, segment_ids: list[int], user_pks: list[int]
) -> None:
    if segment_ids:
        await conn.execute(
            """DELETE FROM memberships m
               USING unnest($2::bigint[], $3::bigint[]) AS x(s, u)
               WHERE m.env_id = $1 AND m.segment_id = x.s AND m.user_pk = x.u""",
            env_id,
            segment_ids,
            user_pks,
        )


# Logs the changes listed by ``{source}`` (rows of segment id, user pk, entered) with the cause
# ``{cause}`` and, in the same statement, queues a delivery for every webhook subscribed to
# them (an outbox: committed with the change, sent by the worker). Only identified users are
# announced to webhooks.
_RECORD_CHANGES = """
WITH changes AS (
    INSERT INTO membership_changes (env_id, segment_id, user_pk, entered, cause)
    SELECT $1, s, u, e, {cause} FROM ({source}) AS x(s, u, e)
    RETURNING id, segment_id, user_pk, entered, at
)
INSERT INTO webhook_deliveries (env_id, webhook_id, change_id, payload)
SELECT $1, w.id, c.id, jsonb_build_object(
           'type', CASE WHEN c.entered THEN 'segment.entered' ELSE 'segment.exited' END,
           'id', c.id::text,
           'at', c.at,
           'cause', {cause},
           'userId', u.user_id,
           'segment', jsonb_build_object('id', g.id::text, 'key', g.key, 'name', g.name))
FROM changes c
JOIN webhooks w ON w.env_id = $1 AND w.active
     AND (w.segment_ids IS NULL OR c.segment_id = ANY (w.segment_ids))
     AND CASE WHEN c.entered THEN w.on_entered ELSE w.on_exited END
JOIN segments g ON g.env_id = $1 AND g.id = c.segment_id
JOIN users u ON u.env_id = $1 AND u.id = c.user_pk AND u.user_id IS NOT NULL
"""

_RECORD_ONLY = """
INSERT INTO membership_changes (env_id, segment_id, user_pk, entered, cause)
SELECT $1, s, u, e, {cause} FROM ({source}) AS x(s, u, e)
"""

_FROM_ARRAYS = "SELECT * FROM unnest($2::bigint[], $3::bigint[], $4::bool[])"


async def _hooked(conn: Conn, env_id: int) -> bool:
    """Whether the environment has an active webhook (its changes are then announced)."""
    hooked: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM webhooks WHERE env_id = $1 AND active)", env_id
    )
    return hooked


async def _log_changes(conn: Conn, env_id: int, source: str, cause: str, *args: Any) -> None:
    """Run _RECORD_CHANGES, or only its log when the environment has no active webhook."""
    sql = (
        _RECORD_CHANGES if await _hooked(conn, env_id) else _RECORD_ONLY
    )  # the common case: no subscriber, no join
    await conn.execute(sql.format(source=source, cause=cause), env_id, *args)


async def record_changes(
    conn: Conn,
    env_id: int,
    segment_ids: list[int],
    user_pks: list[int],
    entered: list[bool],
    cause: str,
    *,
    copy_from: int = COPY_FROM,
) -> None:
    """Log membership entries/exits and queue their webhook deliveries (see _RECORD_CHANGES;
    by COPY when they are many and no webhook of the environment is active)."""
    if not segment_ids:
        return
    if len(segment_ids) >= copy_from and not await _hooked(conn, env_id):
        await conn.copy_records_to_table(
            "membership_changes",
            records=zip(
                repeat(env_id), segment_ids, user_pks, entered, repeat(cause), strict=False
            ),
            columns=("env_id", "segment_id", "user_pk", "entered", "cause"),
        )
        return
    await _log_changes(
        conn, env_id, _FROM_ARRAYS, "$5::text", segment_ids, user_pks, entered, cause
    )
