"""What the rate limiter costs ingest: single identifies per second with the limiter on and off.

Two ingest processes on the same database, one with the limiter off
(``SEGMENTS_RATE_LIMIT_*_PER_SECOND=0``), one with it on. The one that is on has its limits
set above the offered load, so that it does all its bookkeeping (a bucket per key and per
address, every request) without refusing anything: what is measured is the cost, not the
throttling. Runs alternate (off, on, off, on, ...) so that a change in the machine's load hits
both; the median of each is printed beside the other, with ``GET /hello`` of the same process
as the floor. Target: on >= 95 % of off.

    .venv/bin/python -m bench.ratelimit [--rounds 3] [--seconds 4] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import msgspec

from bench.keepalive import Target
from bench.load import ClosedSpec, Generator, LoadResult, Workload
from bench.stack import DATA, BenchDatabase, Services, drop_redis_keys, redis_url
from shared.environments import Environment
from shared.rate_limit import RequestLimits
from shared.settings import Settings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.ratelimit", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="alternating runs of each")
    p.add_argument("--seconds", type=float, default=4.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--database", default=None, help="maintenance DSN of the PostgreSQL to use")
    p.add_argument("--redis", default=None)
    return p.parse_args(argv)


def check_cost(n: int = 1_000_000) -> float:
    """Seconds one request's two checks (address and key) take, in this process: a figure
    the machine's other load barely moves, beside the HTTP runs that it moves a lot."""
    limits = RequestLimits(1e9, 1e9, 2.0)
    env = Environment(id=1, name="bench", secret=False)
    scopes = [{"client": (f"10.0.{i // 256}.{i % 256}", 5000)} for i in range(1000)]
    started = time.perf_counter()
    for i in range(n):
        limits.check_address(scopes[i % 1000])
        limits.check_key(env)
    return (time.perf_counter() - started) / n


async def run(args: argparse.Namespace) -> None:
    cost = check_cost()
    print(
        f"limiter checks per request (address + key), in process: {cost * 1e6:.2f} µs", flush=True
    )
    url = redis_url(args.redis)
    prefix = f"segbench{os.getpid()}"
    generator = Generator()
    async with BenchDatabase(args.database) as db:
        keys = await db.environment("bench")
        base = Settings(database_url=db.dsn, redis_url=url, redis_prefix=prefix, data_dir=str(DATA))
        off = Services(
            msgspec.structs.replace(
                base, rate_limit_key_per_second=0, rate_limit_address_per_second=0
            )
        )
        on = Services(
            msgspec.structs.replace(
                base, rate_limit_key_per_second=1e9, rate_limit_address_per_second=1e9
            )
        )
        try:
            await off.start_async("ingest")
            await on.start_async("ingest")
            results: dict[str, list[LoadResult]] = {"off": [], "on": []}
            hello: dict[str, list[LoadResult]] = {"off": [], "on": []}
            for round_ in range(args.rounds):
                for label, services in (("off", off), ("on", on)):
                    target = Target("127.0.0.1", services.port("ingest"), f"Bearer {keys.writeKey}")

                    async def closed(workload: Workload, target: Target = target) -> LoadResult:
                        spec = ClosedSpec(
                            target=target,
                            workload=workload,
                            connections=args.connections,
                            seconds=args.seconds,
                            warmup=args.warmup,
                        )
                        return await generator.closed(spec)

                    hello[label].append(await closed(Workload("paths", paths=["/hello"])))
                    result = await closed(Workload("identify", user_prefix=f"{label}{round_}-"))
                    if result.errors or result.unexpected:
                        raise RuntimeError(f"{label}: {result.errors} errors: {result.first_error}")
                    results[label].append(result)
                    print(
                        f"round {round_ + 1} limiter {label:3}: {result.rate:8,.0f} identifies/s"
                        f"  (GET /hello {hello[label][-1].rate:8,.0f}/s)",
                        flush=True,
                    )
            median = {k: statistics.median(r.rate for r in v) for k, v in results.items()}
            floor = {k: statistics.median(r.rate for r in v) for k, v in hello.items()}
            print()
            for label in ("off", "on"):
                print(
                    f"single identifies, limiter {label:3}: {median[label]:8,.0f}/s"
                    f"  (floor: GET /hello {floor[label]:,.0f}/s)"
                )
            per_identify = 2 / (median["off"] or 1)  # 2 cores' seconds per identify
            print(
                f"limiter checks: {cost * 1e6:.2f} µs per request = {cost / per_identify:.2%} of "
                f"the CPU one identify costs here ({per_identify * 1e6:.0f} µs of 2 cores)"
            )
            print(
                f"limiter on / off: {median['on'] / median['off']:.1%} (target >= 95 %); "
                f"{args.rounds} alternating runs of {args.seconds:g} s each, median; "
                "the machine may be shared: compare within this run only"
            )
        finally:
            on.stop_all()
            off.stop_all()
            generator.close()
            await drop_redis_keys(url, prefix)


def main(argv: list[str] | None = None) -> None:
    asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    main()
