"""Growth over time (issue 14): the worker's inserts into the tables that grow with traffic
cost the same whatever they hold, and an expired period goes at once.

Measures, per batch of ``--batch`` rows, the worker's own statements:

- ``dedup``: :func:`services.worker.drain.first_new` (record the batch's messageIds in
  today's partition of ``processed_messages``, look for them in the earlier days);
- ``changes``: :func:`shared.membership.record_changes` with no webhook
  (``membership_changes`` alone), and ``changes+hooks`` with one webhook subscribed (each
  change also queues a ``webhook_deliveries`` row, in the same statement);

with the tables holding 0 and then each of ``--sizes`` rows of history, spread over the
partitions their retention keeps (processed_messages: the 7 days before today, in this
week's partition and the last; membership_changes: the 13 weeks before this one;
webhook_deliveries a tenth as many over the 4 weeks before this one). The
floor, measured just before each row: the same statements into empty, unpartitioned tables
of the former schema (migrations 001/003; first_new's statement as it was before migration
060).

Then the retention step on the oldest membership_changes partition: ``DELETE`` of its rows
(rolled back) beside what the maintenance job does, ``DETACH`` + ``DROP``.

    .venv/bin/python -m bench.growth [--sizes 1000000,3000000] [--batch 1000] [--runs 11]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta

import asyncpg

from bench.stack import BenchDatabase
from services.worker.drain import first_new
from shared.db import Conn, create_pool
from shared.membership import record_changes
from shared.messages import InboxMessage
from shared.partitions import TABLES, Maintenance, maintain_table, partitions

# The tables as they were before migration 060, in a schema of their own (the floor).
FLOOR_SCHEMA = """
CREATE SCHEMA floor;
CREATE TABLE floor.processed_messages (
    env_id bigint NOT NULL, message_id text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (env_id, message_id));
CREATE INDEX ON floor.processed_messages (processed_at);
CREATE TABLE floor.membership_changes (
    env_id bigint NOT NULL, id bigint GENERATED ALWAYS AS IDENTITY,
    segment_id bigint NOT NULL, user_pk bigint NOT NULL, entered boolean NOT NULL,
    cause text NOT NULL, at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (env_id, id));
CREATE INDEX ON floor.membership_changes (env_id, segment_id, id);
CREATE INDEX ON floor.membership_changes (env_id, user_pk, id);
CREATE TABLE floor.webhook_deliveries (
    env_id bigint NOT NULL, id bigint GENERATED ALWAYS AS IDENTITY,
    webhook_id bigint NOT NULL, change_id bigint NOT NULL, payload jsonb NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts integer NOT NULL DEFAULT 0, next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status integer, last_error text, delivered_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (env_id, id), UNIQUE (env_id, webhook_id, change_id),
    FOREIGN KEY (env_id, webhook_id) REFERENCES public.webhooks (env_id, id) ON DELETE CASCADE);
CREATE INDEX ON floor.webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX ON floor.webhook_deliveries (env_id, webhook_id, id);
"""

# first_new's statement before migration 060 (one unpartitioned table).
FLOOR_DEDUP = """INSERT INTO processed_messages (env_id, message_id)
SELECT * FROM unnest($1::bigint[], $2::text[])
ON CONFLICT DO NOTHING RETURNING env_id, message_id"""

FILL_CHUNK = 250_000
#: seconds a fill statement may take (the pool's command timeout is a minute)
FILL_TIMEOUT = 3600
#: days of history each table is given (its default retention, rounded to whole weeks)
HISTORY_DAYS = {"processed_messages": 7, "membership_changes": 98, "webhook_deliveries": 35}


class Run:
    def __init__(self, conn: Conn, env_id: int, users: list[int], segment: int, batch: int):
        self.conn = conn
        self.env_id = env_id
        self.users = users
        self.segment = segment
        self.batch = batch
        self.serial = 0

    def _ids(self) -> list[str]:
        self.serial += 1
        return [f"bench-{self.serial}-{i:06d}-{time.time_ns()}" for i in range(self.batch)]

    async def dedup(self, floor: bool) -> None:
        ids = self._ids()
        async with self.conn.transaction():
            if floor:
                await self.conn.fetch(FLOOR_DEDUP, [self.env_id] * len(ids), ids)
            else:
                rows = [(self.env_id, 0, _message(m)) for m in ids]
                fresh = await first_new(self.conn, rows)
                assert len(fresh) == len(ids)

    async def changes(self) -> None:
        n = self.batch
        self.serial += 1
        async with self.conn.transaction():
            await record_changes(
                self.conn,
                self.env_id,
                [self.segment] * n,
                self.users[:n],
                [self.serial % 2 == 0] * n,
                "message",
            )

    async def hooks(self, active: bool) -> None:
        await self.conn.execute(
            "UPDATE webhooks SET active = $2 WHERE env_id = $1", self.env_id, active
        )


def _message(message_id: str) -> InboxMessage:
    return InboxMessage(type="identify", messageId=message_id, timestamp=0, receivedAt=0)


async def timed(step: Callable[[], Awaitable[None]], runs: int) -> float:
    """Median seconds of ``runs`` calls (after one unmeasured call)."""
    await step()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        await step()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


async def fill(conn: Conn, env_id: int, webhook: int, rows: int, today: date) -> None:
    """Add ``rows`` of history (and a tenth as many deliveries) in past partitions."""
    week = today - timedelta(days=today.weekday())
    changes_from = datetime.combine(week - timedelta(weeks=13), datetime.min.time(), UTC)
    deliveries_from = datetime.combine(week - timedelta(weeks=4), datetime.min.time(), UTC)
    done = 0
    while done < rows:
        n = min(FILL_CHUNK, rows - done)
        await conn.execute(
            """INSERT INTO processed_messages (env_id, message_id, day)
               SELECT $1, md5(random()::text || i::text), $3::date - 1 - (i % 7)
               FROM generate_series(1, $2) AS i""",
            env_id,
            n,
            today,
            timeout=FILL_TIMEOUT,
        )
        await conn.execute(
            """INSERT INTO membership_changes (env_id, segment_id, user_pk, entered, cause, at)
               SELECT $1, 1 + i % 60, i % 1000000, i % 2 = 0, 'message',
                      $3::timestamptz + random() * interval '91 days'
               FROM generate_series(1, $2) AS i""",
            env_id,
            n,
            changes_from,
            timeout=FILL_TIMEOUT,
        )
        await conn.execute(
            """INSERT INTO webhook_deliveries (env_id, webhook_id, change_id, payload, status,
                                               created_at)
               SELECT $1, $2, i, '{"type": "segment.entered"}', 'delivered',
                      $4::timestamptz + random() * interval '28 days'
               FROM generate_series(1, $3) AS i""",
            env_id,
            webhook,
            n // 10,
            deliveries_from,
            timeout=FILL_TIMEOUT,
        )
        done += n
        print(f"  filled {done:,} of {rows:,}", flush=True)
    # as autovacuum would soon: measured after it, not during it
    await conn.execute(
        "VACUUM (ANALYZE) processed_messages, membership_changes, webhook_deliveries",
        timeout=FILL_TIMEOUT,
    )


async def measure_floor(run: Run, runs: int) -> dict[str, float]:
    """The floor: the same statements into the former tables (schema ``floor``), empty."""
    await run.conn.execute(
        "TRUNCATE floor.processed_messages, floor.membership_changes, floor.webhook_deliveries"
    )
    await run.conn.execute("SET search_path = floor, public")
    try:
        out = {"dedup": await timed(lambda: run.dedup(True), runs)}
        await run.hooks(False)
        out["changes"] = await timed(lambda: run.changes(), runs)
        await run.hooks(True)
        out["changes+hooks"] = await timed(lambda: run.changes(), runs)
    finally:
        await run.conn.execute("RESET search_path")
    return out


async def measure(run: Run, runs: int) -> dict[str, float]:
    out = {"dedup": await timed(lambda: run.dedup(False), runs)}
    await run.hooks(False)
    out["changes"] = await timed(lambda: run.changes(), runs)
    await run.hooks(True)
    out["changes+hooks"] = await timed(lambda: run.changes(), runs)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000000,3000000", help="rows of history, growing")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]

    async with BenchDatabase(None) as database:
        env = await database.environment("bench")
        pool = await create_pool(database.dsn, size=2)
        try:
            await run_bench(pool, env.id, sizes, args.batch, args.runs)
        finally:
            await pool.close()


async def run_bench(
    pool: asyncpg.Pool, env_id: int, sizes: list[int], batch: int, runs: int
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(FLOOR_SCHEMA)
        today: date = await conn.fetchval("SELECT (now() AT TIME ZONE 'UTC')::date")
        for spec in TABLES:  # the past partitions the history fills, as retention leaves
            await conn.fetchval(
                "SELECT segments_add_partitions($1, $2, $3, $4)",
                spec.table,
                spec.days,
                today - timedelta(days=HISTORY_DAYS[spec.table]),
                today,
            )
        users = [
            r["id"]
            for r in await conn.fetch(
                """INSERT INTO users (env_id, user_id, attributes, first_seen_at, last_seen_at)
                   SELECT $1, 'u' || i, '{}', now(), now() FROM generate_series(1, $2) AS i
                   RETURNING id""",
                env_id,
                batch,
            )
        ]
        segment = await conn.fetchval(
            "SELECT id FROM segments WHERE env_id = $1 AND kind = 'all'", env_id
        )
        webhook = await conn.fetchval(
            """INSERT INTO webhooks (env_id, url, secret) VALUES ($1, 'http://bench', 's')
               RETURNING id""",
            env_id,
        )
        run = Run(conn, env_id, users, segment, batch)

        print(f"\nms per batch of {batch} rows (median of {runs}); floor: the same statements")
        print("into the former unpartitioned tables, empty, measured just before each row")
        print(f"{'history rows':>14} {'dedup':>22} {'changes':>22} {'changes+hooks':>22}")
        held = 0
        for size in [0, *sizes]:
            if size > held:
                await fill(conn, env_id, webhook, size - held, today)
                held = size
            floor = await measure_floor(run, runs)
            got = await measure(run, runs)
            print(
                f"{held:>14,}"
                + "".join(
                    f" {got[k] * 1000:>7.1f} / {floor[k] * 1000:>5.1f} ({got[k] / floor[k]:.2f}x)"
                    for k in ("dedup", "changes", "changes+hooks")
                ),
                flush=True,
            )

        await retention(conn)


async def retention(conn: Conn) -> None:
    """DELETE of the oldest membership_changes partition's rows (rolled back) vs its drop."""
    spec = next(s for s in TABLES if s.table == "membership_changes")
    counted = [
        (name, lo, await conn.fetchval(f'SELECT count(*) FROM "{name}"'))
        for name, lo in await partitions(conn, spec.table)
    ]
    name, lo, rows = next(p for p in counted if p[2])
    hi = lo + timedelta(days=spec.days)
    tx = conn.transaction()
    await tx.start()
    start = time.perf_counter()
    await conn.execute(
        """DELETE FROM membership_changes
           WHERE at >= ($1::date::timestamp AT TIME ZONE 'UTC')
             AND at < ($2::date::timestamp AT TIME ZONE 'UTC')""",
        lo,
        hi,
        timeout=FILL_TIMEOUT,
    )
    deleted = time.perf_counter() - start
    await tx.rollback()
    report = Maintenance()
    start = time.perf_counter()
    await maintain_table(conn, spec, 1, hi + timedelta(days=1), report)
    dropped = time.perf_counter() - start
    assert name in report.dropped, report
    print(
        f"\nexpiring {name} ({rows:,} rows): DELETE {deleted * 1000:,.1f} ms"
        f" vs DETACH + DROP (the maintenance job) {dropped * 1000:,.1f} ms"
        f" ({deleted / dropped:,.0f}x)"
    )


if __name__ == "__main__":
    asyncio.run(main())
