"""Durable before acknowledged: the inbox writer groups concurrent requests into one INSERT.

Each request hands its rows to :meth:`InboxWriter.write` and waits. A few flusher tasks take
everything queued (up to ``ingest_batch_rows`` rows), insert it in one statement, and only then
resolve the waiting requests. Under light load a request is flushed at once on its own; under
heavy load the queue fills while the flushers are busy, so batches grow by themselves (group
commit) without adding a timer to anyone's latency.

After each committed flush the worker's drain job is enqueued in arq (one deduplicated job id).
A Redis failure there is logged and otherwise ignored: the rows are committed and the worker's
cron sweep finds them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from shared.redis_keys import drain_job_id, queue_name

log = logging.getLogger(__name__)

PoolConn: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"
#: One inbox row: (env_id, received_at, encoded InboxMessage).
Row: TypeAlias = tuple[int, datetime, bytes]

INSERT_INBOX = """
INSERT INTO inbox (env_id, received_at, body)
SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::bytea[])
"""

#: Seconds an enqueue of the drain job may take before we give up on it (the sweep covers us).
ENQUEUE_TIMEOUT = 2.0
#: Least seconds between two drain enqueues: flushes committed meanwhile share the next one, so a
#: busy ingest costs Redis a few transactions a second rather than one per flush.
DRAIN_INTERVAL = 0.05


#: What a kept connection raises once a PostgreSQL restart closed it.
_STALE_CONNECTION = (
    asyncpg.InterfaceError,  # detached by the pool once asyncpg saw it close
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,  # a fast shutdown or pg_terminate_backend
    asyncpg.InternalClientError,  # "cannot switch to state ...": met the close mid-way
)


class InboxUnavailable(Exception):
    """The rows could not be committed; nothing of the request was acknowledged."""


class _Pending:
    __slots__ = ("future", "rows")

    def __init__(self, rows: list[Row], future: asyncio.Future[None]) -> None:
        self.rows = rows
        self.future = future


class InboxWriter:
    """Micro-batching writer of inbox rows, started and stopped with the ingest app."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        arq_pool: Any,
        *,
        redis_prefix: str,
        max_rows: int = 5000,
        flushers: int = 3,
    ) -> None:
        self.pool = pool
        self.arq_pool = arq_pool
        self.max_rows = max(1, max_rows)
        self.job_id = drain_job_id(redis_prefix)
        self.queue = queue_name(redis_prefix)
        #: INSERT statements committed so far (a burst of requests should need fewer of them).
        self.flushes = 0
        #: rows committed so far
        self.rows_written = 0
        #: drain-job enqueue attempts that reached Redis without error
        self.drain_enqueues = 0
        self._flusher_count = flushers
        self._pending: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._drain_wanted = False
        self._drain_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the flusher tasks."""
        self._closing = False
        self._tasks = [
            asyncio.create_task(self._flusher(), name=f"inbox-flusher-{i}")
            for i in range(self._flusher_count)
        ]

    async def stop(self) -> None:
        """Flush whatever is queued, then stop the flushers and the pending drain enqueue."""
        self._closing = True
        self._wakeup.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._drain_task is not None:
            await asyncio.gather(self._drain_task, return_exceptions=True)
            self._drain_task = None

    async def write(self, rows: list[Row]) -> None:
        """Return once ``rows`` are committed; raise :class:`InboxUnavailable` if they can't be.

        A request's rows always travel in a single INSERT, so they commit all or none.
        """
        if self._closing or not self._tasks:
            raise InboxUnavailable("ingest is shutting down")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(rows, future))
        self._wakeup.set()
        await future

    def _take(self) -> list[_Pending]:
        """Everything queued, up to ``max_rows`` rows (a larger single request goes alone)."""
        taken = [self._pending.popleft()]
        count = len(taken[0].rows)
        while self._pending and count + len(self._pending[0].rows) <= self.max_rows:
            item = self._pending.popleft()
            taken.append(item)
            count += len(item.rows)
        return taken

    async def _flusher(self) -> None:
        # Each flusher keeps one pooled connection while it runs: no acquire and release (nor
        # their bookkeeping) per flush. When PostgreSQL closed it meanwhile, the flush goes
        # once more on a new one; after a failed insert the connection goes back to the pool
        # (which closes it if it broke) and the next flush takes another.
        conn: PoolConn | None = None
        try:
            while True:
                if not self._pending:
                    if self._closing:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                conn = await self._flush(self._take(), conn)
        finally:
            if conn is not None:
                await self._release_quietly(conn)

    async def _flush(self, items: list[_Pending], conn: PoolConn | None) -> PoolConn | None:
        """Insert ``items`` in one statement; returns the connection to use next time."""
        env_ids: list[int] = []
        times: list[datetime] = []
        bodies: list[bytes] = []
        for item in items:
            for env_id, received_at, body in item.rows:
                env_ids.append(env_id)
                times.append(received_at)
                bodies.append(body)
        try:
            if conn is not None:
                try:
                    await conn.execute(INSERT_INBOX, env_ids, times, bodies)
                except _STALE_CONNECTION:
                    # the kept connection died with a PostgreSQL restart (asyncpg detaches it):
                    # once more on a fresh one. Were the rows committed all the same, the
                    # worker applies each messageId once.
                    await self._release_quietly(conn)
                    conn = None
            if conn is None:
                conn = await self.pool.acquire()
                await conn.execute(INSERT_INBOX, env_ids, times, bodies)
        except Exception as exc:  # any failure: acknowledge nothing, tell the clients to retry
            log.error("inbox insert of %d rows failed: %r", len(bodies), exc)
            for item in items:
                if not item.future.done():
                    item.future.set_exception(InboxUnavailable(str(exc)))
            if conn is not None:
                await self._release_quietly(conn)
            return None
        self.flushes += 1
        self.rows_written += len(bodies)
        for item in items:
            if not item.future.done():
                item.future.set_result(None)
        self._request_drain()
        return conn

    async def _release_quietly(self, conn: PoolConn) -> None:
        try:
            await self.pool.release(conn)
        except Exception as exc:  # a broken connection: the pool replaces it
            log.warning("could not release an inbox connection: %r", exc)

    def _request_drain(self) -> None:
        """Enqueue the drain job soon; flushes that finish meanwhile share one enqueue."""
        self._drain_wanted = True
        if self._drain_task is None or self._drain_task.done():
            self._drain_task = asyncio.create_task(self._enqueue_drains(), name="inbox-drain")

    async def _enqueue_drains(self) -> None:
        # The first flush after a quiet spell enqueues at once; later ones at most every
        # DRAIN_INTERVAL, and never skipped: a flush always has an enqueue after its commit.
        while self._drain_wanted:
            self._drain_wanted = False
            try:
                await asyncio.wait_for(
                    self.arq_pool.enqueue_job("drain", _job_id=self.job_id, _queue_name=self.queue),
                    ENQUEUE_TIMEOUT,
                )
                self.drain_enqueues += 1
            except Exception as exc:  # rows are committed; the worker's sweep will find them
                log.warning("could not enqueue the drain job (the sweep will catch up): %r", exc)
            if self._closing:
                return  # the sweep picks up anything flushed during shutdown
            await asyncio.sleep(DRAIN_INTERVAL)
