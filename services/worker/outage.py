"""Riding out PostgreSQL and Redis outages in the worker: which errors mean "the server is
gone" (not "this data is bad"), a capped exponential backoff, a gate that lets work through
again once the backoff has passed (one log line when a server goes away and one when it comes
back, not a traceback per cron tick), the jobs' PostgreSQL guard, and arq's Worker made to
outlive Redis (:class:`ResilientWorker`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import asyncpg
import asyncpg.exceptions._base as asyncpg_base
from arq.connections import create_pool as create_arq_pool
from arq.constants import in_progress_key_prefix
from arq.worker import Retry, Worker
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

log = logging.getLogger("segments.worker")

T = TypeVar("T")

#: Errors of a PostgreSQL that is unreachable, restarting or shutting down.
_POSTGRES_GONE = (
    OSError,  # refused, reset, timed out (TimeoutError is an OSError)
    asyncpg.PostgresConnectionError,  # class 08, "connection does not exist" included
    asyncpg.CannotConnectNowError,  # 57P03: starting up or shutting down
    asyncpg.AdminShutdownError,  # 57P01: terminated by a fast shutdown
    asyncpg.CrashShutdownError,  # 57P02
    asyncpg.InterfaceError,  # "connection is closed", "pool is closing"
    asyncpg.TooManyConnectionsError,  # 53300: no connection slot for now (a busy server)
)

#: Errors of a Redis that is unreachable or restarting (BusyLoadingError is a ConnectionError).
REDIS_GONE = (RedisConnectionError, RedisTimeoutError, OSError)


def postgres_gone(exc: BaseException) -> bool:
    """Whether ``exc`` says PostgreSQL is unreachable rather than that a statement failed.
    (asyncpg's DataError, a bad query argument, is an InterfaceError but the data's fault.)"""
    return isinstance(exc, _POSTGRES_GONE) and not isinstance(exc, asyncpg_base.DataError)


class Backoff:
    """Capped exponential delays with jitter: ``first``, 2x, 4x, ... up to ``cap`` seconds."""

    def __init__(self, first: float = 0.25, cap: float = 5.0) -> None:
        self.first = first
        self.cap = cap
        self.failures = 0

    def next(self) -> float:
        """The delay before the next attempt (grows with each call until :meth:`reset`)."""
        delay: float = min(self.cap, self.first * 2.0**self.failures)
        self.failures = min(self.failures + 1, 30)
        jitter: float = random.uniform(0.8, 1.0)
        return delay * jitter

    def reset(self) -> None:
        self.failures = 0


class Dependency:
    """A server the worker needs. After a failure, work that needs it waits out the backoff
    (``available()`` is False meanwhile); the first success after failures logs the outage's
    length. The cap bounds how long after the server's return the worker notices."""

    def __init__(self, name: str, backoff: Backoff | None = None) -> None:
        self.name = name
        self.backoff = backoff or Backoff()
        self.down_since: float | None = None
        self.retry_at = 0.0
        #: outages seen (for tests and logs)
        self.outages = 0

    def available(self) -> bool:
        return time.monotonic() >= self.retry_at

    def failed(self, exc: BaseException) -> float:
        """Record a failure; returns the delay before the next attempt."""
        now = time.monotonic()
        delay = self.backoff.next()
        self.retry_at = now + delay
        if self.down_since is None:
            self.down_since = now
            self.outages += 1
            log.warning("%s unavailable (%r): retrying with backoff", self.name, exc)
        return delay

    def succeeded(self) -> None:
        if self.down_since is not None:
            log.warning("%s is back after %.1fs", self.name, time.monotonic() - self.down_since)
            self.down_since = None
        self.retry_at = 0.0
        self.backoff.reset()


def needs_postgres(
    job: Callable[..., Coroutine[Any, Any, T]], *, retry: bool = False
) -> Callable[..., Coroutine[Any, Any, T | None]]:
    """Wrap an arq job or cron: while PostgreSQL is down (``ctx["postgres"]`` gate) it does not
    try, and a lost connection ends it with one log line instead of a failed job's traceback.
    It then returns None (crons and the sweep redo the work once PostgreSQL is back) or, with
    ``retry``, asks arq to run the job again after the backoff (within its ``max_tries``)."""

    @functools.wraps(job)
    async def guarded(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> T | None:
        postgres: Dependency = ctx["postgres"]
        if not postgres.available():
            if retry:
                raise Retry(defer=max(0.1, postgres.retry_at - time.monotonic()))
            return None
        try:
            result = await job(ctx, *args, **kwargs)
        except Exception as exc:
            if not postgres_gone(exc):
                raise
            delay = postgres.failed(exc)
            if retry:
                raise Retry(defer=delay) from exc
            return None
        postgres.succeeded()
        return result

    return guarded


class ResilientWorker(Worker):  # type: ignore[misc]
    """arq's Worker, except that a Redis outage does not end it.

    arq lets any Redis error out of its poll loop (``zrangebyscore``, the health key, or a
    job's ``finish_job`` re-raised there), which ends the process: a Redis restart stopped
    the worker. Here such an error pauses polling for a capped exponential backoff and the
    loop goes on (redis-py reconnects on the next command). Jobs whose bookkeeping failed
    keep arq's in-progress mark, which would block their id for ``job_timeout``; once Redis
    answers again those marks are dropped so the jobs run again (every job is idempotent)
    if Redis kept them. A restarted Redis lost its queue: the sweep finds the inbox rows.

    While Redis is down arq can neither hand out jobs nor schedule crons (both live in
    Redis), so ``while_redis_down(ctx)`` (the inbox drain) is run directly after each failed
    poll, one at a time: messages keep being applied in PostgreSQL, which is where the query
    service reads during the outage.
    """

    def __init__(
        self,
        *args: Any,
        while_redis_down: Callable[[dict[str, Any]], Coroutine[Any, Any, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.redis_dependency = Dependency("redis", Backoff(first=0.25, cap=5.0))
        self.unfinished: set[str] = set()
        self.while_redis_down = while_redis_down
        self._outage_work: asyncio.Task[Any] | None = None

    async def main(self) -> None:
        while self._pool is None:  # wait for Redis at start-up, however long it takes
            try:
                self._pool = await create_arq_pool(
                    self.redis_settings,
                    job_deserializer=self.job_deserializer,
                    job_serializer=self.job_serializer,
                    default_queue_name=self.queue_name,
                    expires_extra_ms=self.expires_extra_ms,
                )
            except REDIS_GONE as exc:
                await asyncio.sleep(self.redis_dependency.failed(exc))
        await super().main()

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
            if self.unfinished:
                keys = [in_progress_key_prefix + job_id for job_id in self.unfinished]
                await self.pool.delete(*keys)
                self.unfinished.clear()
        except REDIS_GONE as exc:
            delay = self.redis_dependency.failed(exc)
            self._work_without_redis()
            await asyncio.sleep(delay)
            return
        self.redis_dependency.succeeded()

    def _work_without_redis(self) -> None:
        if self.while_redis_down is None or "pool" not in self.ctx:  # not started up yet
            return
        if self._outage_work is None or self._outage_work.done():
            self._outage_work = asyncio.create_task(self.while_redis_down(self.ctx))
            self._outage_work.add_done_callback(_log_failure)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        # arq takes a job slot (semaphore + counter) before its Redis round trips and gives it
        # back on every path but an exception: a slot lost per Redis error would, after
        # max_jobs of them, block the worker for good. Start jobs one by one and give the
        # slot back when a Redis error stopped the start.
        for raw_id in job_ids:
            if self.job_counter >= self.max_jobs:
                return  # as arq does: the rest waits for the next poll
            job_id = raw_id.decode()
            previous = self.tasks.get(job_id)
            if previous is not None:
                if not previous.done():
                    # Still running here: a restarted Redis lost its in-progress mark and the
                    # job (a fixed id: drain) was enqueued again. arq would run it twice in
                    # this process, and its bookkeeping (one entry per id) then fails. It
                    # stays queued and starts once this run ends.
                    continue
                if not previous.cancelled():
                    previous.exception()  # replaced below: its outcome was handled in run_job
            try:
                await super().start_jobs([raw_id])
            except (*REDIS_GONE, WatchError) as exc:
                # redis-py reports a connection lost under arq's WATCH (the job's start) as a
                # WatchError caused by it: Redis is gone all the same (a worker died of it
                # when Redis was killed as a cron job started)
                if isinstance(exc, WatchError) and not isinstance(exc.__context__, REDIS_GONE):
                    raise
                if self.tasks.get(job_id) is previous:
                    self._release_sem_dec_counter_on_complete()
                if isinstance(exc, WatchError):
                    raise RedisConnectionError(str(exc)) from exc
                raise

    async def run_job(self, job_id: str, score: int) -> None:
        try:
            await super().run_job(job_id, score)
        except REDIS_GONE:
            self.unfinished.add(job_id)
            raise
        except Exception:
            # The job's own failures are handled inside arq's run_job; what escapes is arq's
            # bookkeeping, which must not end the poll loop (and the process) for every job.
            log.exception("arq's bookkeeping of job %s failed", job_id)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("work without Redis failed: %r", exc)
