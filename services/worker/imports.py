"""Processing CSV imports in the worker: a cron takes a ``processing`` import over with a lease
in PostgreSQL and applies its file in windows of rows until it ends.

A window of users or members rows is split into :data:`LANES` lanes by user
(:func:`services.worker.import_rows.split_lanes`: all the rows of one user in one lane, in
file order), applied at the same time on as many connections: while PostgreSQL runs one lane's
statements, the worker's Python plays the other's rows. Each lane is one transaction that
applies its rows (as messages through :func:`services.worker.apply.apply_messages`, the
inbox's own code), records the rejected ones, adds its counts and marks its lane done in the
import's row, renewing the lease; the last lane of the window moves ``rows_done`` past it. A
window whose rows are not all named by userId (an email alone may name another row's user),
and every window of segments rows, is one lane.

A worker killed mid-window rolls its uncommitted lanes back; once the lease expires
(:data:`LEASE_SECONDS`) another cron run takes the import over, skips the ``rows_done`` rows,
reads the same window again (``lane_window`` rows), skips its lanes already committed
(``lanes_done``) and goes on: nothing is lost, nothing applies twice. The rows' messageIds
(``import:<id>:<row>``) name them in warnings but are not recorded in ``processed_messages``:
the import's row is what says which rows are applied (and a client's message cannot make an
import skip a row by using one of its ids). Cancelling sets the status, which each lane checks
under the import's row lock before it commits.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from services.worker.apply import apply_messages
from services.worker.import_rows import (
    Numbered,
    classify,
    plan_rows,
    resolve_emails,
    split_lanes,
    stored_state,
    to_messages,
)
from services.worker.import_segments import apply_segment_rows
from services.worker.outage import postgres_gone
from shared.csv_read import CsvError, CsvStream, read_records
from shared.db import Conn
from shared.import_files import delete_file, read_chunks
from shared.import_mapping import ColumnMapping
from shared.membership import SegmentCatalog, outbox
from shared.membership.cache import MembershipCache
from shared.membership.locking import RETRYABLE, lock_definitions
from shared.messages import epoch_ms
from shared.redis_keys import queue_name, recompute_job_id
from shared.settings import Settings

log = logging.getLogger(__name__)

#: Seconds an import stays leased to a worker without progress; a killed worker's import is
#: taken over after this.
LEASE_SECONDS = 10
#: A cron run works on imports this long at most, then lets the next run go on.
RUN_SECONDS = 600
#: Lanes of an import applied at once (connections; a bit each in ``imports.lanes_done``).
LANES = 2
#: Transient conflicts with other writers (a user created meanwhile too): the lane is retried.
_RETRYABLE = RETRYABLE
_json = msgspec.json.Encoder()
#: One import at a time per worker process. A module's lock, not one kept in ``ctx``: arq
#: gives each job a copy of the worker's ctx, so a lock put there by a job is that job's own.
_SLOT = asyncio.Lock()


class _Stopped(Exception):
    """The import was cancelled, or its lease was taken over: stop without a word."""


@dataclass
class _Job:
    env_id: int
    id: int
    kind: str
    segment: str | None
    columns: list[str]
    mapping: dict[str, ColumnMapping]
    rows_done: int
    at: int
    owner: str
    #: lanes of the window after ``rows_done`` already committed, and that window's size
    lanes_done: int = 0
    lane_window: int = 0


_CLAIM = """
UPDATE imports i SET lease_owner = $1, lease_until = now() + make_interval(secs => $2)
WHERE (i.env_id, i.id) = (
    SELECT env_id, id FROM imports
    WHERE status = 'processing' AND (lease_until IS NULL OR lease_until < now())
    ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING env_id, id, kind, segment_key, columns, mapping, rows_done, started_at, lanes_done,
          lane_window
"""


async def _claim(pool: asyncpg.Pool, owner: str) -> _Job | None:
    row = await pool.fetchrow(_CLAIM, owner, float(LEASE_SECONDS))
    if row is None:
        return None
    return _Job(
        env_id=row["env_id"],
        id=row["id"],
        kind=row["kind"],
        segment=row["segment_key"],
        columns=row["columns"],
        mapping=msgspec.convert(row["mapping"], dict[str, ColumnMapping]),
        rows_done=row["rows_done"],
        at=epoch_ms(row["started_at"]),
        owner=owner,
        lanes_done=row["lanes_done"],
        lane_window=row["lane_window"],
    )


async def _end(pool: asyncpg.Pool, job: _Job, status: str, error: str | None = None) -> None:
    async with pool.acquire() as conn, conn.transaction():
        ended = await conn.fetchval(
            """UPDATE imports SET status = $4, error = $5, finished_at = now(),
                                  lease_owner = NULL, lease_until = NULL
               WHERE env_id = $1 AND id = $2 AND lease_owner = $3 AND status = 'processing'
               RETURNING id""",
            job.env_id,
            job.id,
            job.owner,
            status,
            error,
        )
        if ended is not None:
            await delete_file(conn, job.env_id, job.id)


async def _release(pool: asyncpg.Pool, job: _Job) -> None:
    """Give the lease up at once, for the next run to resume the import."""
    await pool.execute(
        """UPDATE imports SET lease_owner = NULL, lease_until = NULL
           WHERE env_id = $1 AND id = $2 AND lease_owner = $3""",
        job.env_id,
        job.id,
        job.owner,
    )


@dataclass
class _Outcome:
    counts: Counter[str]
    rejects: list[tuple[int, list[str], str]]
    redis_sets: dict[str, tuple[int, set[int]]]
    recompute: list[tuple[int, int]]
    #: the cache outbox row standing for ``redis_sets`` (cleared once they are written)
    outbox_id: int | None = None


async def _apply_rows(
    conn: Conn, job: _Job, catalog: SegmentCatalog, records: list[Numbered]
) -> _Outcome:
    """Apply one lane's rows inside the caller's transaction."""
    if job.kind == "segments":  # one lane: the rows follow each other
        first = records[0][0]
        cells = [r for _, r in records]
        done = await apply_segment_rows(conn, job.env_id, job.columns, job.mapping, cells, first)
        rejects = [(n, cells[n - first], error) for n, error in done.rejects]
        return _Outcome(Counter(done.outcomes), rejects, {}, done.recompute)
    await lock_definitions(conn, job.env_id, shared=True)  # as the drain: see its lock order
    segments = await catalog.load(conn, job.env_id)
    plans = plan_rows(
        job.kind, job.columns, job.mapping, records, segments.types, segments.manual, job.segment
    )
    await resolve_emails(conn, job.env_id, job.kind, plans)
    stored = await stored_state(conn, job.env_id, plans, segments.manual)
    counts = Counter(classify(plans, stored, segments.manual, job.at))
    # applied once without processed_messages: the lane commits with its bit in the import's
    # row, under the lease, and a resumed import skips committed rows and lanes
    messages = to_messages(job.id, plans, job.at)
    result = await apply_messages(
        conn, job.env_id, messages, segments, datetime.now(UTC), cause="import"
    )
    rejects = [(p.number, p.cells, p.error) for p in plans if p.error is not None]
    return _Outcome(counts, rejects, result.redis_sets, [], result.outbox_id)


#: A lane's commit: its counts, its bit in ``lanes_done``; the window's last lane moves
#: ``rows_done`` past the window. Only under the lease, while processing, at the window.
_LANE_DONE = """
UPDATE imports SET
    lanes_done = CASE WHEN lanes_done | $5 = $6 THEN 0 ELSE lanes_done | $5 END,
    lane_window = CASE WHEN lanes_done | $5 = $6 THEN 0 ELSE $7 END,
    rows_done = rows_done + CASE WHEN lanes_done | $5 = $6 THEN $7 ELSE 0 END,
    created = created + $8, updated = updated + $9, unchanged = unchanged + $10,
    rejected = rejected + $11,
    lease_until = now() + make_interval(secs => $12)
WHERE env_id = $1 AND id = $2 AND lease_owner = $3 AND status = 'processing'
  AND rows_done = $4 AND lanes_done & $5 = 0
RETURNING id
"""


async def _lane(
    ctx: dict[str, Any],
    job: _Job,
    catalog: SegmentCatalog,
    records: list[Numbered],
    bit: int,
    every: int,
    window: int,
) -> None:
    """Apply one lane of the window of ``window`` rows after ``job.rows_done`` and commit
    its progress with it (``bit``: the lane's, ``every``: all the window's lanes)."""
    pool: asyncpg.Pool = ctx["pool"]
    for attempt in range(10):
        try:
            async with pool.acquire() as conn, conn.transaction():
                outcome = await _apply_rows(conn, job, catalog, records)
                if outcome.rejects:
                    await conn.execute(
                        """INSERT INTO import_rejects (env_id, import_id, row_number, cells, error)
                           SELECT $1, $2, n, c::jsonb, e
                           FROM unnest($3::bigint[], $4::text[], $5::text[]) AS x(n, c, e)""",
                        job.env_id,
                        job.id,
                        [r[0] for r in outcome.rejects],
                        [_json.encode(r[1]).decode() for r in outcome.rejects],
                        [r[2] for r in outcome.rejects],
                    )
                committed = await conn.fetchval(
                    _LANE_DONE,
                    job.env_id,
                    job.id,
                    job.owner,
                    job.rows_done,
                    bit,
                    every,
                    window,
                    outcome.counts["created"],
                    outcome.counts["updated"],
                    outcome.counts["unchanged"],
                    len(outcome.rejects),
                    float(LEASE_SECONDS),
                )
                if committed is None:
                    raise _Stopped
            break
        except _RETRYABLE:
            log.info("import %s: conflict, retrying the lane (attempt %d)", job.id, attempt + 1)
    else:
        raise RuntimeError("the batch kept conflicting with other writers")
    cache: MembershipCache = ctx["cache"]
    if outcome.redis_sets:
        try:
            await cache.write_many(job.env_id, outcome.redis_sets)
            await outbox.done(pool, job.env_id, outcome.outbox_id)
        except Exception as exc:  # Redis is a cache: the outbox sweeper rewrites the sets
            log.warning("import %s: membership sets not written to Redis: %r", job.id, exc)
    settings: Settings = ctx["settings"]
    for segment_id, version in outcome.recompute:
        try:
            await ctx["redis"].enqueue_job(
                "recompute_segment",
                job.env_id,
                segment_id,
                _job_id=recompute_job_id(settings.redis_prefix, job.env_id, segment_id, version),
                _queue_name=queue_name(settings.redis_prefix),
            )
        except Exception as exc:  # the segment stays 'computing': the sweep finds it
            log.warning(
                "import %s: recompute of segment %s not queued: %r", job.id, segment_id, exc
            )


async def _window(
    ctx: dict[str, Any], job: _Job, catalog: SegmentCatalog, records: list[list[str]]
) -> None:
    """Apply ``records`` (the rows after ``job.rows_done``) in lanes at once, skipping the
    lanes a killed worker committed; every lane ends before this returns."""
    first = job.rows_done + 1
    numbered = list(enumerate(records, first))
    lanes = (
        [numbered]
        if job.kind == "segments"
        else split_lanes(job.columns, job.mapping, numbered, LANES)
    )
    # a lane with no rows has no bit: the others' stand for the window
    bits = [(1 << n, rows) for n, rows in enumerate(lanes) if rows]
    every = sum(bit for bit, _ in bits)
    todo = [
        _lane(ctx, job, catalog, rows, bit, every, len(records))
        for bit, rows in bits
        if not job.lanes_done & bit
    ]
    results = await asyncio.gather(*todo, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    job.rows_done += len(records)
    job.lanes_done = job.lane_window = 0


async def _keep_lease(pool: asyncpg.Pool, job: _Job) -> None:
    """Renew ``job``'s lease every quarter of :data:`LEASE_SECONDS` while it is worked on: a
    window on a busy machine, or skipping a resumed import's committed rows, may take longer
    than the lease, which would let another run take the import over mid-window (its lanes
    would then be refused their commit, and the two would take turns for ever)."""
    while True:
        await asyncio.sleep(LEASE_SECONDS / 4)
        try:
            await pool.execute(
                """UPDATE imports SET lease_until = now() + make_interval(secs => $4)
                   WHERE env_id = $1 AND id = $2 AND lease_owner = $3
                     AND status = 'processing'""",
                job.env_id,
                job.id,
                job.owner,
                float(LEASE_SECONDS),
            )
        except Exception as exc:  # the next renewal tries again; the lanes check the lease
            log.warning("import %s: lease not renewed: %r", job.id, exc)


async def _process(ctx: dict[str, Any], job: _Job, deadline: float) -> bool:
    """Work on ``job`` until it ends (True) or ``deadline`` passes (False: the lease lapses
    and a later run resumes it)."""
    settings: Settings = ctx["settings"]
    window = max(1, settings.worker_batch) * LANES
    catalog: SegmentCatalog = ctx.setdefault("import_catalog", SegmentCatalog())
    # a window part-committed by a killed worker is read again whole, at its own size
    size = job.lane_window or window
    keeper = asyncio.create_task(_keep_lease(ctx["pool"], job))
    try:
        return await _windows(ctx, job, catalog, deadline, size, window)
    finally:
        keeper.cancel()


async def _windows(
    ctx: dict[str, Any],
    job: _Job,
    catalog: SegmentCatalog,
    deadline: float,
    size: int,
    window: int,
) -> bool:
    """The windows of ``job``'s file after its committed rows (the first of ``size`` rows)."""
    skip = job.rows_done
    pending: list[list[str]] = []
    chunks = read_chunks(ctx["pool"], job.env_id, job.id)
    async for records in read_records(CsvStream(), chunks):
        if skip:
            taken = min(skip, len(records))
            records = records[taken:]
            skip -= taken
        pending.extend(records)
        while len(pending) >= size:
            await _window(ctx, job, catalog, pending[:size])
            del pending[:size]
            size = window
            if time.monotonic() > deadline:
                return False
    if pending:
        await _window(ctx, job, catalog, pending)
    await _end(ctx["pool"], job, "done")
    log.info("import %s done: %d rows", job.id, job.rows_done)
    return True


async def run_imports(ctx: dict[str, Any]) -> int:
    """Cron: take over a ``processing`` import nobody holds and apply it; returns how many
    imports it finished. One import at a time per worker process (more workers, more
    imports at once), so the inbox drain always has room."""
    slot = _SLOT
    if slot.locked():
        return 0
    finished = 0
    deadline = time.monotonic() + RUN_SECONDS
    async with slot:
        while time.monotonic() < deadline:
            job = await _claim(ctx["pool"], f"{uuid.uuid4()}")
            if job is None:
                break
            try:
                if not await _process(ctx, job, deadline):
                    await _release(ctx["pool"], job)
                    break
                finished += 1
            except _Stopped:
                log.info("import %s stopped (cancelled or taken over)", job.id)
            except CsvError as exc:
                await _end(ctx["pool"], job, "failed", exc.message)
            except Exception as exc:
                if postgres_gone(exc):
                    raise  # not the import's fault: its lease lapses, a later run resumes it
                log.exception("import %s failed", job.id)
                await _end(ctx["pool"], job, "failed", f"internal error: {exc!r}")
    return finished
