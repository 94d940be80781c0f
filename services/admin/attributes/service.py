"""Attribute types in PostgreSQL: list, declare / correct, ingestion warnings.

Correcting a type changes how every condition on that attribute compares, so the dynamic
segments that use it get a new version (status 'computing') in the same transaction as the
type, and a recompute of each is enqueued after the commit. A type under which one of those
segments' conditions would no longer be valid (``contains`` on a number, ...) is refused with a
422 naming the segment and the node, and nothing is saved.
"""

from __future__ import annotations

import asyncpg

from services.admin.attributes.schemas import AttributeInfo, AttributeWarning, WarningPage
from shared.attribute_types import SCOPES, load_types, type_key
from shared.conditions import ConditionError, parse_condition, referenced_attributes
from shared.db import Conn
from shared.http import ApiError
from shared.membership.locking import lock_definitions

MAX_NAME = 255
# The advisory lock class under which segment definitions change (services/admin/segments):
# a type change and a segment edit of one environment never interleave.

_SELECT = """
SELECT a.scope, a.name, a.type, a.declared,
       (SELECT count(*) FROM ingest_warnings w
        WHERE w.env_id = a.env_id
          AND w.attribute = CASE WHEN a.scope = 'user' THEN a.name
                                 ELSE a.scope || ':' || a.name END) AS warnings
FROM attribute_types a
"""


def _info(row: asyncpg.Record) -> AttributeInfo:
    return AttributeInfo(
        name=row["name"],
        scope=row["scope"],
        type=row["type"],
        declared=row["declared"],
        warnings=row["warnings"],
    )


def check_path(scope: str, name: str) -> None:
    """400 for an unknown scope or an impossible name."""
    if scope not in SCOPES:
        raise ApiError(400, f"scope: expected one of {', '.join(SCOPES)}", "scope")
    if not 1 <= len(name) <= MAX_NAME:
        raise ApiError(400, f"name: expected 1 to {MAX_NAME} characters", "name")


async def list_attributes(conn: Conn | asyncpg.Pool, env_id: int) -> list[AttributeInfo]:
    """Every typed attribute of the environment, by scope and name."""
    rows = await conn.fetch(f"{_SELECT} WHERE a.env_id = $1 ORDER BY a.scope, a.name", env_id)
    return [_info(r) for r in rows]


async def set_type(
    conn: Conn, env_id: int, scope: str, name: str, type_: str
) -> tuple[AttributeInfo, list[tuple[int, str, int]]]:
    """Declare ``type_`` for the attribute; returns it and (id, key, new version) of every
    dynamic segment to recompute (none when the type did not change)."""
    check_path(scope, name)
    async with conn.transaction():
        await lock_definitions(conn, env_id)
        old = await conn.fetchval(
            "SELECT type FROM attribute_types WHERE env_id = $1 AND scope = $2 AND name = $3",
            env_id,
            scope,
            name,
        )
        await conn.execute(
            """INSERT INTO attribute_types (env_id, scope, name, type, declared)
               VALUES ($1, $2, $3, $4, true)
               ON CONFLICT (env_id, scope, name)
               DO UPDATE SET type = EXCLUDED.type, declared = true, updated_at = now()""",
            env_id,
            scope,
            name,
            type_,
        )
        bumped: list[tuple[int, str, int]] = []
        if old != type_ and scope in ("user", "company"):
            affected = await _affected_segments(conn, env_id, scope, name)
            if affected:
                rows = await conn.fetch(
                    """UPDATE segments
                       SET version = version + 1, status = 'computing', updated_at = now()
                       WHERE env_id = $1 AND id = ANY($2::bigint[])
                       RETURNING id, key, version""",
                    env_id,
                    affected,
                )
                bumped = sorted((r["id"], r["key"], r["version"]) for r in rows)
        row = await conn.fetchrow(
            f"{_SELECT} WHERE a.env_id = $1 AND a.scope = $2 AND a.name = $3",
            env_id,
            scope,
            name,
        )
    assert row is not None
    return _info(row), bumped


async def _affected_segments(conn: Conn, env_id: int, scope: str, name: str) -> list[int]:
    """Ids of the dynamic segments whose conditions read the attribute (rows locked), after
    checking that each is still valid under the environment's types (the new one included)."""
    types = await load_types(conn, env_id)
    rows = await conn.fetch(
        """SELECT id, key, conditions FROM segments
           WHERE env_id = $1 AND kind = 'dynamic' AND conditions IS NOT NULL
           ORDER BY id FOR UPDATE""",
        env_id,
    )
    affected = []
    for row in rows:
        try:
            uses = (scope, name) in referenced_attributes(parse_condition(row["conditions"]))
            if uses:
                parse_condition(row["conditions"], types)
        except ConditionError as exc:
            raise ApiError(
                422,
                f"type: segment {row['key']!r} would no longer be valid: {exc}",
                "type",
            ) from exc
        if uses:
            affected.append(row["id"])
    return affected


async def warnings_page(
    conn: Conn | asyncpg.Pool, env_id: int, scope: str, name: str, limit: int, before: int | None
) -> WarningPage:
    """Ingestion warnings recorded for the attribute, newest first (keyset on id)."""
    check_path(scope, name)
    rows = await conn.fetch(
        """SELECT id, message_id, user_id, warning, at FROM ingest_warnings
           WHERE env_id = $1 AND attribute = $2 AND ($3::bigint IS NULL OR id < $3)
           ORDER BY id DESC LIMIT $4""",
        env_id,
        type_key(scope, name),
        before,
        limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return WarningPage(
        [
            AttributeWarning(
                id=str(r["id"]),
                messageId=r["message_id"],
                userId=r["user_id"],
                warning=r["warning"],
                at=r["at"],
            )
            for r in rows
        ],
        str(rows[-1]["id"]) if more else None,
    )
