"""Bursts of segment creations on the real services (issues 10 and 15), each figure beside its
floor from the same run.

1. One segment created alone over N users: the time until it is ``ready`` (the floor).
2. A burst of 60 creations from 8 clients at once: the time until all are ``ready``, beside
   60 x the floor.
3. Freshness while recomputing (the 60 segments are now the environment's, each user in about
   24 of them): 40 identifies of new users, one every 0.2 s, each polled on the query service
   until it is a member of a segment that existed before: p50 / p99 / max, first without
   recomputes, then while 10 new segments are created at once; and the time until those 10 are
   ready, beside one recompute alone.
4. ``verify-cache`` over the environment: the sets that disagree with PostgreSQL (0).

Users are COPY-loaded (``seats`` uniform in 0..99); segment k holds ``a_k <= seats < a_k + 40``.

    .venv/bin/python -m bench.burst [--users 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
from typing import Any

import httpx
import redis.asyncio as aioredis

from bench.recompute import load_users
from bench.stack import DATA, BenchDatabase, Services, drop_redis_keys, redis_url
from shared.db import create_pool
from shared.membership.cache import MembershipCache
from shared.membership.verify import CacheVerifier
from shared.settings import Settings


def conditions(k: int) -> dict[str, Any]:
    low = (k * 7) % 60
    return {
        "all": [
            {"attribute": "seats", "op": "gte", "value": low},
            {"attribute": "seats", "op": "lt", "value": low + 40},
        ]
    }


class Bench:
    def __init__(self, services: Services, secret: str, write: str) -> None:
        self.admin = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{services.port('admin')}",
            headers={"Authorization": f"Bearer {secret}"},
            timeout=60,
        )
        self.ingest = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{services.port('ingest')}", auth=(write, ""), timeout=60
        )
        self.query = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{services.port('query')}",
            headers={"Authorization": f"Bearer {write}"},
            timeout=60,
        )

    async def close(self) -> None:
        for client in (self.admin, self.ingest, self.query):
            await client.aclose()

    async def create(self, key: str, k: int) -> None:
        resp = await self.admin.post(
            "/v1/segments",
            json={"name": key, "key": key, "kind": "dynamic", "conditions": conditions(k)},
        )
        assert resp.status_code == 201, resp.text

    async def wait_ready(self, keys: set[str], within: float = 1800) -> float:
        start = time.monotonic()
        while time.monotonic() - start < within:
            resp = await self.admin.get("/v1/segments")
            statuses = {s["key"]: s["status"] for s in resp.json()["segments"]}
            failed = [k for k in keys if statuses.get(k) == "failed"]
            assert not failed, failed
            if all(statuses.get(k) == "ready" for k in keys):
                return time.monotonic() - start
            await asyncio.sleep(0.05)
        raise TimeoutError(f"not ready after {within}s")

    async def probe(self, user_id: str, segment: str) -> float:
        """identify -> member: seconds until the query service answers true."""
        start = time.monotonic()
        resp = await self.ingest.post(
            "/v1/identify", json={"userId": user_id, "traits": {"seats": 50}}
        )
        assert resp.status_code == 200, resp.text
        while time.monotonic() - start < 60:
            got = await self.query.get(f"/v1/users/{user_id}/segments/{segment}")
            if got.json()["member"]:
                return time.monotonic() - start
            await asyncio.sleep(0.005)
        return float("inf")

    async def probes(self, tag: str, segment: str, count: int = 40) -> list[float]:
        tasks = []
        for i in range(count):
            tasks.append(asyncio.create_task(self.probe(f"probe-{tag}-{i}", segment)))
            await asyncio.sleep(0.2)
        return sorted(await asyncio.gather(*tasks))


def summary(latencies: list[float]) -> str:
    lost = sum(1 for x in latencies if x == float("inf"))
    seen = [x * 1000 for x in latencies if x != float("inf")]
    if not seen:
        return f"never visible {lost}"
    p99 = seen[min(len(seen) - 1, round(0.99 * (len(seen) - 1)))]
    return (
        f"p50 {statistics.median(seen):6.0f} ms  p99 {p99:6.0f} ms  max {max(seen):6.0f} ms"
        f"  never visible {lost}"
    )


async def run(args: argparse.Namespace) -> None:
    url = redis_url(args.redis)
    prefix = f"segburst{os.getpid()}"
    async with BenchDatabase(args.database) as db:
        keys = await db.environment("bench")
        pool = await create_pool(db.dsn, size=2)
        start = time.perf_counter()
        await load_users(pool, keys.id, args.users)
        print(f"loaded {args.users:,} users by COPY in {time.perf_counter() - start:.1f} s")
        services = Services(
            Settings(database_url=db.dsn, redis_url=url, redis_prefix=prefix, data_dir=str(DATA))
        )
        bench = Bench(services, keys.secretKey, keys.writeKey)
        try:
            for name in ("ingest", "query", "admin", "worker"):
                await services.start_async(name)
            await measure(bench, args)
            client = aioredis.Redis.from_url(url)
            drift = await CacheVerifier(pool, MembershipCache(client, prefix)).verify_all(
                repair=False, env_id=keys.id
            )
            await client.aclose()
            print(
                f"verify-cache: {drift.disagreeing} of {drift.checked} sets disagree with "
                "PostgreSQL (floor 0)"
            )
        finally:
            await bench.close()
            services.stop_all()
            await pool.close()
            await drop_redis_keys(url, prefix)


async def measure(bench: Bench, args: argparse.Namespace) -> None:
    await bench.create("alone", 999)
    alone = await bench.wait_ready({"alone"})
    print(f"one segment alone over {args.users:,} users: ready in {alone:.2f} s (the floor)")

    async def client(c: int) -> None:
        for k in range(c, 60, 8):
            await bench.create(f"s{k}", k)

    start = time.monotonic()
    await asyncio.gather(*(client(c) for c in range(8)))
    await bench.wait_ready({f"s{k}" for k in range(60)})
    burst = time.monotonic() - start
    print(
        f"burst of 60 creations (8 clients): all ready in {burst:.1f} s"
        f"  beside 60 x one alone = {60 * alone:.1f} s  ({burst / (60 * alone):.2f} x)"
    )

    # probes send seats 50: members of s2 (14 <= seats < 54), a segment that existed before
    quiet = await bench.probes("quiet", "s2")
    print(f"identify -> member without recomputes: {summary(quiet)}")

    async def ten() -> float:
        begin = time.monotonic()
        await asyncio.gather(*(bench.create(f"n{k}", 100 + k) for k in range(10)))
        await bench.wait_ready({f"n{k}" for k in range(10)})
        return time.monotonic() - begin

    busy, ten_ready = await asyncio.gather(bench.probes("busy", "s2"), ten())
    print(f"identify -> member during 10 recomputes: {summary(busy)}")
    print(
        f"10 new segments at once: all ready in {ten_ready:.1f} s  beside one alone "
        f"{alone:.2f} s (10 x = {10 * alone:.1f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.burst", description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--database", help="maintenance DSN of the PostgreSQL to use")
    parser.add_argument("--redis", help="Redis URL")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print("(the machine is shared with other sessions: compare figures only within a run)")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
