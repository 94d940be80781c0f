"""A user's recent events and membership history (newest first), for the profile."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from shared.db import Conn

_PK = """
SELECT id FROM users WHERE env_id = $1 AND user_id = $2
UNION ALL
SELECT user_pk FROM identities WHERE env_id = $1 AND anonymous_id = $2
LIMIT 1
"""


class UserEvent(msgspec.Struct, kw_only=True):
    name: str
    properties: dict[str, Any]
    at: datetime


class UserEvents(msgspec.Struct):
    """``GET /v1/users/{userId}/events``: the user's latest events, newest first."""

    events: list[UserEvent]


class UserChange(msgspec.Struct, kw_only=True):
    """One entry (``entered`` true) or exit of this user, with its cause (as in a segment's
    change feed). ``segment`` is None when the segment has since been deleted."""

    id: str
    segment: dict[str, str] | None
    entered: bool
    cause: str
    at: datetime


class UserChanges(msgspec.Struct):
    """``GET /v1/users/{userId}/changes``: the user's entries and exits, newest first."""

    changes: list[UserChange]


async def user_pk(conn: Conn | asyncpg.Pool, env_id: int, ident: str) -> int | None:
    """The profile key of a userId or anonymous id, or None."""
    pk: int | None = await conn.fetchval(_PK, env_id, ident)
    return pk


async def recent_events(conn: Conn | asyncpg.Pool, env_id: int, pk: int, limit: int) -> UserEvents:
    rows = await conn.fetch(
        """SELECT name, properties, ts FROM events WHERE env_id = $1 AND user_pk = $2
           ORDER BY ts DESC, id DESC LIMIT $3""",
        env_id,
        pk,
        limit,
    )
    return UserEvents(
        [UserEvent(name=r["name"], properties=r["properties"], at=r["ts"]) for r in rows]
    )


async def membership_history(
    conn: Conn | asyncpg.Pool, env_id: int, pk: int, limit: int
) -> UserChanges:
    rows = await conn.fetch(
        """SELECT c.id, c.entered, c.cause, c.at, s.id AS sid, s.key, s.name
           FROM membership_changes c
           LEFT JOIN segments s ON s.env_id = c.env_id AND s.id = c.segment_id
           WHERE c.env_id = $1 AND c.user_pk = $2
           ORDER BY c.id DESC LIMIT $3""",
        env_id,
        pk,
        limit,
    )
    return UserChanges(
        [
            UserChange(
                id=str(r["id"]),
                segment=None
                if r["sid"] is None
                else {"id": str(r["sid"]), "key": r["key"], "name": r["name"]},
                entered=r["entered"],
                cause=r["cause"],
                at=r["at"],
            )
            for r in rows
        ]
    )
