"""The worker process: arq jobs and crons, with resources opened on start-up in ``ctx``.

Jobs:
- ``drain``: applies the inbox until it is empty (enqueued by ingest, deduplicated by job id).
- ``recompute_segment(env_id, segment_id)``: wakes the recompute lane
  (:mod:`services.worker.recompute_lane`), which runs bulk recomputes beside the drain.
Crons:
- ``sweep`` (every ``SEGMENTS_SWEEP_SECONDS``): drains anything whose job was lost.
- ``recheck_time`` (every ``SEGMENTS_TIME_RECHECK_SECONDS``): time-dependent segments.
- ``deliver_webhooks`` (every second): signed webhook deliveries, retried with backoff.
- ``sweep_cache_outbox`` (every second): Redis steps of writers that died after committing.
- ``verify_cache`` (every 5 s): the next slice of Redis sets compared with PostgreSQL, drift
  repaired and counted (not while the inbox has a backlog).
- ``maintain_partitions`` (hourly, and at start-up): creates the coming time partitions of
  processed_messages, membership_changes and webhook_deliveries and drops those past their
  retention (shared.partitions).
- ``run_imports`` (every second): applies CSV imports (services.worker.imports).
- ``fold_counts`` (every 30 s): sums each segment's and tag's member count rows into one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
import uvloop
from arq import cron
from arq.connections import RedisSettings
from arq.constants import in_progress_key_prefix
from arq.worker import Worker

from services.worker.drain import DrainStats, InFlight, drain_round
from services.worker.imports import RUN_SECONDS, run_imports
from services.worker.metrics_server import MetricsServer
from services.worker.outage import Dependency, ResilientWorker, needs_postgres, postgres_gone
from services.worker.recompute_lane import RecomputeLane
from services.worker.timed import recheck_timed_segments
from services.worker.webhooks import deliver_webhooks
from shared import member_counts, metrics, partitions
from shared.db import create_pool
from shared.membership import SegmentCatalog, outbox
from shared.membership.cache import MembershipCache, rebuild_cache
from shared.membership.verify import CacheVerifier
from shared.redis_keys import cache_marker_key, drain_job_id, queue_name
from shared.settings import Settings

log = logging.getLogger("segments.worker")

HEALTH_CHECK_INTERVAL = 2
POLL_DELAY = 0.01
#: A drain job works at most this long, then ends (the next job or sweep carries on), so that
#: a job lost with a killed worker blocks its job id for at most DRAIN_TIMEOUT.
DRAIN_SECONDS = 20
DRAIN_TIMEOUT = 60
#: A round that found fewer rows than this waits GATHER_SECONDS before the next claim, so that
#: a steady trickle is applied in batches of some size rather than a round per few messages:
#: each round has a fixed cost (a dozen statements, a commit, a Redis write) that small
#: batches pay again and again. A backlog (full rounds) never waits.
GATHER_ROWS = 200
GATHER_SECONDS = 0.025
#: The cache verifier waits until no drain round has been full for this long (a backlog).
BACKLOG_QUIET_SECONDS = 5.0


async def _startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    assert settings.database_url is not None and settings.redis_url is not None
    postgres = ctx["postgres"] = Dependency("postgresql")
    while True:  # a worker started before its database waits for it
        try:
            ctx["pool"] = await create_pool(settings.database_url, size=settings.db_pool_size)
            break
        except Exception as exc:
            if not postgres_gone(exc):
                raise
            await asyncio.sleep(postgres.failed(exc))
    postgres.succeeded()
    ctx["cache_redis"] = aioredis.Redis.from_url(settings.redis_url)
    ctx["cache"] = MembershipCache(ctx["cache_redis"], settings.redis_prefix)
    ctx["catalog"] = SegmentCatalog()
    ctx["drain_lock"] = asyncio.Lock()
    ctx.update(drain_state())
    # A worker killed in a drain (or cache rebuild) job leaves arq's in-progress mark on that
    # fixed job id for the longest job timeout (an hour): enqueues are deduplicated into the
    # dead job meanwhile (only the sweep drains). Both jobs are idempotent and may run in two
    # workers at once (the inbox is shared through SKIP LOCKED, Redis writes are versioned),
    # so the marks are dropped and the jobs run again now.
    fixed_ids = (drain_job_id(settings.redis_prefix), _rebuild_job_id(settings.redis_prefix))
    await ctx["redis"].delete(*(in_progress_key_prefix + job_id for job_id in fixed_ids))
    ctx["lane"] = RecomputeLane(
        ctx["pool"],
        ctx["cache"],
        concurrency=settings.recompute_concurrency,
        statement_seconds=settings.recompute_statement_seconds,
    )
    ctx["lane"].start()
    ctx["verifier"] = CacheVerifier(ctx["pool"], ctx["cache"])
    ctx["metrics_server"] = MetricsServer(settings, ctx["pool"])
    await ctx["metrics_server"].start()


async def _shutdown(ctx: dict[str, Any]) -> None:
    if "metrics_server" in ctx:
        await ctx["metrics_server"].close()
    if "lane" in ctx:  # absent when start-up failed before it
        await ctx["lane"].stop()
    await ctx["pool"].close()
    await ctx["cache_redis"].aclose()


@dataclass
class Backlog:
    """When a drain round was last full (``time.monotonic()``)."""

    seen: float = float("-inf")

    def recent(self) -> bool:
        return time.monotonic() - self.seen < BACKLOG_QUIET_SECONDS


def drain_state() -> dict[str, Any]:
    """What the jobs of one worker process share about its drain, made once at start-up:
    arq hands each job a copy of ``ctx``, so a job keeps what others read in these objects,
    never in ``ctx`` itself."""
    return {"backlog": Backlog(), "inflight": InFlight()}


async def drain(ctx: dict[str, Any]) -> int:
    """Apply inbox rows until the inbox is empty; returns how many were consumed. One drain
    job at a time per process; it runs ``SEGMENTS_DRAIN_LANES`` rounds at once, so that
    PostgreSQL writes one batch while the worker evaluates another, without two messages
    about one identity applied out of order (:class:`services.worker.drain.InFlight`).
    Other processes share the inbox through SKIP LOCKED."""
    lock: asyncio.Lock = ctx["drain_lock"]
    if lock.locked():
        return 0
    settings: Settings = ctx["settings"]
    stats = DrainStats()
    lanes = max(1, settings.drain_lanes)
    inflight: InFlight = ctx["inflight"]
    backlog: Backlog = ctx["backlog"]
    deadline = time.monotonic() + DRAIN_SECONDS
    busy = set(range(lanes))
    counted = [0]  # dead letters already counted in the metric

    async def lane(index: int) -> None:
        while True:
            rows = await drain_round(
                ctx["pool"], ctx["cache"], ctx["catalog"], settings.worker_batch, stats, inflight
            )
            if rows:
                busy.add(index)
                if rows >= settings.worker_batch:
                    backlog.seen = time.monotonic()
                metrics.INBOX_ROWS.inc(rows)
                metrics.DRAIN_ROUNDS.inc()
                if stats.dead > counted[0]:
                    metrics.DEAD_LETTERS.inc(stats.dead - counted[0])
                    counted[0] = stats.dead
            else:
                # Nothing to claim, or only rows another lane's round holds identities of:
                # done once every lane is (that round may leave more behind it).
                busy.discard(index)
                if not busy:
                    return
            if time.monotonic() > deadline:
                return  # the next drain job or sweep goes on: a job ends well before its timeout
            if rows < GATHER_ROWS:
                await asyncio.sleep(GATHER_SECONDS)

    async with lock:
        await asyncio.gather(*(lane(i) for i in range(lanes)))
    if stats.messages:
        log.info(
            "drained %d rows in %d rounds (%d duplicates, %d dead letters)",
            stats.messages,
            stats.rounds,
            stats.duplicates,
            stats.dead,
        )
    if stats.redis_unavailable:
        log.warning(
            "redis unavailable: membership sets of %d rounds not written", stats.redis_unavailable
        )
    return stats.messages


async def sweep(ctx: dict[str, Any]) -> int:
    """Cron: catch inbox rows whose drain job was lost (Redis restarted, worker killed).
    (Recomputes need no sweep: the recompute lane finds computing segments by itself.)"""
    drained = await drain(ctx)
    await _rebuild_if_flushed(ctx)
    return drained


async def sweep_cache_outbox(ctx: dict[str, Any]) -> int:
    """Cron (every second): finish the Redis step of writers that died after their commit."""
    swept = await outbox.sweep(ctx["pool"], ctx["cache"])
    metrics.CACHE_OUTBOX_SWEPT.inc(swept)
    return swept


async def verify_cache(ctx: dict[str, Any]) -> int:
    """Cron: compare the next slice of Redis sets with PostgreSQL and repair drift (a safety
    net behind the outbox: it finds what nothing else should have left). Skipped while the
    inbox has a backlog (a full drain round within BACKLOG_QUIET_SECONDS): its reads would
    slow the drain, and applying acknowledged messages comes first."""
    if ctx["backlog"].recent():
        return 0
    drift = await ctx["verifier"].verify_slice(repair=True)
    return int(drift.repaired)


async def _rebuild_if_flushed(ctx: dict[str, Any]) -> None:
    """A missing marker key means Redis lost our data (restart, FLUSHALL): queries fall back
    to PostgreSQL meanwhile, and a rebuild refills every set."""
    settings: Settings = ctx["settings"]
    marker = cache_marker_key(settings.redis_prefix)
    if await ctx["cache_redis"].set(marker, "1", nx=True):
        await ctx["redis"].enqueue_job(
            "rebuild_cache",
            _job_id=_rebuild_job_id(settings.redis_prefix),
            _queue_name=ctx["queue"],
        )


def _rebuild_job_id(prefix: str) -> str:
    return f"{prefix}:rebuild"


async def rebuild(ctx: dict[str, Any], env_id: int | None = None) -> int:
    """Job: refill the Redis membership sets from PostgreSQL."""
    written = await rebuild_cache(ctx["pool"], ctx["cache"], env_id)
    log.info("membership cache rebuilt: %d sets", written)
    return written


async def recheck_time(ctx: dict[str, Any]) -> int:
    """Cron: segments that depend on time change without new data; re-evaluate them (only
    the users whose answer can have changed since the last pass); returns how many."""
    done = await recheck_timed_segments(
        ctx["pool"], ctx["cache"], ctx["catalog"], datetime.now(UTC)
    )
    if done.segments:
        log.info(
            "time pass: %d segments (%d over every user), %d users evaluated, +%d -%d",
            done.segments,
            done.whole,
            done.evaluated,
            done.entered,
            done.exited,
        )
    return done.segments


async def maintain_partitions(ctx: dict[str, Any]) -> int:
    """Cron: partitions created ahead, expired ones dropped (see shared.partitions);
    returns how many were dropped."""
    report = await partitions.maintain(ctx["pool"], ctx["settings"])
    return len(report.dropped)


async def fold_counts(ctx: dict[str, Any]) -> int:
    """Cron: each segment's and tag's member count rows summed into one (shared.member_counts)."""
    return await member_counts.fold(ctx["pool"])


async def recompute(ctx: dict[str, Any], env_id: int, segment_id: int) -> None:
    """Job: a segment was set computing (in PostgreSQL, with its change): wake the
    recompute lane, which claims it from there."""
    ctx["lane"].wake()


def _every(seconds: int) -> set[int]:
    seconds = max(1, min(seconds, 60))
    return set(range(0, 60, seconds))


def _schedule(job: Any, seconds: int) -> Any:
    """A cron running ``job`` every ``seconds`` (under a minute: by second; else by minute)."""
    if seconds < 60:
        return cron(job, second=_every(seconds), unique=True)
    minutes = max(1, min(seconds // 60, 60))
    return cron(job, minute=set(range(0, 60, minutes)), second=0, unique=True)


def build_worker(settings: Settings) -> Worker:
    """An arq worker for ``settings`` (not yet running)."""
    from arq.worker import func

    assert settings.redis_url is not None
    redis_settings = RedisSettings.from_dsn(settings.redis_url)
    redis_settings.conn_retries = 0  # ResilientWorker.main retries, with backoff, for ever
    return ResilientWorker(
        functions=[
            func(
                needs_postgres(drain),
                name="drain",
                keep_result=0,
                max_tries=1000,
                timeout=DRAIN_TIMEOUT,
            ),
            func(
                needs_postgres(recompute, retry=True),
                name="recompute_segment",
                # kept a minute: whoever enqueued the wake-up can see it was taken
                keep_result=60,
                max_tries=5,
            ),
            func(
                needs_postgres(rebuild, retry=True),
                name="rebuild_cache",
                keep_result=0,
                max_tries=3,
            ),
        ],
        cron_jobs=[
            cron(
                needs_postgres(sweep),
                second=_every(settings.sweep_seconds),
                run_at_startup=True,
                unique=True,
            ),
            _schedule(needs_postgres(recheck_time), settings.time_recheck_seconds),
            cron(
                needs_postgres(deliver_webhooks),
                second=_every(1),
                unique=True,
                run_at_startup=True,
                timeout=120,
            ),
            cron(needs_postgres(sweep_cache_outbox), second=_every(1), unique=True, timeout=60),
            cron(needs_postgres(verify_cache), second=_every(5), unique=True, timeout=60),
            cron(
                needs_postgres(maintain_partitions),
                minute=7,
                second=0,
                run_at_startup=True,
                unique=True,
                timeout=600,
            ),
            _schedule(needs_postgres(fold_counts), member_counts.FOLD_SECONDS),
            cron(
                needs_postgres(run_imports),
                second=_every(1),
                unique=True,
                timeout=RUN_SECONDS + 120,
            ),
        ],
        while_redis_down=needs_postgres(drain),
        queue_name=queue_name(settings.redis_prefix),
        redis_settings=redis_settings,
        on_startup=_startup,
        on_shutdown=_shutdown,
        ctx={"settings": settings, "queue": queue_name(settings.redis_prefix)},
        health_check_interval=HEALTH_CHECK_INTERVAL,
        # arq polls its queue; the default 0.5 s would be most of our freshness budget
        poll_delay=POLL_DELAY,
        max_jobs=8,  # drain, wake-ups, sweeps, time recheck, webhooks and the verifier at once
        job_timeout=3600,
        keep_result=0,
        handle_signals=True,
    )


def run_worker(settings: Settings) -> None:
    """Run the worker in the foreground until SIGINT/SIGTERM (logging configured by the
    caller: :func:`shared.logs.configure_logging`)."""
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # arq takes the policy's loop
    build_worker(settings).run()


async def worker_healthy(settings: Settings) -> bool:
    """Whether a worker on this queue wrote its health key recently."""
    assert settings.redis_url is not None
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        key = queue_name(settings.redis_prefix) + ":health-check"
        return bool(await client.exists(key))
    finally:
        await client.aclose()
