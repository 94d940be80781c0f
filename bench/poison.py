"""A batch holding one row the worker cannot apply, beside the same batch without it.

The worker claims a batch and applies it in one savepoint; when that fails it bisects inside
the same transaction (see ``services/worker/drain.py``). Issue 11 asks that one poison row cost
at most 2x a clean batch (it cost 28x when the batch replayed row by row).

The poison is a trigger refusing profiles that carry a ``poison`` attribute: PostgreSQL raises
in the middle of the batch's writes, as it does for a NUL in text (which ingest now refuses at
the door, so a bench cannot send one through it). Each run drains a fresh set of users (first
sight), clean and poisoned runs alternate, medians are printed.

    .venv/bin/python -m bench.poison [--rows 1000] [--runs 7] [--segments 50] [--position N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
from datetime import UTC, datetime

import asyncpg
import redis.asyncio as aioredis

from bench.stack import BenchDatabase, drop_redis_keys, redis_url
from bench.worker import create_segments, fill, messages
from services.worker.drain import DrainStats, drain_round
from shared.db import create_pool
from shared.membership import SegmentCatalog
from shared.membership.cache import MembershipCache
from shared.messages import WireMessage, inbox_encoder, normalise

TRIGGER = """
CREATE FUNCTION bench_refuse_poison() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'poisoned profile %', NEW.user_id; END $$ LANGUAGE plpgsql;
CREATE TRIGGER bench_refuse_poison BEFORE INSERT OR UPDATE ON users FOR EACH ROW
WHEN (NEW.attributes ? 'poison') EXECUTE FUNCTION bench_refuse_poison();
"""


def poison(tag: str) -> bytes:
    wire = WireMessage(
        type="identify", userId=f"poison-{tag}", messageId=f"poison-{tag}", traits={"poison": 1}
    )
    return inbox_encoder.encode(normalise(wire, datetime.now(UTC)))


async def drain_once(
    pool: asyncpg.Pool, cache: MembershipCache, catalog: SegmentCatalog, batch: int
) -> tuple[float, DrainStats]:
    stats = DrainStats()
    start = time.perf_counter()
    while await drain_round(pool, cache, catalog, batch, stats):
        pass
    return time.perf_counter() - start, stats


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--segments", type=int, default=50)
    parser.add_argument(
        "--position", type=int, default=None, help="of the poison row (default: random)"
    )
    args = parser.parse_args()

    prefix = f"benchp{os.getpid()}"
    url = redis_url(None)
    async with BenchDatabase(None) as database:
        env = await database.environment("bench")
        pool = await create_pool(database.dsn, size=2)
        redis = aioredis.Redis.from_url(url)
        try:
            await pool.execute(TRIGGER)
            await create_segments(pool, env.id, args.segments)
            cache = MembershipCache(redis, prefix)
            catalog = SegmentCatalog()
            clean: list[float] = []
            poisoned: list[float] = []
            attempts: list[int] = []
            # one warm-up run, not counted
            await fill(pool, env.id, messages(args.rows, 10**9, 1.0, "warm"))
            await drain_once(pool, cache, catalog, args.rows)
            for run in range(args.runs):
                bodies = messages(args.rows, 10**9, 1.0, f"c{run}-")
                await fill(pool, env.id, bodies)
                seconds, _ = await drain_once(pool, cache, catalog, args.rows)
                clean.append(seconds)

                bodies = messages(args.rows - 1, 10**9, 1.0, f"p{run}-")
                position = random.randrange(args.rows) if args.position is None else args.position
                bodies.insert(position, poison(str(run)))
                await fill(pool, env.id, bodies)
                seconds, stats = await drain_once(pool, cache, catalog, args.rows)
                assert stats.dead == 1, stats
                poisoned.append(seconds)
                attempts.append(stats.attempts)
            dead = await pool.fetchval(
                "SELECT count(*) FROM dead_letters WHERE env_id = $1", env.id
            )
            assert dead == args.runs
        finally:
            await pool.close()
            await redis.aclose()
            await drop_redis_keys(url, prefix)
    floor = statistics.median(clean)
    value = statistics.median(poisoned)
    print(f"{'figure (median of ' + str(args.runs) + ' runs)':52} {'value':>9} {'floor':>9}")
    label = f"{args.rows:,} rows with one poison row, s (floor: clean)"
    print(f"{label:52} {value:9.3f} {floor:9.3f}")
    print(f"{'ratio (aim <= 2.0)':52} {value / floor:9.2f}")
    print(
        f"savepoints per poisoned batch: {min(attempts)}-{max(attempts)} "
        f"(a clean batch: 1); {args.segments} dynamic segments; new users each run"
    )


if __name__ == "__main__":
    asyncio.run(main())
