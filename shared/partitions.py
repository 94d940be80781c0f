"""Time partitions of the tables that grow with traffic (migration 060), kept by the worker.

``processed_messages``, ``membership_changes`` and ``webhook_deliveries`` are partitioned
by time, by ISO week (from Monday 00:00 UTC). :func:`maintain` (the worker's ``maintain_partitions``
cron, hourly and at start-up):

- creates the partitions of the coming periods ahead of need (SQL function
  ``segments_add_partition``, shared with the migration);
- moves rows the DEFAULT partition took while a period had no partition (the job lagged)
  into their partitions, by creating those;
- drops each partition whose whole period is older than the table's retention
  (``SEGMENTS_RETENTION_*_DAYS``): ``DETACH`` then ``DROP``, never a ``DELETE``, so the
  cost does not grow with the rows. A webhook delivery still pending when its partition
  expires (its webhook was paused all that time) is first moved to the current partition
  (``created_at`` now), so none is lost.

Expired means: the partition's whole period ended at least the retention before today, so a
row is kept between the retention and the retention plus one period.

Each step runs in a transaction of its own under a short ``lock_timeout``: a partition that
cannot be locked in time (a long transaction reads it) is left for the next run. One worker
runs it at a time (an advisory lock; the others skip their run).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import date, timedelta

import asyncpg

from shared.db import Conn
from shared.settings import Settings

log = logging.getLogger(__name__)

#: How long DDL waits for a lock before giving up until the next run. While a DETACH (or
#: the ATTACH of a new period, on the default partition) waits, writers of that table queue
#: behind it: the worker's inserts pause for as long as the longest transaction then running
#: on the table, at most this.
LOCK_TIMEOUT = "5s"
#: Advisory lock held by the worker running the maintenance (others skip their run).
MAINTENANCE_LOCK = 7_413_061


@dataclass(frozen=True)
class Partitioned:
    table: str
    #: the period: 1 (days) or 7 (ISO weeks, from Monday)
    days: int
    #: days ahead of today whose partitions exist
    ahead: int
    #: the UTC day of a row, in SQL
    day_of: str
    #: the Settings field holding the retention in days
    retention: str
    #: statements run on an expiring partition's range ($1, $2: its bounds; $3: today)
    #: before the drop
    before_drop: tuple[str, ...] = field(default=())


TABLES = (
    Partitioned("processed_messages", 7, 14, "day", "retention_processed_days"),
    Partitioned(
        "membership_changes", 7, 14, "(at AT TIME ZONE 'UTC')::date", "retention_changes_days"
    ),
    Partitioned(
        "webhook_deliveries",
        7,
        14,
        "(created_at AT TIME ZONE 'UTC')::date",
        "retention_deliveries_days",
        before_drop=(
            """UPDATE webhook_deliveries
               SET created_at = greatest(now(), $3::date::timestamp AT TIME ZONE 'UTC')
               WHERE status = 'pending'
                 AND created_at >= ($1::date::timestamp AT TIME ZONE 'UTC')
                 AND created_at < ($2::date::timestamp AT TIME ZONE 'UTC')""",
        ),
    ),
)

_SUFFIX = re.compile(r"_p(\d{8})$")


@dataclass
class Maintenance:
    created: int = 0
    dropped: list[str] = field(default_factory=list)
    #: partitions left for the next run (a lock not granted in time)
    skipped: list[str] = field(default_factory=list)


async def partitions(conn: Conn | asyncpg.Pool, table: str) -> list[tuple[str, date]]:
    """(name, first day) of each dated partition of ``table``, oldest first."""
    rows = await conn.fetch(
        """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = $1::regclass""",
        table,
    )
    out = []
    for r in rows:
        m = _SUFFIX.search(r["relname"])
        if m:
            out.append((r["relname"], date.fromisoformat(m.group(1))))
    return sorted(out, key=lambda p: p[1])


async def _today(conn: Conn) -> date:
    today: date = await conn.fetchval("SELECT (now() AT TIME ZONE 'UTC')::date")
    return today


async def maintain_table(
    conn: Conn, spec: Partitioned, retention_days: int, today: date, report: Maintenance
) -> None:
    oldest = await conn.fetchval(f"SELECT min({spec.day_of}) FROM {spec.table}_default")
    first = today if oldest is None else min(oldest, today)
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            report.created += await conn.fetchval(
                "SELECT segments_add_partitions($1, $2, $3, $4)",
                spec.table,
                spec.days,
                first,
                today + timedelta(days=spec.ahead),
            )
    except asyncpg.LockNotAvailableError:
        report.skipped.append(f"{spec.table} (creating)")
    horizon = today - timedelta(days=max(1, retention_days))
    for name, lo in await partitions(conn, spec.table):
        hi = lo + timedelta(days=spec.days)
        if hi > horizon:
            break
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                for statement in spec.before_drop:
                    await conn.execute(statement, lo, hi, today)
                await conn.execute(f'ALTER TABLE {spec.table} DETACH PARTITION "{name}"')
                await conn.execute(f'DROP TABLE "{name}"')
            report.dropped.append(name)
        except asyncpg.LockNotAvailableError:
            report.skipped.append(name)


async def maintain(
    pool: asyncpg.Pool, settings: Settings, today: date | None = None
) -> Maintenance:
    """Create the coming partitions, empty the default ones, drop the expired ones.
    ``today`` (a UTC day) replaces the database clock (tests)."""
    report = Maintenance()
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", MAINTENANCE_LOCK):
            return report  # another worker is at it
        try:
            day = today or await _today(conn)
            for spec in TABLES:
                await maintain_table(conn, spec, getattr(settings, spec.retention), day, report)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MAINTENANCE_LOCK)
    if report.dropped:
        log.info("partitions dropped past their retention: %s", ", ".join(report.dropped))
    if report.skipped:
        log.warning("partitions not locked in time, left for the next run: %s", report.skipped)
    return report
