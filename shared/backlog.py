"""The deployment's state as an operator judges it, read from PostgreSQL and Redis (so it can
be read while every service is down): the five figures to alert on.

1. **Worker lag**: the age of the oldest inbox row (beside the inbox depth). Acknowledged
   messages wait there until the worker applies them; healthy is well under a second.
2. **Dead letters**: messages the worker could not apply (kept with their error). Each one is
   a message whose data is not in the profiles.
3. **Recomputes**: segments whose bulk recompute failed for good, and recomputes running for
   long (segments still answer from their old membership meanwhile).
4. **Webhooks**: deliveries failing (being retried) and deliveries given up.
5. **Cache**: cache outbox notes overdue (Redis sets that PostgreSQL has moved past and
   nobody has rewritten) and drift repairs of the verifier (a set was wrong).

Every query is bounded: the inbox is counted exactly up to :data:`EXACT_COUNT` rows, then
estimated from PostgreSQL's statistics (``pg_stat_user_tables.n_live_tup``); the other
figures read indexes (oldest inbox row by ``inbox_order``, dead letters of the last day by
``dead_letters_at``, webhook backlog by partial indexes on status).
"""

from __future__ import annotations

import time

import asyncpg
import msgspec
import redis.asyncio as aioredis

from shared import metrics
from shared.redis_keys import cache_repaired_at_key, cache_repairs_key

#: The inbox (and dead letters) are counted exactly up to this many rows, then estimated.
EXACT_COUNT = 10_000

# Thresholds at which a figure is at alert level (README: "What to alert on").
LAG_ALERT_SECONDS = 30.0
RECOMPUTE_ALERT_SECONDS = 1800.0
WEBHOOK_FAILING_ATTEMPTS = 3
OUTBOX_OVERDUE_SECONDS = 30.0
DRIFT_RECENT_SECONDS = 3600.0

_READ = f"""
SELECT
  (SELECT count(*) FROM (SELECT 1 FROM inbox LIMIT {EXACT_COUNT + 1}) s) AS inbox_counted,
  (SELECT n_live_tup FROM pg_stat_user_tables
   WHERE relid = 'inbox'::regclass) AS inbox_estimate,
  coalesce(extract(epoch FROM clock_timestamp()
           - (SELECT received_at FROM inbox ORDER BY id LIMIT 1)), 0) AS lag,
  (SELECT count(*) FROM (SELECT 1 FROM dead_letters LIMIT {EXACT_COUNT + 1}) s) AS dead,
  (SELECT count(*) FROM dead_letters WHERE at > now() - interval '1 day') AS dead_day,
  (SELECT count(*) FROM segments WHERE status = 'computing') AS computing,
  (SELECT count(*) FROM segments WHERE status = 'failed') AS failed,
  coalesce(extract(epoch FROM clock_timestamp()
           - (SELECT min(started_at) FROM segment_progress)), 0) AS longest_recompute,
  (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending') AS hooks_pending,
  (SELECT count(*) FROM webhook_deliveries
   WHERE status = 'pending' AND attempts >= {WEBHOOK_FAILING_ATTEMPTS}) AS hooks_failing,
  (SELECT count(*) FROM webhook_deliveries
   WHERE status = 'failed' AND next_attempt_at > now() - interval '1 day') AS hooks_gave_up,
  (SELECT count(*) FROM cache_outbox
   WHERE created_at < clock_timestamp()
         - make_interval(secs => {OUTBOX_OVERDUE_SECONDS})) AS outbox_overdue
"""


class Backlog(msgspec.Struct, kw_only=True):
    """The figures, as read at one moment."""

    inbox_depth: int
    #: whether inbox_depth is PostgreSQL's estimate (beyond EXACT_COUNT rows)
    inbox_estimated: bool
    #: seconds since the oldest inbox row was received (0: inbox empty)
    inbox_lag_seconds: float
    dead_letters: int
    dead_letters_last_day: int
    recomputes_queued: int
    recomputes_failed: int
    longest_recompute_seconds: float
    webhooks_pending: int
    webhooks_failing: int
    webhooks_gave_up_last_day: int
    cache_outbox_overdue: int
    #: repairs since Redis started, and seconds since the latest (None: never)
    cache_repairs: int
    cache_last_repair_seconds: float | None
    #: why Redis could not be read (None: it answered)
    redis_error: str | None = None


async def read_backlog(pool: asyncpg.Pool, redis: aioredis.Redis, prefix: str) -> Backlog:
    """The figures now (Redis unreachable: no repairs known)."""
    row = await pool.fetchrow(_READ)
    assert row is not None
    counted = int(row["inbox_counted"])
    estimated = counted > EXACT_COUNT
    depth = max(counted, int(row["inbox_estimate"] or 0)) if estimated else counted
    redis_error = None
    try:
        repairs, repaired_at = await redis.mget(
            cache_repairs_key(prefix), cache_repaired_at_key(prefix)
        )
    except (OSError, aioredis.RedisError) as exc:
        repairs, repaired_at, redis_error = None, None, repr(exc)
    return Backlog(
        inbox_depth=depth,
        inbox_estimated=estimated,
        inbox_lag_seconds=float(row["lag"]),
        dead_letters=int(row["dead"]),
        dead_letters_last_day=int(row["dead_day"]),
        recomputes_queued=int(row["computing"]),
        recomputes_failed=int(row["failed"]),
        longest_recompute_seconds=float(row["longest_recompute"]),
        webhooks_pending=int(row["hooks_pending"]),
        webhooks_failing=int(row["hooks_failing"]),
        webhooks_gave_up_last_day=int(row["hooks_gave_up"]),
        cache_outbox_overdue=int(row["outbox_overdue"]),
        cache_repairs=int(repairs or 0),
        cache_last_repair_seconds=(
            max(0.0, time.time() - int(repaired_at)) if repaired_at is not None else None
        ),
        redis_error=redis_error,
    )


class Figure(msgspec.Struct, frozen=True):
    """One line of ``segments status``: a name, what was found, and whether it is at alert
    level."""

    name: str
    alert: bool
    text: str


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def _count(n: int, bounded: bool = True) -> str:
    return f"{EXACT_COUNT:,}+" if bounded and n > EXACT_COUNT else f"{n:,}"


def figures(b: Backlog) -> list[Figure]:
    """The five figures with their verdicts (thresholds above)."""
    depth = f"~{b.inbox_depth:,}" if b.inbox_estimated else f"{b.inbox_depth:,}"
    lag = (
        "inbox empty"
        if b.inbox_depth == 0
        else f"oldest inbox row {_ago(b.inbox_lag_seconds)} old, {depth} rows waiting"
    )
    recompute = f"{b.recomputes_failed} failed, {b.recomputes_queued} computing"
    if b.longest_recompute_seconds:
        recompute += f" (longest running {_ago(b.longest_recompute_seconds)})"
    if b.redis_error is not None:
        repairs = f"Redis unreachable: {b.redis_error}"
    elif b.cache_last_repair_seconds is None:
        repairs = "no drift repaired"
    else:
        repairs = (
            f"{b.cache_repairs:,} sets repaired, the latest {_ago(b.cache_last_repair_seconds)} ago"
        )
    return [
        Figure("worker lag", b.inbox_lag_seconds >= LAG_ALERT_SECONDS, lag),
        Figure(
            "dead letters",
            b.dead_letters_last_day > 0,
            f"{b.dead_letters_last_day:,} in the last day, {_count(b.dead_letters)} kept",
        ),
        Figure(
            "recomputes",
            b.recomputes_failed > 0 or b.longest_recompute_seconds >= RECOMPUTE_ALERT_SECONDS,
            recompute,
        ),
        Figure(
            "webhooks",
            b.webhooks_failing > 0 or b.webhooks_gave_up_last_day > 0,
            f"{b.webhooks_failing:,} failing ({WEBHOOK_FAILING_ATTEMPTS}+ attempts), "
            f"{b.webhooks_gave_up_last_day:,} given up in the last day, "
            f"{b.webhooks_pending:,} pending",
        ),
        Figure(
            "cache",
            b.cache_outbox_overdue > 0
            or b.redis_error is not None
            or (
                b.cache_last_repair_seconds is not None
                and b.cache_last_repair_seconds < DRIFT_RECENT_SECONDS
            ),
            f"{b.cache_outbox_overdue:,} outbox notes overdue, {repairs}",
        ),
    ]


def publish(b: Backlog) -> None:
    """Set admin's scrape-time gauges (:mod:`shared.metrics`) to ``b``."""
    metrics.INBOX_DEPTH.set(b.inbox_depth)
    metrics.INBOX_LAG.set(b.inbox_lag_seconds)
    metrics.DEAD_LETTERS_KEPT.set(b.dead_letters)
    metrics.DEAD_LETTERS_DAY.set(b.dead_letters_last_day)
    metrics.RECOMPUTES_QUEUED.set(b.recomputes_queued)
    metrics.RECOMPUTES_FAILED.set(b.recomputes_failed)
    metrics.RECOMPUTE_LONGEST.set(b.longest_recompute_seconds)
    metrics.WEBHOOKS_PENDING.set(b.webhooks_pending)
    metrics.WEBHOOKS_FAILING.set(b.webhooks_failing)
    metrics.WEBHOOKS_GAVE_UP.set(b.webhooks_gave_up_last_day)
    metrics.CACHE_OUTBOX_OVERDUE.set(b.cache_outbox_overdue)
