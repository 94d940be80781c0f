"""Conditions evaluated over the users table (preview, users list) and for one user (explain).

Every condition is validated and typed against the environment's attribute types and resolved
against its segments; a ConditionError becomes a 422 naming the node's JSON path.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.admin.queries.schemas import (
    Explanation,
    Preview,
    SegmentRef,
    UserPage,
    UserSummary,
)
from services.admin.queries.user_order import UserOrder, parse_sort
from services.admin.segments.service import as_id
from shared.attribute_types import load_types
from shared.conditions import (
    Condition,
    ConditionError,
    Subject,
    compile_sql,
    explain,
    parse_condition,
    referenced_events,
)
from shared.db import Conn
from shared.http import ApiError
from shared.member_counts import count_sql
from shared.membership.graph import segment_names
from shared.membership.loader import load_inputs, subject

SAMPLE_SIZE = 20
#: Previews count exactly up to this many users in the environment; beyond, they count a
#: random sample of PREVIEW_SAMPLE_USERS users and extrapolate: an exact count scans every
#: user (bench.tenmillion: seconds at 10M users, past the admin's query timeout).
PREVIEW_EXACT_USERS = 1_000_000
PREVIEW_SAMPLE_USERS = 200_000
CREATED = parse_sort(None)
# Condition trees make large expressions that PostgreSQL's cost model sends to JIT
# compilation, which then costs more than the whole scan (measured: ~300 ms of JIT on a
# 150 ms count over 100,000 users).
NO_JIT = "SET LOCAL jit = off"
_USER_COLUMNS = "u.id, u.user_id, u.attributes, u.first_seen_at, u.last_seen_at"


def _condition(raw: Any, types: Mapping[str, str], field: str) -> Condition:
    try:
        return parse_condition(raw, types)
    except ConditionError as exc:
        raise ApiError(422, f"{field}: {exc}", field) from exc


def _where(
    cond: Condition, segments: Mapping[str, int], first_param: int, field: str
) -> tuple[str, list[Any]]:
    try:
        # $1 is always the environment's id: relation leaves under OR / NOT become
        # uncorrelated sub-queries of it, which the planner costs as what runs
        return compile_sql(cond, alias="u", first_param=first_param, segments=segments, env_param=1)
    except ConditionError as exc:
        raise ApiError(422, f"{field}: {exc}", field) from exc


async def _bounded_fetch(
    conn: Conn, seconds: float, field: str, sql: str, *args: Any
) -> list[asyncpg.Record]:
    """``conn.fetch`` under a ``statement_timeout`` of ``seconds`` seconds (inside the
    caller's transaction); running out of time is a 422 naming ``field``, not a hung request
    holding a connection."""
    await conn.execute(f"SET LOCAL statement_timeout = {max(1, int(seconds * 1000))}")
    try:
        return await conn.fetch(sql, *args)
    except asyncpg.QueryCanceledError:
        raise ApiError(
            422,
            f"{field}: evaluating this condition over the environment's users took longer than "
            f"{seconds:g} s, so it was stopped; simplify it (fewer or simpler regex and text "
            "leaves) or narrow it",
            field,
        ) from None
    except asyncpg.InvalidRegularExpressionError as exc:
        raise ApiError(422, f"{field}: PostgreSQL cannot run a regex of it: {exc}", field) from None


def _summary(row: asyncpg.Record) -> UserSummary:
    return UserSummary(
        userId=row["user_id"],
        attributes=row["attributes"],
        firstSeenAt=row["first_seen_at"],
        lastSeenAt=row["last_seen_at"],
    )


async def preview(
    conn: Conn,
    env_id: int,
    raw: Any,
    seconds: float,
    *,
    exact_up_to: int = PREVIEW_EXACT_USERS,
    sample_users: int = PREVIEW_SAMPLE_USERS,
) -> Preview:
    """The count of users matching the unsaved condition ``raw`` and the first 20 of them,
    in one snapshot (a repeatable-read transaction), within ``seconds`` seconds. In an
    environment of more than ``exact_up_to`` users the count is estimated from a random
    sample of about ``sample_users`` of them (``estimated``)."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(NO_JIT)
        types = await load_types(conn, env_id)
        segments = await segment_names(conn, env_id)
        where, params = _where(_condition(raw, types, "conditions"), segments, 2, "conditions")
        users = await conn.fetchval(
            f"""SELECT {count_sql("s", "s.env_id", "s.id")} FROM segments s
                WHERE s.env_id = $1 AND s.kind = 'all'""",
            env_id,
        )
        if users is None or users <= exact_up_to:
            # one scan: the window count is taken over every match before LIMIT applies
            rows = await _bounded_fetch(
                conn,
                seconds,
                "conditions",
                f"""SELECT {_USER_COLUMNS}, count(*) OVER () AS total
                    FROM users u WHERE u.env_id = $1 AND {where}
                    ORDER BY u.id LIMIT {SAMPLE_SIZE}""",
                env_id,
                *params,
            )
            return Preview(rows[0]["total"] if rows else 0, [_summary(r) for r in rows])
        percent = min(100.0, 100.0 * sample_users / max(users, 1))
        # pages drawn at random (SYSTEM): the scan reads only them, whatever the table's size
        [sampled] = await _bounded_fetch(
            conn,
            seconds,
            "conditions",
            f"""SELECT count(*) AS n FROM users u TABLESAMPLE SYSTEM ({percent!r})
                WHERE u.env_id = $1 AND {where}""",
            env_id,
            *params,
        )
        rows = await _bounded_fetch(
            conn,
            seconds,
            "conditions",
            f"""SELECT {_USER_COLUMNS} FROM users u WHERE u.env_id = $1 AND {where}
                ORDER BY u.id LIMIT {SAMPLE_SIZE}""",
            env_id,
            *params,
        )
    count = round(sampled["n"] * 100.0 / percent)
    return Preview(max(count, len(rows)), [_summary(r) for r in rows], estimated=True)


async def filter_where(
    conn: Conn | asyncpg.Pool, env_id: int, raw_filter: Any | None, first_param: int
) -> tuple[str, list[Any]]:
    """The users list's ``filter`` (a condition; None: every user) compiled to a WHERE on
    ``users u`` whose parameters start at ``$first_param`` ($1 is the environment's id);
    422 naming the filter when it is not a valid condition."""
    if raw_filter is None:
        return "true", []
    types = await load_types(conn, env_id)  # type: ignore[arg-type]
    segments = await segment_names(conn, env_id)  # type: ignore[arg-type]
    return _where(_condition(raw_filter, types, "filter"), segments, first_param, "filter")


async def list_users(
    conn: Conn,
    env_id: int,
    raw_filter: Any | None,
    limit: int,
    cursor: str | None,
    seconds: float,
    order: UserOrder = CREATED,
) -> UserPage:
    """Users matching ``raw_filter`` (every user when None) in ``order``, after ``cursor``
    (a ``nextCursor`` of the same order), within ``seconds`` seconds."""
    after, after_params = order.after(cursor, 3)
    where, params = await filter_where(conn, env_id, raw_filter, 3 + len(after_params))
    async with conn.transaction(readonly=True):
        await conn.execute(NO_JIT)
        rows = await _bounded_fetch(
            conn,
            seconds,
            "filter",
            f"""SELECT {_USER_COLUMNS} FROM users u
                WHERE u.env_id = $1 AND {after} AND {where}
                ORDER BY {order.order_by} LIMIT $2""",
            env_id,
            limit + 1,
            *after_params,
            *params,
        )
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more else None
    return UserPage(
        [_summary(r) for r in rows],
        None if last is None else order.cursor_of(last["last_seen_at"], last["id"]),
    )


_FIND_USER = f"""
SELECT {_USER_COLUMNS} FROM users u WHERE u.env_id = $1 AND u.user_id = $2
UNION ALL
SELECT {_USER_COLUMNS}
FROM identities i JOIN users u ON u.env_id = i.env_id AND u.id = i.user_pk
WHERE i.env_id = $1 AND i.anonymous_id = $2
LIMIT 1
"""


async def load_subject(conn: Conn, env_id: int, user: asyncpg.Record, events: set[str]) -> Subject:
    """The user as conditions read them, loaded as the worker loads the users it evaluates
    (:mod:`shared.membership.loader`): explain and the worker cannot read a user differently."""
    pk = user["id"]
    inputs = await load_inputs(
        conn, env_id, [pk], tags=True, companies=True, events=events, segments=True
    )
    return subject(
        pk,
        user["user_id"],
        user["attributes"],
        user["first_seen_at"],
        user["last_seen_at"],
        inputs,
    )


async def explain_membership(
    conn: Conn, env_id: int, segment_ref: str, ident: str, now: datetime | None = None
) -> Explanation:
    """Why user ``ident`` (userId or anonymous id) is or is not in segment ``segment_ref``
    (key or id); 404 for an unknown segment or user."""
    now = now or datetime.now(UTC)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        seg = await conn.fetchrow(
            """SELECT id, key, kind, conditions FROM segments
               WHERE env_id = $1 AND (key = $2 OR id = $3)
               ORDER BY key = $2 DESC LIMIT 1""",
            env_id,
            segment_ref,
            as_id(segment_ref),
        )
        if seg is None:
            raise ApiError(404, f"segment: no segment with key or id {segment_ref!r}", "segment")
        user = await conn.fetchrow(_FIND_USER, env_id, ident)
        if user is None:
            raise ApiError(404, f"userId: no user {ident!r}", "userId")
        member = bool(
            await conn.fetchval(
                """SELECT EXISTS (SELECT 1 FROM memberships
                   WHERE env_id = $1 AND segment_id = $2 AND user_pk = $3)""",
                env_id,
                seg["id"],
                user["id"],
            )
        )
        ref = SegmentRef(str(seg["id"]), seg["key"], seg["kind"])
        if seg["kind"] != "dynamic" or seg["conditions"] is None:
            reason = (
                "every user is a member of the All users segment"
                if seg["kind"] == "all"
                else "membership of a manual segment is set by hand (API, ingest, imports)"
            )
            return Explanation(
                segment=ref,
                userId=ident,
                member=member,
                result=member,
                explanation=None,
                reason=reason,
            )
        types = await load_types(conn, env_id)
        segments = await segment_names(conn, env_id)
        cond = _condition(seg["conditions"], types, "conditions")
        subject = await load_subject(conn, env_id, user, referenced_events(cond))
    try:
        tree = explain(cond, subject, now, segments=segments)
    except ConditionError as exc:
        raise ApiError(422, f"conditions: {exc}", "conditions") from exc
    result = bool(tree["result"])
    return Explanation(
        segment=ref,
        userId=ident,
        member=member,
        result=result,
        explanation=tree,
        reason="the conditions " + ("hold" if result else "do not hold") + " for this user",
    )
