"""Resync: a ``segment.entered`` delivery with cause ``sync`` for every current member of a
webhook's segments, so that a receiver created after the members (an LMS course group filled
from scratch) or one that lost its state can catch up.

One INSERT ... SELECT queues them all, in the delivery outbox the worker already sends from
(signed, retried, logged like any delivery). Each takes a fresh id from the change log's
sequence, so it sorts and deduplicates like a change, without being one: the change feed
does not list syncs, since nobody entered anything. Only identified users are announced, as
for every webhook delivery.
"""

from __future__ import annotations

import msgspec

from shared.db import Conn

CAUSE = "sync"


class ResyncResult(msgspec.Struct, kw_only=True):
    """How many ``segment.entered`` deliveries (cause ``sync``) were queued."""

    queued: int


_RESYNC = """
WITH members AS (
    SELECT m.segment_id, u.user_id, g.key, g.name,
           nextval(pg_get_serial_sequence('membership_changes', 'id')) AS change_id
    FROM webhooks w
    JOIN segments g ON g.env_id = w.env_id
         AND (w.segment_ids IS NULL OR g.id = ANY (w.segment_ids))
    JOIN memberships m ON m.env_id = g.env_id AND m.segment_id = g.id
    JOIN users u ON u.env_id = m.env_id AND u.id = m.user_pk AND u.user_id IS NOT NULL
    WHERE w.env_id = $1 AND w.id = $2
    ORDER BY m.segment_id, m.user_pk
)
INSERT INTO webhook_deliveries (env_id, webhook_id, change_id, payload)
SELECT $1, $2, change_id, jsonb_build_object(
           'type', 'segment.entered',
           'id', change_id::text,
           'at', now(),
           'cause', $3::text,
           'userId', user_id,
           'segment', jsonb_build_object('id', segment_id::text, 'key', key, 'name', name))
FROM members
"""


async def resync_webhook(conn: Conn, env_id: int, webhook_id: int) -> ResyncResult:
    """Queue a sync delivery to webhook ``webhook_id`` for every current member."""
    status = await conn.execute(_RESYNC, env_id, webhook_id, CAUSE)
    return ResyncResult(queued=int(status.split()[-1]))
