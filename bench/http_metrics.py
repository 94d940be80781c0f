"""What the request observer (shared.http_metrics: a counter, a histogram, a request id per
request) costs the query service.

Two figures:
- in process: a Litestar app answering ``GET /hello`` called directly (no HTTP), with and
  without the observer, per request; a figure the machine's other load barely moves;
- over HTTP: two query processes on the same database, one with ``SEGMENTS_HTTP_METRICS=0``,
  membership checks (``GET /v1/users/{id}/segments``) and ``GET /hello`` from N keep-alive
  connections, runs alternating (off, on, off, on, ...) so that a change in the machine's
  load hits both; medians printed side by side. Target: on >= 95 % of off.

    .venv/bin/python -m bench.http_metrics [--rounds 3] [--seconds 4] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

import msgspec
from litestar import Litestar, Response, get

from bench.keepalive import Target
from bench.load import ClosedSpec, Generator, LoadResult, Workload
from bench.stack import BenchDatabase, Services, drop_redis_keys, one_client_settings, redis_url
from shared.http_metrics import observe_requests
from shared.settings import Settings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.http_metrics", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="alternating runs of each")
    p.add_argument("--seconds", type=float, default=4.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--users", type=int, default=1000, help="known users the checks ask about")
    p.add_argument("--database", default=None, help="maintenance DSN of the PostgreSQL to use")
    p.add_argument("--redis", default=None)
    return p.parse_args(argv)


@get("/hello")
async def _hello() -> Response[bytes]:
    return Response(b'{"hello":"world"}', media_type="application/json")


async def _calls(app: Litestar, n: int) -> float:
    """Seconds per ``GET /hello`` called straight into ``app``."""
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    base = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/hello",
        "raw_path": b"/hello",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8002),
    }
    for _ in range(1000):  # warm the routing caches
        await app(dict(base), receive, send)  # type: ignore[arg-type]
    started = time.perf_counter()
    for _ in range(n):
        await app(dict(base), receive, send)  # type: ignore[arg-type]
        sent.clear()
    return (time.perf_counter() - started) / n


async def in_process_cost(n: int = 20_000, rounds: int = 5) -> tuple[float, float]:
    """(seconds per request without the observer, with it), the best of ``rounds``."""
    plain = Litestar([_hello], openapi_config=None, logging_config=None)
    observed = observe_requests(
        Litestar([_hello], openapi_config=None, logging_config=None), Settings()
    )
    without, with_ = [], []
    for _ in range(rounds):
        without.append(await _calls(plain, n))
        with_.append(await _calls(observed, n))
    return min(without), min(with_)


async def _users(dsn: str, env_id: int, n: int) -> list[str]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """INSERT INTO users (env_id, user_id, first_seen_at, last_seen_at,
                                  membership_version)
               SELECT $1, 'm' || g, now(), now(), 1 FROM generate_series(1, $2) g""",
            env_id,
            n,
        )
    finally:
        await conn.close()
    return [f"m{i}" for i in range(1, n + 1)]


async def run(args: argparse.Namespace) -> None:
    without, with_ = await in_process_cost()
    print(
        f"in process, GET /hello straight into Litestar: {without * 1e6:.1f} µs without the "
        f"observer, {with_ * 1e6:.1f} µs with it: {(with_ - without) * 1e6:.1f} µs a request",
        flush=True,
    )
    url = redis_url(args.redis)
    prefix = f"segbench{os.getpid()}"
    generator = Generator()
    async with BenchDatabase(args.database) as db:
        keys = await db.environment("bench")
        env_id = keys.id
        users = await _users(db.dsn, env_id, args.users)
        base = one_client_settings(db.dsn, url, prefix)
        off = Services(msgspec.structs.replace(base, http_metrics=False))
        on = Services(base)
        try:
            await off.start_async("query")
            await on.start_async("query")
            paths = [f"/v1/users/{u}/segments" for u in users]
            results: dict[str, dict[str, list[LoadResult]]] = {
                "off": {"checks": [], "hello": []},
                "on": {"checks": [], "hello": []},
            }
            for round_ in range(args.rounds):
                for label, services in (("off", off), ("on", on)):
                    target = Target("127.0.0.1", services.port("query"), f"Bearer {keys.writeKey}")
                    for kind, workload in (
                        ("hello", Workload("paths", paths=["/hello"])),
                        ("checks", Workload("paths", paths=paths)),
                    ):
                        result = await generator.closed(
                            ClosedSpec(
                                target=target,
                                workload=workload,
                                connections=args.connections,
                                seconds=args.seconds,
                                warmup=args.warmup,
                            )
                        )
                        if result.errors or result.unexpected:
                            raise RuntimeError(f"{label} {kind}: {result.first_error}")
                        results[label][kind].append(result)
                    print(
                        f"round {round_ + 1} metrics {label:3}: "
                        f"checks {results[label]['checks'][-1].rate:8,.0f}/s "
                        f"p99 {results[label]['checks'][-1].p99_ms:5.1f} ms  "
                        f"(GET /hello {results[label]['hello'][-1].rate:8,.0f}/s)",
                        flush=True,
                    )
            med = {
                label: {
                    kind: statistics.median(r.rate for r in runs) for kind, runs in kinds.items()
                }
                for label, kinds in results.items()
            }
            p99 = {
                label: statistics.median(r.p99_ms for r in kinds["checks"])
                for label, kinds in results.items()
            }
            print()
            for label in ("off", "on"):
                print(
                    f"metrics {label:3}: membership checks {med[label]['checks']:8,.0f}/s, "
                    f"p99 {p99[label]:.1f} ms (GET /hello {med[label]['hello']:,.0f}/s)"
                )
            print(
                f"metrics on / off: checks {med['on']['checks'] / med['off']['checks']:.1%}, "
                f"/hello {med['on']['hello'] / med['off']['hello']:.1%} (target >= 95 %); "
                f"{args.rounds} alternating runs of {args.seconds:g} s each, median; the "
                "machine may be shared: compare within this run only"
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
