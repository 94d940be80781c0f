"""Where a bulk recompute is, for the admin API (``segment_progress``), and its phase timings
for the log."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg

log = logging.getLogger(__name__)


class Phases:
    """Seconds spent in each named step of a recompute, summed over its chunks."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.spent: dict[str, float] = {}

    def mark(self, step: str) -> None:
        now = time.perf_counter()
        self.spent[step] = self.spent.get(step, 0.0) + now - self.last
        self.last = now

    def __str__(self) -> str:
        return ", ".join(f"{step} {seconds:.2f}s" for step, seconds in self.spent.items())


class Progress:
    """Where a recompute is, written to ``segment_progress`` on connections of its own and
    deleted at the end. A failed write only loses the report."""

    #: the percent of the whole run at which each phase starts and ends
    SPAN = {"selecting": (0, 5), "writing": (5, 100)}
    #: seconds between two reports of the same phase
    EVERY = 0.5

    def __init__(self, pool: asyncpg.Pool, env_id: int, segment_id: int) -> None:
        self.pool = pool
        self.env_id = env_id
        self.segment_id = segment_id
        self.started = datetime.now(UTC)
        self.given_up = False
        self.last: tuple[str, float] | None = None

    async def report(self, phase: str, done: float = 0.0) -> None:
        """Enter ``phase``, ``done`` (0..1) of the way through it (at most every EVERY s)."""
        now = time.monotonic()
        if self.last is not None and self.last[0] == phase and now - self.last[1] < self.EVERY:
            return
        self.last = (phase, now)
        start, end = self.SPAN[phase]
        percent = round(start + (end - start) * min(max(done, 0.0), 1.0))
        try:
            await self._execute(
                """INSERT INTO segment_progress (env_id, segment_id, phase, percent, started_at)
                   VALUES ($1, $2, $3, $4, $5)
                   ON CONFLICT (env_id, segment_id) DO UPDATE
                   SET phase = EXCLUDED.phase, percent = EXCLUDED.percent,
                       started_at = EXCLUDED.started_at, updated_at = now()""",
                self.env_id,
                self.segment_id,
                phase,
                percent,
                self.started,
            )
        except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
            log.warning("progress of segment %s not recorded: %s", self.segment_id, exc)

    async def done(self) -> None:
        try:
            await self._execute(
                "DELETE FROM segment_progress WHERE env_id = $1 AND segment_id = $2",
                self.env_id,
                self.segment_id,
            )
        except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
            log.warning("progress of segment %s not cleared: %s", self.segment_id, exc)

    async def _execute(self, sql: str, *args: Any) -> None:
        # Never wait long for a connection: every other one may be held by recomputes. After
        # one wait in vain, this run reports nothing more.
        if self.given_up:
            return
        try:
            async with self.pool.acquire(timeout=1.0) as conn:
                await conn.execute(sql, *args, timeout=5.0)
        except TimeoutError:
            self.given_up = True
            raise
