"""Bulk recompute of one segment over many users, beside the floor: a plain count(*) with the
same WHERE.

Loads N users by COPY into a fresh database, then times `recompute_segment` for a first
computation (everyone enters), an unchanged re-run, and a definition change that moves about
half of the members, each beside `SELECT count(*) FROM users u WHERE env_id = $1 AND <where>`.

    .venv/bin/python -m bench.recompute [--users 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import logging
import os
import random
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
import redis.asyncio as aioredis

from shared.conditions import compile_sql, parse_condition
from shared.db import create_pool
from shared.environments import ensure_environment
from shared.membership import recompute_segment
from shared.membership.cache import MembershipCache
from shared.migrate import migrate

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PLANS = ["free", "pro", "enterprise", "trial"]

FIRST = {
    "all": [
        {"attribute": "plan", "op": "in", "value": ["pro", "enterprise"]},
        {"attribute": "seats", "op": "gte", "value": 10},
    ]
}
CHANGED = {
    "all": [
        {"attribute": "plan", "op": "in", "value": ["pro", "trial"]},
        {"attribute": "seats", "op": "gte", "value": 10},
    ]
}


async def load_users(pool: asyncpg.Pool, env_id: int, count: int) -> None:
    """COPY ``count`` users (CSV, in chunks) with random plan / seats / email attributes."""
    encode = msgspec.json.Encoder().encode
    # loaded an hour ago: no write is recent enough for the post-commit re-check, as when
    # nothing is being ingested while the segment is recomputed
    now = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    rng = random.Random(7)
    chunk = 100_000
    for start in range(0, count, chunk):
        out = io.StringIO()
        writer = csv.writer(out)
        for n in range(start, min(start + chunk, count)):
            attributes = {
                "plan": rng.choice(PLANS),
                "seats": rng.randrange(100),
                "email": f"user-{n}@example.com",
            }
            writer.writerow([env_id, f"user-{n}", encode(attributes).decode(), "{}", now, now, now])
        async with pool.acquire() as conn:
            await conn.copy_to_table(
                "users",
                source=io.BytesIO(out.getvalue().encode()),
                columns=[
                    "env_id",
                    "user_id",
                    "attributes",
                    "attr_ts",
                    "first_seen_at",
                    "last_seen_at",
                    "updated_at",
                ],
                format="csv",
            )
    await pool.execute("ANALYZE users")


async def floor(pool: asyncpg.Pool, env_id: int, conditions: object) -> tuple[float, int]:
    where, params = compile_sql(parse_condition(conditions), alias="u", first_param=2)
    start = time.perf_counter()
    n = await pool.fetchval(
        f"SELECT count(*) FROM users u WHERE u.env_id = $1 AND ({where})", env_id, *params
    )
    return time.perf_counter() - start, n


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=1_000_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="  %(message)s")  # the phases of each run

    name = f"segments_bench_recompute_{os.getpid()}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    pool = await create_pool(ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}", size=4)
    redis = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    prefix = f"benchr{os.getpid()}"
    cache = MembershipCache(redis, prefix)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            env = await ensure_environment(conn, "bench")
        start = time.perf_counter()
        await load_users(pool, env.id, args.users)
        print(f"loaded {args.users:,} users by COPY in {time.perf_counter() - start:.1f} s")
        seg_id = await pool.fetchval(
            """INSERT INTO segments (env_id, key, name, kind, conditions)
               VALUES ($1, 'big', 'Big', 'dynamic', $2) RETURNING id""",
            env.id,
            FIRST,
        )
        print(
            f"{'recompute':34} {'seconds':>8} {'count(*) floor':>15} {'members':>10}"
            f" {'+in':>9} {'-out':>9}"
        )
        for label, conditions in (
            ("first computation", FIRST),
            ("unchanged definition", FIRST),
            ("definition changed", CHANGED),
        ):
            await pool.execute(
                """UPDATE segments SET conditions = $3, version = version + 1
                   WHERE env_id = $1 AND id = $2""",
                env.id,
                seg_id,
                conditions,
            )
            floor_s, expected = await floor(pool, env.id, conditions)
            start = time.perf_counter()
            result = await recompute_segment(pool, cache, env.id, seg_id, datetime.now(UTC))
            took = time.perf_counter() - start
            assert result is not None and result.members == expected
            print(
                f"{label:34} {took:8.2f} {floor_s:15.2f} {result.members:10,} "
                f"{result.entered:9,} {result.exited:9,}"
            )
        print(f"aim: <= 15 s for a segment over 1,000,000 users ({args.users:,} here)")
    finally:
        await pool.close()
        keys = [k async for k in redis.scan_iter(match=f"{prefix}:*")]
        for i in range(0, len(keys), 10_000):
            await redis.delete(*keys[i : i + 10_000])
        await redis.aclose()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
