"""The worker's re-evaluation of segments whose answer changes with time alone.

A pass over such a segment evaluates only the users whose answer can have changed by time
alone since the segment's last pass (:mod:`shared.membership.time_marks`), through the bulk
recompute's own steps: entries and exits logged with cause ``time``, Redis, webhooks and
membership versions as for any recompute. The first pass, one after an edit or a requested
recompute, and one every ``FULL_PASS_SECONDS`` are over every user. The segments built on one
whose membership changed are recomputed after it.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec

from shared.membership import SegmentCatalog, recompute_with_dependents
from shared.membership.cache import MembershipCache
from shared.membership.time_marks import load_mark, save_mark


class TimePass(msgspec.Struct):
    """What one pass did."""

    #: time-dependent segments rechecked
    segments: int = 0
    #: passes over every user (the segments' and their dependents')
    whole: int = 0
    #: passes over the users whose answer could have changed since the last
    targeted: int = 0
    #: users evaluated by the passes over the users whose answer could have changed
    evaluated: int = 0
    entered: int = 0
    exited: int = 0


async def recheck_timed_segments(
    pool: asyncpg.Pool,
    cache: MembershipCache,
    catalog: SegmentCatalog,
    now: datetime,
    *,
    env_id: int | None = None,
) -> TimePass:
    """Re-evaluate every segment whose answer can change with time alone (relative dates,
    event windows) at ``now``, in every environment or in ``env_id``'s; only real entries
    and exits are recorded."""
    done = TimePass()
    if env_id is not None:
        env_ids = [env_id]
    else:
        env_ids = [r["id"] for r in await pool.fetch("SELECT id FROM environments ORDER BY id")]
    for env in env_ids:
        async with pool.acquire() as conn:
            segments = await catalog.load(conn, env)
        for segment in segments.dynamic:
            if not segment.timed:
                continue
            async with pool.acquire() as conn:
                stored = await load_mark(conn, env, segment.id)
            results = await recompute_with_dependents(
                pool,
                cache,
                env,
                segment.id,
                now,
                wait=False,
                cause="time",
                mark=None if stored is None else stored.window(now),
            )
            done.segments += 1
            async with pool.acquire() as conn:
                for result in results:
                    await save_mark(conn, env, result, now)
                    if result.evaluated is None:
                        done.whole += 1
                    else:
                        done.targeted += 1
                        done.evaluated += result.evaluated
                    done.entered += result.entered
                    done.exited += result.exited
    return done
