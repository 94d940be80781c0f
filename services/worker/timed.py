"""The worker's re-evaluation of segments whose answer changes with time alone."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from shared.membership import SegmentCatalog, recompute_with_dependents
from shared.membership.cache import MembershipCache


async def recheck_timed_segments(
    pool: asyncpg.Pool, cache: MembershipCache, catalog: SegmentCatalog, now: datetime
) -> int:
    """Re-evaluate every segment whose answer can change with time alone (relative dates,
    event windows) at ``now``; only real entries and exits are recorded. Returns how many
    segments were rechecked."""
    checked = 0
    env_ids = [r["id"] for r in await pool.fetch("SELECT id FROM environments ORDER BY id")]
    for env_id in env_ids:
        async with pool.acquire() as conn:
            segments = await catalog.load(conn, env_id)
        for segment in segments.dynamic:
            if segment.timed:
                await recompute_with_dependents(
                    pool, cache, env_id, segment.id, now, wait=False, cause="time"
                )
                checked += 1
    return checked
