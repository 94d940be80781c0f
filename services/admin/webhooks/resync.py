"""Resync: a ``segment.entered`` delivery with cause ``sync`` for every current member of a
webhook's segments, so that a receiver created after the members (an LMS course group filled
from scratch) or one that lost its state can catch up.

The deliveries are queued in the delivery outbox the worker already sends from (signed,
retried, logged like any delivery), segment by segment in chunks of :data:`CHUNK` members
(by user pk), each chunk one INSERT ... SELECT in a short transaction of its own: a segment of
a million members holds no long transaction and no memory in the admin service. A member who
enters or leaves meanwhile gets the webhook's ordinary delivery for that change as well; a
resync cut short (the service stopped) can be run again, a receiver taking a sync for a
member it has as a no-op. Each delivery takes a fresh id from the change log's sequence, so
it sorts and deduplicates like a change, without being one: the change feed does not list
syncs, since nobody entered anything. Only identified users are announced, as for every
webhook delivery.
"""

from __future__ import annotations

import msgspec

from shared.db import Conn

CAUSE = "sync"
#: Members queued per transaction.
CHUNK = 5000


class ResyncResult(msgspec.Struct, kw_only=True):
    """How many ``segment.entered`` deliveries (cause ``sync``) were queued."""

    queued: int


_SEGMENTS = """
SELECT g.id, g.key, g.name FROM webhooks w
JOIN segments g ON g.env_id = w.env_id AND (w.segment_ids IS NULL OR g.id = ANY (w.segment_ids))
WHERE w.env_id = $1 AND w.id = $2
ORDER BY g.id
"""

#: One chunk: the next ``$5`` identified members of segment ``$3`` after user pk ``$4``, by the
#: primary key of memberships; returns how many were queued and the last pk read.
_CHUNK = """
WITH members AS (
    SELECT m.user_pk, u.user_id
    FROM memberships m
    JOIN users u ON u.env_id = m.env_id AND u.id = m.user_pk
    WHERE m.env_id = $1 AND m.segment_id = $3 AND m.user_pk > $4
    ORDER BY m.user_pk
    LIMIT $5
), queued AS (
    INSERT INTO webhook_deliveries (env_id, webhook_id, change_id, payload)
    SELECT $1, $2, change_id, jsonb_build_object(
               'type', 'segment.entered',
               'id', change_id::text,
               'at', now(),
               'cause', $6::text,
               'userId', user_id,
               'segment', jsonb_build_object('id', $3::text, 'key', $7::text, 'name', $8::text))
    FROM (SELECT user_id, nextval(pg_get_serial_sequence('membership_changes', 'id')) AS change_id
          FROM members WHERE user_id IS NOT NULL ORDER BY user_pk) AS x
    RETURNING 1
)
SELECT (SELECT count(*) FROM queued) AS queued, (SELECT max(user_pk) FROM members) AS last
"""


async def resync_webhook(
    conn: Conn, env_id: int, webhook_id: int, chunk: int = CHUNK
) -> ResyncResult:
    """Queue a sync delivery to webhook ``webhook_id`` for every current member, a chunk per
    transaction (call outside a transaction). Stops when the webhook is deleted meanwhile."""
    segments = await conn.fetch(_SEGMENTS, env_id, webhook_id)
    queued = 0
    for segment in segments:
        after = 0
        while True:
            async with conn.transaction():
                # the webhook stays while the chunk is queued for it (deliveries refer to it)
                if not await conn.fetchval(
                    "SELECT true FROM webhooks WHERE env_id = $1 AND id = $2 FOR KEY SHARE",
                    env_id,
                    webhook_id,
                ):
                    return ResyncResult(queued=queued)
                row = await conn.fetchrow(
                    _CHUNK,
                    env_id,
                    webhook_id,
                    segment["id"],
                    after,
                    chunk,
                    CAUSE,
                    segment["key"],
                    segment["name"],
                )
            assert row is not None
            queued += row["queued"]
            if row["last"] is None:
                break
            after = row["last"]
    return ResyncResult(queued=queued)
