"""What the worker's time pass remembers per segment (table ``segment_time_marks``, migration
091), so that its next pass evaluates only the users whose answer can have changed by time
alone since then (:class:`~shared.membership.recompute.TimeMark`).

A mark is written only after a pass that decided every user's answer at its ``now`` (a pass
from the first user, or one given a mark) and left the segment ``ready`` at the version and
request generation it ran under. It stays valid while the segment keeps both: an edit moves
the version, and any request for a recompute (the lane's work, the data under the segment, a
segment it refers to) moves the generation, so the next pass is over every user.

Two bounds keep it exact:

- a writer that evaluated a user at an earlier ``now`` may commit after the pass decided that
  user (a drain batch reads its clock once, before its users' locks): the window starts
  ``LATE_WRITER_SECONDS`` before the mark, longer than any writer's transaction lasts (a drain
  job is cancelled after 60 s, an import's batch is one short transaction);
- a pass over every user at least every ``FULL_PASS_SECONDS``, which also ends a window grown
  long while the worker was away.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from shared.db import Conn
from shared.membership.recompute import RecomputeResult, TimeMark

#: Seconds before the last pass at which the next one's window starts (see the module's doc).
LATE_WRITER_SECONDS = 300
#: Seconds after which a segment's time pass is over every user again.
FULL_PASS_SECONDS = 6 * 3600


class StoredMark(msgspec.Struct, frozen=True):
    version: int
    generation: int
    passed_at: datetime
    full_at: datetime

    def window(self, now: datetime) -> TimeMark | None:
        """The mark a pass at ``now`` may use; None: that pass is over every user."""
        if now - self.full_at > timedelta(seconds=FULL_PASS_SECONDS):
            return None
        since = self.passed_at - timedelta(seconds=LATE_WRITER_SECONDS)
        return TimeMark(self.version, self.generation, since)


async def load_mark(conn: Conn, env_id: int, segment_id: int) -> StoredMark | None:
    """The segment's last time pass, if it has one."""
    row = await conn.fetchrow(
        """SELECT version, generation, passed_at, full_at FROM segment_time_marks
           WHERE env_id = $1 AND segment_id = $2""",
        env_id,
        segment_id,
    )
    if row is None:
        return None
    return StoredMark(row["version"], row["generation"], row["passed_at"], row["full_at"])


async def save_mark(conn: Conn, env_id: int, result: RecomputeResult, now: datetime) -> bool:
    """Remember a pass at ``now`` that ended with ``result``, if it decided every user and the
    segment is still ``ready`` at the version and generation the pass ran under. Returns
    whether it was remembered."""
    if not result.whole:
        return False
    full = result.evaluated is None
    saved = await conn.fetchval(
        """INSERT INTO segment_time_marks AS t
                  (env_id, segment_id, version, generation, passed_at, full_at)
           SELECT env_id, id, version, recompute_generation, $5,
                  CASE WHEN $6::boolean THEN $5::timestamptz ELSE '-infinity' END
           FROM segments
           WHERE env_id = $1 AND id = $2 AND version = $3 AND recompute_generation = $4
             AND status = 'ready'
           ON CONFLICT (env_id, segment_id) DO UPDATE
           SET version = excluded.version, generation = excluded.generation,
               passed_at = excluded.passed_at,
               full_at = CASE WHEN $6 THEN excluded.full_at ELSE t.full_at END
           RETURNING true""",
        env_id,
        result.segment_id,
        result.version,
        result.generation,
        now,
        full,
    )
    return bool(saved)
