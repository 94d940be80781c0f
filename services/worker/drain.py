"""Draining the inbox: claim rows, apply them, mark them done, refresh Redis.

Each round claims up to ``settings.worker_batch`` inbox rows with ``FOR UPDATE SKIP LOCKED``
(so any number of workers can drain together) and applies them in one transaction: duplicate
messageIds are dropped, each environment's messages are applied, memberships re-evaluated, and
the rows deleted. Only after the commit are the Redis sets written. A crash at any point rolls
the transaction back and the rows are claimed again: nothing acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime

import asyncpg
import msgspec

from services.worker.apply import BatchResult, apply_messages
from services.worker.outage import REDIS_GONE, postgres_gone
from shared.db import Conn
from shared.membership import SegmentCatalog, outbox
from shared.membership.cache import MembershipCache
from shared.membership.locking import RETRYABLE, lock_definitions
from shared.messages import InboxMessage, inbox_decoder

log = logging.getLogger(__name__)

#: Transient conflicts between workers: the round is retried at once from the claim.
_RETRYABLE = RETRYABLE


@dataclass
class DrainStats:
    rounds: int = 0
    messages: int = 0
    duplicates: int = 0
    dead: int = 0
    #: applications of a batch or part of one (savepoints): one per clean round
    attempts: int = 0
    #: rounds whose Redis sets could not be written because Redis was unreachable (a
    #: restarted Redis is refilled by the rebuild; the query service reads PostgreSQL)
    redis_unavailable: int = 0


async def _claim(conn: Conn, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT env_id, id, received_at, body FROM inbox
           ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED""",
        limit,
    )


def _identities(env_id: int, body: bytes) -> tuple[tuple[int, str], ...]:
    """The identities an inbox row is about: its userId, anonymousId and previousId (none
    for a body that does not decode: it is buried, not applied)."""
    try:
        msg = inbox_decoder.decode(body)
    except msgspec.DecodeError:
        return ()
    out = [(env_id, "u" + msg.userId)] if msg.userId is not None else []
    out += [(env_id, "a" + a) for a in (msg.anonymousId, msg.previousId) if a is not None]
    return tuple(out)


class InFlight:
    """The identities held by the drain rounds of one worker process (its lanes), so that
    rounds run at once without applying two messages about one identity out of order.

    Claims are taken one at a time (:attr:`claim_lock`). A round holds the identities of
    every row it claimed, from its claim until its commit, and puts aside (leaves in the
    inbox, for a later round) each row about an identity another round holds or that a
    row it put aside is about. A merge (an identify naming a userId and an anonymousId)
    is about both, so it waits for the anonymous user's earlier rows and for the
    identified user's. Rounds of other worker processes are not seen: several processes
    drain together as before (SKIP LOCKED), without this guarantee between them."""

    def __init__(self) -> None:
        self.claim_lock = asyncio.Lock()
        self.held: Counter[tuple[int, str]] = Counter()

    def take(
        self, rows: list[asyncpg.Record]
    ) -> tuple[list[asyncpg.Record], list[tuple[int, str]]]:
        """(the rows this round applies, the identities it now holds), in claim order. The
        caller gives the identities back with :meth:`release` once its transaction ended."""
        mine: list[asyncpg.Record] = []
        taken: list[tuple[int, str]] = []
        aside: set[tuple[int, str]] = set()
        for row in rows:
            idents = _identities(row["env_id"], row["body"])
            if any(i in aside or self.held[i] for i in idents):
                aside.update(idents)
            else:
                mine.append(row)
            taken.extend(idents)
        self.held.update(taken)
        return mine, taken

    def release(self, taken: list[tuple[int, str]]) -> None:
        self.held.subtract(taken)
        for ident in taken:
            if self.held[ident] <= 0:
                del self.held[ident]


#: Advisory lock class of the dedup days: ``(DEDUP_DAY_LOCK, day)``, see :func:`first_new`.
DEDUP_DAY_LOCK = 7_413_060

# Holds the day's lock (shared) from before the clock is read, then waits for every
# transaction still holding the day before's (a barrier: lock and release at once). A
# transaction that took its day's lock before the barrier is waited for; one that takes it
# after reads a clock past the barrier, so it records its messageIds in the new day.
_DEDUP_DAY = """
WITH held AS MATERIALIZED (
    SELECT d, pg_advisory_xact_lock_shared($1, d - date '2000-01-01')
    FROM (SELECT coalesce($2::date, (clock_timestamp() AT TIME ZONE 'UTC')::date) AS d) AS x
), barrier AS MATERIALIZED (
    SELECT d, pg_advisory_lock($1, d - date '2000-01-01' - 1) FROM held
)
SELECT d, pg_advisory_unlock($1, d - date '2000-01-01' - 1),
       coalesce($2::date, (clock_timestamp() AT TIME ZONE 'UTC')::date) AS still
FROM barrier
"""

# Records the messageIds under today (the primary key decides between two transactions
# of one day) and keeps those no earlier day holds. OFFSET 0 keeps the NOT
# EXISTS a per-row probe of each earlier day's primary key: as a join, the planner hashed
# every earlier partition whole (a cost growing with the history).
_RECORD_NEW = """
WITH recorded AS (
    INSERT INTO processed_messages (env_id, message_id, day)
    SELECT e, m, $3 FROM unnest($1::bigint[], $2::text[]) AS x(e, m)
    ON CONFLICT DO NOTHING RETURNING env_id, message_id
)
SELECT env_id, message_id FROM recorded r
WHERE NOT EXISTS (SELECT 1 FROM processed_messages p
                  WHERE p.env_id = r.env_id AND p.message_id = r.message_id AND p.day < $3
                  OFFSET 0)
"""


async def first_new(
    conn: Conn, rows: list[tuple[int, int, InboxMessage]], *, day: date | None = None
) -> list[tuple[int, int, InboxMessage]]:
    """Record the batch's messageIds; keep each message whose id was not seen before (the
    first occurrence of an id repeated inside the batch).

    ``processed_messages`` is partitioned by week (migration 060) and keyed by day: a
    messageId is unique within a day by the primary key, and the earlier days still kept
    (the dedup window, ``SEGMENTS_RETENTION_PROCESSED_DAYS``) are probed in the same
    statement, one index look-up per partition. Exact under concurrency across midnight
    too: :data:`_DEDUP_DAY` makes a transaction of the new day wait for those still
    recording in the day before, so that it sees what they committed. A repeat is recorded
    under its new day too: the window runs from a messageId's last sighting. ``day``
    replaces the database clock (tests)."""
    if not rows:
        return []
    while True:
        held = await conn.fetchrow(_DEDUP_DAY, DEDUP_DAY_LOCK, day)
        assert held is not None
        if held["still"] == held["d"]:  # else midnight passed meanwhile: hold the new day
            break
    inserted = await conn.fetch(
        _RECORD_NEW,
        [env_id for env_id, _, _ in rows],
        [m.messageId for _, _, m in rows],
        held["d"],
    )
    fresh = {(r["env_id"], r["message_id"]) for r in inserted}
    out = []
    for env_id, inbox_id, msg in rows:
        if (env_id, msg.messageId) in fresh:
            fresh.discard((env_id, msg.messageId))
            out.append((env_id, inbox_id, msg))
    return out


async def _bury(conn: Conn, row: asyncpg.Record, error: str) -> None:
    await conn.execute(
        """INSERT INTO dead_letters (env_id, inbox_id, received_at, body, error)
           VALUES ($1, $2, $3, $4, $5)""",
        row["env_id"],
        row["id"],
        row["received_at"],
        row["body"],
        error,
    )
    await conn.execute("DELETE FROM inbox WHERE id = $1", row["id"])


async def _apply_rows(
    conn: Conn,
    rows: list[asyncpg.Record],
    catalog: SegmentCatalog,
    stats: DrainStats,
) -> dict[int, BatchResult]:
    decoded: list[tuple[int, int, InboxMessage]] = []
    for row in rows:
        try:
            decoded.append((row["env_id"], row["id"], inbox_decoder.decode(row["body"])))
        except msgspec.DecodeError as exc:
            await _bury(conn, row, f"undecodable inbox body: {exc}")
            stats.dead += 1
    fresh = await first_new(conn, decoded)
    stats.duplicates += len(decoded) - len(fresh)
    by_env: dict[int, list[InboxMessage]] = defaultdict(list)
    for env_id, _, msg in fresh:
        by_env[env_id].append(msg)
    now = datetime.now(UTC)
    results: dict[int, BatchResult] = {}
    for env_id, msgs in sorted(by_env.items()):
        # shared: a definition change waits for this batch, and we read definitions after it
        await lock_definitions(conn, env_id, shared=True)
        segments = await catalog.load(conn, env_id)
        results[env_id] = await apply_messages(conn, env_id, msgs, segments, now)
    await conn.execute("DELETE FROM inbox WHERE id = ANY($1)", [r["id"] for r in rows])
    return results


async def drain_round(
    pool: asyncpg.Pool,
    cache: MembershipCache,
    catalog: SegmentCatalog,
    batch: int,
    stats: DrainStats,
    inflight: InFlight | None = None,
) -> int:
    """Claim and apply one batch; returns how many inbox rows it consumed (0: inbox empty,
    or, with ``inflight``, every row claimed was about an identity another round of this
    process holds)."""
    for attempt in range(10):
        results: list[tuple[int, BatchResult]] = []
        taken: list[tuple[int, str]] = []
        try:
            async with pool.acquire() as conn, conn.transaction():
                if inflight is None:
                    rows = await _claim(conn, batch)
                else:
                    async with inflight.claim_lock:
                        rows, taken = inflight.take(await _claim(conn, batch))
                if not rows:
                    return 0
                failure = await _try_apply(conn, rows, catalog, stats, results)
                if failure is not None:
                    log.warning(
                        "a batch of %d inbox rows failed (%s): bisecting", len(rows), failure
                    )
                    await _isolate(conn, rows, failure, catalog, stats, results, tried=True)
            break
        except _RETRYABLE:
            log.info("worker conflict, retrying the batch (attempt %d)", attempt + 1)
        finally:
            if inflight is not None:
                inflight.release(taken)
    else:
        return 0
    for env_id, result in results:
        try:
            await cache.write_many(env_id, result.redis_sets)
        except REDIS_GONE:  # counted, and logged once per drain: not a traceback per round
            stats.redis_unavailable += 1
            continue  # the outbox row stays: the sweeper writes them once Redis is back
        except Exception:  # Redis is a cache: a miss is refilled from PostgreSQL
            log.exception("could not update membership sets in Redis (the outbox sweeper will)")
            await _forget(cache, env_id, list(result.redis_sets))
            continue
        await outbox.done(pool, env_id, result.outbox_id)
    stats.rounds += 1
    stats.messages += len(rows)
    return len(rows)


async def _try_apply(
    conn: Conn,
    rows: list[asyncpg.Record],
    catalog: SegmentCatalog,
    stats: DrainStats,
    results: list[tuple[int, BatchResult]],
) -> str | None:
    """Apply ``rows`` in a savepoint; None when they applied, else the error they raised (and
    the savepoint is rolled back). Conflicts and a lost connection are raised: they are not
    the rows' fault, and the whole round is retried later."""
    dead = stats.dead
    stats.attempts += 1
    try:
        async with conn.transaction():
            applied = await _apply_rows(conn, rows, catalog, stats)
    except _RETRYABLE:
        stats.dead = dead
        raise
    except Exception as exc:
        stats.dead = dead
        if postgres_gone(exc):
            raise  # rows buried inside the rolled-back savepoint are not buried
        log.debug("%d inbox rows failed together: %r", len(rows), exc)
        return repr(exc)
    results.extend(applied.items())
    return None


async def _isolate(
    conn: Conn,
    rows: list[asyncpg.Record],
    failure: str,
    catalog: SegmentCatalog,
    stats: DrainStats,
    results: list[tuple[int, BatchResult]],
    *,
    tried: bool,
) -> None:
    """Apply every row of ``rows`` that can be applied and bury the others, by bisection:
    ``rows`` failed together (``tried``) or are presumed to (their sibling half applied).
    The left half is tried; when it applies, the failure is presumed in the right half,
    which is split at once without being tried whole. A batch with one bad row thus costs
    one failed try of each size n, n/2, n/4, ... at most (usually half of them): about
    log2(n) savepoints, never a round per row. A presumed-bad single row is still tried,
    so rows that only fail together with rows of the other half are applied, not buried."""
    if len(rows) == 1:
        error = failure if tried else await _try_apply(conn, rows, catalog, stats, results)
        if error is not None:
            log.error("burying inbox row %s: %s", rows[0]["id"], error)
            await _bury(conn, rows[0], error)
            stats.dead += 1
        return
    half = len(rows) // 2
    left, right = rows[:half], rows[half:]
    left_failure = await _try_apply(conn, left, catalog, stats, results)
    if left_failure is None:
        await _isolate(conn, right, failure, catalog, stats, results, tried=False)
        return
    await _isolate(conn, left, left_failure, catalog, stats, results, tried=True)
    right_failure = await _try_apply(conn, right, catalog, stats, results)
    if right_failure is not None:
        await _isolate(conn, right, right_failure, catalog, stats, results, tried=True)


async def _forget(cache: MembershipCache, env_id: int, keys: list[str]) -> None:
    try:
        await cache.forget(env_id, keys)
    except Exception:
        log.exception("could not drop stale membership sets from Redis")
