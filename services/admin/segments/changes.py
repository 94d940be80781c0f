"""A segment's change feed: every entry and exit, oldest first, paged by cursor.

The cursor is the id of the last change a page held (change ids only grow), so a client that
keeps the last ``nextCursor`` and calls again later receives exactly the changes recorded
since: the feed can be followed as well as paged.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec

from shared.db import Conn


class Change(msgspec.Struct, kw_only=True):
    """One entry (``entered`` true) or exit of a user. ``id`` is the id webhook payloads carry.
    ``userId`` is the user's userId (an anonymous profile's first anonymous id), or None when
    the user has since been erased or merged away. ``cause``: ``message`` (data from ingest),
    ``recompute`` (a bulk recompute), ``time`` (a time-dependent re-check), ``admin`` (the
    admin API), ``import`` (a CSV import) or ``erase`` (a privacy erase)."""

    id: str
    userId: str | None
    entered: bool
    cause: str
    at: datetime


class ChangesPage(msgspec.Struct):
    """``nextCursor``: pass it back as ``cursor`` to continue (None only when there has never
    been a change to continue after). ``hasMore``: more changes are already waiting."""

    changes: list[Change]
    nextCursor: str | None
    hasMore: bool


async def changes_page(
    conn: Conn | asyncpg.Pool, env_id: int, segment_id: int, limit: int, after: int
) -> ChangesPage:
    """Up to ``limit`` changes of a segment with id > ``after``, oldest first."""
    rows = await conn.fetch(
        """SELECT c.id, c.entered, c.cause, c.at,
                  coalesce(u.user_id, (SELECT min(i.anonymous_id) FROM identities i
                                       WHERE i.env_id = u.env_id AND i.user_pk = u.id)) AS ident
           FROM membership_changes c
           LEFT JOIN users u ON u.env_id = c.env_id AND u.id = c.user_pk
           WHERE c.env_id = $1 AND c.segment_id = $2 AND c.id > $3
           ORDER BY c.id LIMIT $4""",
        env_id,
        segment_id,
        after,
        limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    changes = [
        Change(
            id=str(r["id"]), userId=r["ident"], entered=r["entered"], cause=r["cause"], at=r["at"]
        )
        for r in rows
    ]
    last = rows[-1]["id"] if rows else (after or None)
    return ChangesPage(changes, None if last is None else str(last), more)
