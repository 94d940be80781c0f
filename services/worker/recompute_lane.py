"""The worker's recompute lane: bulk recomputes run here, a bounded number at once, beside
the inbox drain (never in its way: they are not arq jobs holding its slots, and a recompute
locks a chunk's users for one short transaction at a time).

What to recompute is durable in PostgreSQL: a segment whose status is ``computing`` (set in
the transaction that changed its definition or the data under it). The lane claims such a
segment with a lease in its row (a killed worker's claim expires and another worker takes
it over at the segment's resume cursor), never one that refers to a segment still computing
(that one would change under it), and runs :func:`recompute_segment`.

A failure is retried with a growing delay, resuming where the last attempt stopped; a
condition that no longer compiles or a third failure (e.g. three statement timeouts) ends the
segment ``failed`` with the reason, never ``computing`` for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from datetime import UTC, datetime

import asyncpg
import msgspec

from shared.conditions import ConditionError
from shared.membership import recompute_segment
from shared.membership.cache import MembershipCache
from shared.membership.graph import load_refs
from shared.membership.recompute import LEASE_SECONDS
from shared.metrics import RECOMPUTE_DURATION, RECOMPUTES_RUNNING

log = logging.getLogger(__name__)

#: Attempts before a recompute is 'failed'.
MAX_ATTEMPTS = 3
#: Seconds between two looks for work when nobody wakes the lane.
POLL_SECONDS = 0.5
#: Seconds before the next attempt, per attempt made.
RETRY_SECONDS = 2.0
#: Errors that another attempt cannot fix.
PERMANENT = (ConditionError, asyncpg.DataError, asyncpg.SyntaxOrAccessError)


class Claim(msgspec.Struct, frozen=True):
    env_id: int
    segment_id: int
    generation: int
    attempts: int


class RecomputeLane:
    """Claims computing segments and recomputes up to ``concurrency`` of them at once."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        cache: MembershipCache,
        *,
        concurrency: int,
        statement_seconds: float,
    ) -> None:
        self.pool = pool
        self.cache = cache
        self.concurrency = max(1, concurrency)
        self.statement_seconds = statement_seconds
        self.running: dict[tuple[int, int], asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None

    def start(self) -> None:
        RECOMPUTES_RUNNING.set_function(lambda: len(self.running))
        self._loop = asyncio.create_task(self._run_loop())

    def wake(self) -> None:
        """Look for work now (a recompute was requested)."""
        self._wake.set()

    async def stop(self) -> None:
        tasks = [t for t in (self._loop, *self.running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _run_loop(self) -> None:
        while True:
            try:
                await self.fill()
            except Exception as exc:  # PostgreSQL away: look again later
                log.warning("recompute lane: could not claim work: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            self._wake.clear()

    async def fill(self) -> int:
        """Claim work for the free slots; returns how many recomputes it started."""
        free = self.concurrency - len(self.running)
        if free <= 0:
            return 0
        claims = await claim(self.pool, free, exclude=set(self.running))
        for c in claims:
            key = (c.env_id, c.segment_id)
            self.running[key] = asyncio.create_task(self._recompute(c))
        return len(claims)

    async def _recompute(self, c: Claim) -> None:
        started = time.perf_counter()
        outcome = "retry"  # an exception below that nothing turns into another outcome
        try:
            result = await recompute_segment(
                self.pool,
                self.cache,
                c.env_id,
                c.segment_id,
                datetime.now(UTC),
                wait=False,
                statement_timeout=self.statement_seconds,
            )
            outcome = "done"
            if result is None:  # busy elsewhere, gone, or requested again: look again soon
                outcome = "skipped"
                await _release(self.pool, c, delay=1.0)
        except PERMANENT as exc:
            outcome = "failed"
            await _fail(self.pool, c, exc)
        except Exception as exc:
            if c.attempts >= MAX_ATTEMPTS:
                outcome = "failed"
                await _fail(self.pool, c, exc)
            else:
                log.warning(
                    "recompute of segment %s failed (attempt %d), resuming later: %r",
                    c.segment_id,
                    c.attempts,
                    exc,
                )
                await _release(self.pool, c, delay=RETRY_SECONDS * c.attempts)
        finally:
            RECOMPUTE_DURATION.labels(outcome).observe(time.perf_counter() - started)
            self.running.pop((c.env_id, c.segment_id), None)
            self.wake()


async def claim(pool: asyncpg.Pool, limit: int, exclude: set[tuple[int, int]]) -> list[Claim]:
    """Claim up to ``limit`` computing segments whose claim is free and none of whose
    referenced segments (directly or not) is computing."""
    rows = await pool.fetch(
        """SELECT env_id, id, recompute_claimed_until IS NULL
                  OR recompute_claimed_until < clock_timestamp() AS free
           FROM segments WHERE status = 'computing' AND kind = 'dynamic'
           ORDER BY recompute_attempts, id"""
    )
    computing: dict[int, set[int]] = defaultdict(set)
    for r in rows:
        computing[r["env_id"]].add(r["id"])
    refs: dict[int, dict[int, set[int]]] = {}
    out: list[Claim] = []
    for r in rows:
        env_id, seg_id = r["env_id"], r["id"]
        if len(out) >= limit:
            break
        if not r["free"] or (env_id, seg_id) in exclude:
            continue
        if env_id not in refs:
            async with pool.acquire() as conn:
                refs[env_id] = await load_refs(conn, env_id)
        if _waits_for(refs[env_id], seg_id, computing[env_id]):
            continue
        taken = await pool.fetchrow(
            f"""UPDATE segments
                SET recompute_claimed_until = clock_timestamp() + interval '{LEASE_SECONDS} s',
                    recompute_attempts = recompute_attempts + 1
                WHERE env_id = $1 AND id = $2 AND status = 'computing'
                  AND (recompute_claimed_until IS NULL
                       OR recompute_claimed_until < clock_timestamp())
                RETURNING recompute_generation, recompute_attempts""",
            env_id,
            seg_id,
        )
        if taken is not None:
            out.append(Claim(env_id, seg_id, taken[0], taken[1]))
    return out


def _waits_for(refs: dict[int, set[int]], segment_id: int, computing: set[int]) -> bool:
    """Whether a segment ``segment_id`` refers to, directly or through others, is computing."""
    seen: set[int] = set()
    todo = list(refs.get(segment_id, ()))
    while todo:
        ref = todo.pop()
        if ref in seen:
            continue
        if ref in computing:
            return True
        seen.add(ref)
        todo.extend(refs.get(ref, ()))
    return False


async def _release(pool: asyncpg.Pool, c: Claim, delay: float) -> None:
    """Give the claim back; no one takes the segment before ``delay`` seconds."""
    with contextlib.suppress(asyncpg.PostgresError, OSError):
        await pool.execute(
            """UPDATE segments
               SET recompute_claimed_until = clock_timestamp() + make_interval(secs => $3)
               WHERE env_id = $1 AND id = $2 AND status = 'computing'""",
            c.env_id,
            c.segment_id,
            delay,
        )


async def _fail(pool: asyncpg.Pool, c: Claim, exc: BaseException) -> None:
    """The segment ends 'failed' with the reason (unless it was requested again meanwhile)."""
    reason = _reason(exc)
    log.error("recompute of segment %s failed for good: %s", c.segment_id, reason)
    with contextlib.suppress(asyncpg.PostgresError, OSError):
        await pool.execute(
            """UPDATE segments SET status = 'failed', status_reason = $4,
                      recompute_claimed_until = NULL, recompute_cursor = 0
               WHERE env_id = $1 AND id = $2 AND recompute_generation = $3""",
            c.env_id,
            c.segment_id,
            c.generation,
            reason,
        )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncpg.QueryCanceledError):
        return f"the recompute timed out ({exc}) {MAX_ATTEMPTS} times"
    if isinstance(exc, ConditionError):
        return f"the conditions no longer compile: {exc}"
    return f"{type(exc).__name__}: {exc}"[:500]
