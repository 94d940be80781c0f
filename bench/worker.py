"""Worker throughput: profile merges (with membership evaluation) per second on one core.

Fills the inbox of a fresh database directly (as ingest would) with identify messages over
many users, creates N dynamic segments, then drains in this process and reports messages/s
beside the floor: the same rows claimed and deleted with no work in between (the cost of the
inbox alone).

    .venv/bin/python -m bench.worker [--messages 50000] [--users 10000] [--segments 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from datetime import UTC, datetime

import asyncpg
import redis.asyncio as aioredis

from services.worker.drain import DrainStats, drain_round
from shared.db import Conn, create_pool
from shared.environments import ensure_environment
from shared.membership import SegmentCatalog
from shared.membership.cache import MembershipCache
from shared.messages import WireMessage, inbox_encoder, normalise
from shared.migrate import migrate

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PLANS = ["free", "pro", "enterprise", "trial"]


def segment_conditions(i: int) -> dict[str, object]:
    """Fifty different 2-4 leaf trees over the attributes the messages set."""
    kinds = [
        {"attribute": "plan", "op": "is", "value": PLANS[i % 4]},
        {"attribute": "seats", "op": "gt", "value": i * 3},
        {"attribute": "country", "op": "in", "value": ["FR", "DE", "US"][: 1 + i % 3]},
        {"attribute": "email", "op": "ends_with", "value": f"{i % 7}.example.com"},
        {"attribute": "score", "op": "between", "value": [i, i + 40]},
    ]
    leaves = [kinds[(i + k) % len(kinds)] for k in range(2 + i % 3)]
    return {"all": leaves} if i % 2 else {"any": leaves}


def messages(count: int, users: int, churn: float, tag: str = "") -> list[bytes]:
    """Identify messages; each user has stable attributes, and a ``churn`` fraction of the
    messages change the attributes that segments look at (the rest refresh the same values
    and count a visit, as most real identifies do)."""
    now = datetime.now(UTC)
    out = []
    for n in range(count):
        u = random.randrange(users)
        rng = random.Random(u) if random.random() >= churn else random
        wire = WireMessage(
            type="identify",
            userId=f"user-{u}",
            messageId=f"m-{tag}{n}",
            traits={
                "plan": rng.choice(PLANS),
                "seats": rng.randrange(200),
                "country": rng.choice(["FR", "DE", "US", "GB"]),
                "email": f"user-{u}@{u % 7}.example.com",
                "visits": {"add": 1},
                "score": rng.randrange(100),
            },
        )
        out.append(inbox_encoder.encode(normalise(wire, now)))
    return out


async def create_segments(db: asyncpg.Pool | Conn, env_id: int, count: int) -> None:
    """``count`` dynamic segments ``s0``... (see :func:`segment_conditions`)."""
    for i in range(count):
        await db.execute(
            """INSERT INTO segments (env_id, key, name, kind, conditions)
               VALUES ($1, $2, $2, 'dynamic', $3)""",
            env_id,
            f"s{i}",
            segment_conditions(i),
        )


async def fill(pool: asyncpg.Pool, env_id: int, bodies: list[bytes]) -> None:
    await pool.execute(
        "INSERT INTO inbox (env_id, body) SELECT $1, b FROM unnest($2::bytea[]) AS b",
        env_id,
        bodies,
    )


async def timed_drain(
    pool: asyncpg.Pool,
    cache: MembershipCache,
    catalog: SegmentCatalog,
    batch: int,
    stats: DrainStats,
    count: int,
) -> tuple[float, float]:
    """(messages/s wall-clock, worker process CPU cores used) for draining the inbox."""
    cpu0, start = time.process_time(), time.perf_counter()
    while await drain_round(pool, cache, catalog, batch, stats):
        pass
    wall = time.perf_counter() - start
    return count / wall, (time.process_time() - cpu0) / wall


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--segments", type=int, default=50)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument(
        "--churn", type=float, default=0.1, help="fraction of messages that change segments"
    )
    args = parser.parse_args()

    name = f"segments_bench_worker_{os.getpid()}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    pool = await create_pool(ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}", size=4)
    redis = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    prefix = f"benchw{os.getpid()}"
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            env = await ensure_environment(conn, "bench")
            await create_segments(conn, env.id, args.segments)
        bodies = messages(args.messages, args.users, args.churn)
        cache = MembershipCache(redis, prefix)

        # floor: the inbox alone (claim the same batches, delete them, commit)
        await fill(pool, env.id, bodies)
        start = time.perf_counter()
        while True:
            async with pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(
                    "SELECT id FROM inbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED", args.batch
                )
                if not rows:
                    break
                await conn.execute("DELETE FROM inbox WHERE id = ANY($1)", [r["id"] for r in rows])
        floor = args.messages / (time.perf_counter() - start)

        await fill(pool, env.id, bodies)
        stats = DrainStats()
        catalog = SegmentCatalog()
        cold = await timed_drain(pool, cache, catalog, args.batch, stats, args.messages)
        users = await pool.fetchval("SELECT count(*) FROM users WHERE env_id = $1", env.id)
        # the same users again: profile merges into existing profiles (the steady state)
        await fill(pool, env.id, messages(args.messages, args.users, args.churn, "again"))
        warm = await timed_drain(pool, cache, catalog, args.batch, stats, args.messages)
        members = await pool.fetchval("SELECT count(*) FROM memberships WHERE env_id = $1", env.id)
        print(f"{'figure':48} {'value':>10} {'floor':>10}")
        print(f"{'inbox claim+delete only, msgs/s':48} {floor:10,.0f} {'-':>10}")
        for label, (rate, cpu) in (("first sight (creates users)", cold), ("existing users", warm)):
            print(f"{label + ': merges/s, wall':48} {rate:10,.0f} {floor:10,.0f}")
            print(
                f"{label + ': merges per worker CPU-second':48} {rate / cpu:10,.0f}"
                f" {'':>10}   aim >= 5,000/core (worker at {cpu:.2f} cores)"
            )
        print(
            f"{args.messages:,} identify messages twice over {users:,} users, "
            f"{args.segments} dynamic segments, churn {args.churn:.0%}, batches of {args.batch}; "
            f"{members:,} memberships; PostgreSQL runs on the other core"
        )
    finally:
        await pool.close()
        keys = [k async for k in redis.scan_iter(match=f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
