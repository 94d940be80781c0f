"""User profiles as the admin API shows them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from shared.db import Conn


class SegmentSummary(msgspec.Struct):
    id: str
    key: str
    name: str
    #: when the user entered the segment
    since: datetime | None = None


class CompanySummary(msgspec.Struct):
    """A company the user belongs to, with the user's attributes within it (``membership``)."""

    companyId: str
    attributes: dict[str, Any]
    membership: dict[str, Any]


class TagSummary(msgspec.Struct):
    id: str
    key: str
    value: str


class UserProfile(msgspec.Struct, kw_only=True):
    """``GET /v1/users/{userId}``. ``userId`` is None for an anonymous profile."""

    userId: str | None
    anonymousIds: list[str]
    attributes: dict[str, Any]
    firstSeenAt: datetime
    lastSeenAt: datetime
    segments: list[SegmentSummary]
    companies: list[CompanySummary]
    tags: list[TagSummary] = []
    #: when each attribute was last written (or unset): the timestamp of that message
    attributeTimes: dict[str, datetime] = {}


_FIND = """
SELECT id, user_id, attributes, attr_ts, first_seen_at, last_seen_at FROM users
WHERE env_id = $1 AND user_id = $2
UNION ALL
SELECT u.id, u.user_id, u.attributes, u.attr_ts, u.first_seen_at, u.last_seen_at
FROM identities i JOIN users u ON u.env_id = i.env_id AND u.id = i.user_pk
WHERE i.env_id = $1 AND i.anonymous_id = $2
LIMIT 1
"""


async def user_profile(conn: Conn | asyncpg.Pool, env_id: int, ident: str) -> UserProfile | None:
    """The profile of the user with userId (or anonymous id) ``ident``, or None."""
    user = await conn.fetchrow(_FIND, env_id, ident)
    if user is None:
        return None
    pk = user["id"]
    anonymous = await conn.fetch(
        "SELECT anonymous_id FROM identities WHERE env_id = $1 AND user_pk = $2 ORDER BY 1",
        env_id,
        pk,
    )
    segments = await conn.fetch(
        """SELECT s.id, s.key, s.name, m.since FROM memberships m
           JOIN segments s ON s.env_id = m.env_id AND s.id = m.segment_id
           WHERE m.env_id = $1 AND m.user_pk = $2 ORDER BY s.id""",
        env_id,
        pk,
    )
    companies = await conn.fetch(
        """SELECT c.company_id, c.attributes, cm.attributes AS membership
           FROM company_members cm
           JOIN companies c ON c.env_id = cm.env_id AND c.id = cm.company_pk
           WHERE cm.env_id = $1 AND cm.user_pk = $2 ORDER BY c.company_id""",
        env_id,
        pk,
    )
    tags = await conn.fetch(
        """SELECT t.id, t.key, t.value FROM user_tags ut
           JOIN tags t ON t.env_id = ut.env_id AND t.id = ut.tag_id
           WHERE ut.env_id = $1 AND ut.user_pk = $2 ORDER BY t.key, t.value""",
        env_id,
        pk,
    )
    return UserProfile(
        userId=user["user_id"],
        anonymousIds=[r["anonymous_id"] for r in anonymous],
        attributes=user["attributes"],
        firstSeenAt=user["first_seen_at"],
        lastSeenAt=user["last_seen_at"],
        segments=[SegmentSummary(str(r["id"]), r["key"], r["name"], r["since"]) for r in segments],
        companies=[
            CompanySummary(r["company_id"], r["attributes"], r["membership"]) for r in companies
        ],
        tags=[TagSummary(str(r["id"]), r["key"], r["value"]) for r in tags],
        attributeTimes={
            name: datetime.fromtimestamp(ms / 1000, UTC)
            for name, ms in (user["attr_ts"] or {}).items()
            if name in user["attributes"] and isinstance(ms, int | float)
        },
    )
