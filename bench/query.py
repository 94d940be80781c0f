"""The query service's membership check under load, beside its floor, in one run (issue 14).

    python -m bench.query [--users 10000] [--rounds 3] [--seconds 6] [--connections 32]

The floor (:mod:`bench.query_floor`) is a minimal Litestar app with the same route
``GET /v1/users/{userId}/segments/{key}``, answering the same JSON from the same Redis sets
with one ``SMEMBERS``, served the same way (uvicorn, uvloop, httptools, one process). Both are
started side by side once the users are loaded; then:

1. full load: ``--connections`` closed-loop keep-alive connections on each app in turn, for
   ``--rounds`` rounds (the order alternates), each measurement ``--seconds`` long after a
   warm-up; throughput and p50/p99 of each, and their ratios per round;
2. half load: requests sent open-loop at half of the query service's full-load rate (its
   median over the rounds), latency from each request's scheduled send time; the floor is
   measured at the same rate for reference.

Goals (issue 14): throughput >= 0.8x the floor's, p99 <= 2x the floor's at full load, p99
<= 5 ms at half load. Each is printed as a PASS/FAIL line, from the median of the per-round
ratios (the spread is printed beside it).

The users are real: ``--users`` identifies sent through ingest's ``/v1/batch`` with the
attributes of :mod:`bench.worker`, applied by the worker against ``plan is pro`` and
``--segments`` other dynamic segments; then ingest, admin and the worker are stopped, so that
the two apps, Redis and the load generator (a process of its own) have the machine. A sample
of users is asked of both apps first: their answers must agree.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request
from typing import Any

import asyncpg
import msgspec

from bench.cpu import pids_named
from bench.data_path import SEGMENT_KEY, _admin, create_segment, machine_busy, step
from bench.keepalive import Target
from bench.load import ClosedSpec, Generator, LoadResult, OpenResult, OpenSpec, Workload
from bench.stack import (
    DATA,
    ROOT,
    BenchDatabase,
    Services,
    drop_redis_keys,
    one_client_settings,
    redis_url,
)
from bench.worker import PLANS, segment_conditions
from services.embedded import free_port
from shared.settings import Settings

#: the goals of issue 14
THROUGHPUT_GOAL = 0.8
P99_RATIO_GOAL = 2.0
HALF_P99_GOAL_MS = 5.0
#: generator CPU share above which its figures are suspect
GENERATOR_BUSY = 0.9


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.query", description=__doc__)
    p.add_argument("--users", type=int, default=10_000, help="known users asked about")
    p.add_argument("--segments", type=int, default=20, help="dynamic segments beside plan-pro")
    p.add_argument("--rounds", type=int, default=3, help="full-load rounds (order alternates)")
    p.add_argument("--seconds", type=float, default=6, help="length of each measurement")
    p.add_argument("--warmup", type=float, default=1.5, help="unmeasured start of each")
    p.add_argument("--connections", type=int, default=32, help="closed-loop concurrency")
    p.add_argument(
        "--cache-seconds",
        type=float,
        default=Settings().cache_seconds,
        help="the query service's SEGMENTS_CACHE_SECONDS (shorter: its reloads weigh more)",
    )
    p.add_argument("--database", help="maintenance DSN of the PostgreSQL to use")
    p.add_argument("--redis", help="Redis URL (default: the local one)")
    p.add_argument(
        "--profile",
        help="record py-spy profiles of both apps during round 1 into this directory "
        "(collapsed stacks; needs py-spy, `pip install py-spy`)",
    )
    p.add_argument("--json", help="also write the figures to this file")
    return p.parse_args(argv)


# --- loading the users -----------------------------------------------------------------------


def _identify(n: int) -> dict[str, Any]:
    rng = random.Random(n)
    return {
        "type": "identify",
        "userId": f"user-{n}",
        "messageId": f"m-{n}",
        "traits": {
            "plan": rng.choice(PLANS),
            "seats": rng.randrange(200),
            "country": rng.choice(["FR", "DE", "US", "GB"]),
            "email": f"user-{n}@{n % 7}.example.com",
            "score": rng.randrange(100),
        },
    }


def _post(port: int, key: str, path: str, body: Any) -> Any:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=msgspec.json.encode(body),
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
        return msgspec.json.decode(resp.read())


async def load_users(
    services: Services, dsn: str, write_key: str, secret: str, n: int, n_segments: int
) -> None:
    """``plan-pro`` and ``n_segments`` other dynamic segments, then ``n`` users through
    ingest; returns once the worker has applied them."""
    admin = services.port("admin")
    await asyncio.to_thread(create_segment, admin, secret)
    for i in range(n_segments):
        await asyncio.to_thread(
            _admin,
            admin,
            secret,
            "POST",
            "/v1/segments",
            {
                "name": f"s{i}",
                "key": f"s{i}",
                "kind": "dynamic",
                "conditions": segment_conditions(i),
            },
        )
    step(f"loading {n:,} users into {n_segments + 1} dynamic segments (ingest -> worker)")
    for first in range(0, n, 1000):
        batch = [_identify(u) for u in range(first, min(n, first + 1000))]
        await asyncio.to_thread(
            _post, services.port("ingest"), write_key, "/v1/batch", {"batch": batch}
        )
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + 600
        # the inbox empty, and the recomputes of the segments created above over
        while await conn.fetchval(
            "SELECT (SELECT count(*) FROM inbox)"
            " + (SELECT count(*) FROM segments WHERE status <> 'ready')"
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not apply everything in 600 s")
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


# --- the floor -------------------------------------------------------------------------------


class Floor:
    """bench.query_floor as a child process."""

    def __init__(self, url: str, prefix: str, env_id: int, segments: dict[str, int], auth: str):
        self.port = free_port()
        self.log = DATA / f"floor-{os.getpid()}.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.query_floor",
                    "--port",
                    str(self.port),
                    "--redis",
                    url,
                    "--prefix",
                    prefix,
                    "--env-id",
                    str(env_id),
                    "--segments",
                    json.dumps(segments),
                    "--authorization",
                    auth,
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the floor exited; see {self.log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the floor did not start; see {self.log}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- the run ---------------------------------------------------------------------------------


class Round(msgspec.Struct):
    floor: LoadResult
    query: LoadResult

    @property
    def throughput_ratio(self) -> float:
        return self.query.rate / self.floor.rate

    @property
    def p99_ratio(self) -> float:
        return self.query.p99_ms / self.floor.p99_ms


class Results(msgspec.Struct):
    rounds: list[Round]
    half_rate: float
    half_query: OpenResult
    half_floor: OpenResult
    agree: int
    asked: int
    machine_busy_before: float
    machine_busy_after: float


def _py_spy(directory: str, name: str, pid: int, seconds: float) -> subprocess.Popen[bytes]:
    os.makedirs(directory, exist_ok=True)
    out = os.path.join(directory, f"{name}.txt")
    return subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(math.ceil(seconds)),
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            out,
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _watch(pid: int) -> dict[str, list[int]]:
    return {"server": [pid], "redis": pids_named("redis-server")}


def _ask(port: int, path: str, auth: str) -> bytes:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": auth})
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
        body: bytes = resp.read()
        return body


async def run(args: argparse.Namespace) -> Results:
    busy_before = await machine_busy()
    url = redis_url(args.redis)
    prefix = f"segbench{os.getpid()}"
    generator = Generator()
    floor: Floor | None = None
    async with BenchDatabase(args.database) as db:
        keys = await db.environment("bench")
        auth = f"Bearer {keys.writeKey}"
        services = Services(
            one_client_settings(db.dsn, url, prefix, cache_seconds=args.cache_seconds)
        )
        try:
            for name in ("ingest", "query", "admin", "worker"):
                await services.start_async(name)
            await load_users(
                services, db.dsn, keys.writeKey, keys.secretKey, args.users, args.segments
            )
            for name in ("worker", "ingest", "admin"):
                await services.stop_async(name)
            conn = await asyncpg.connect(db.dsn)
            try:
                rows = await conn.fetch("SELECT key, id FROM segments WHERE env_id = $1", keys.id)
            finally:
                await conn.close()
            floor = await asyncio.to_thread(
                Floor, url, prefix, keys.id, {r["key"]: r["id"] for r in rows}, auth
            )
            query_port = services.port("query")
            paths = [f"/v1/users/user-{u}/segments/{SEGMENT_KEY}" for u in range(args.users)]
            sample = random.Random(1).sample(paths, min(200, len(paths)))
            agree = 0
            for path in sample:
                real = await asyncio.to_thread(_ask, query_port, path, auth)
                agree += real == await asyncio.to_thread(_ask, floor.port, path, auth)
            apps = {
                "floor": (Target("127.0.0.1", floor.port, auth), floor.proc.pid),
                "query": (Target("127.0.0.1", query_port, auth), services.pid("query")),
            }

            async def closed(name: str, profile: bool = False) -> LoadResult:
                target, pid = apps[name]
                spy = (
                    _py_spy(args.profile, name, pid, args.warmup + args.seconds)
                    if profile
                    else None
                )
                result = await generator.closed(
                    ClosedSpec(
                        target=target,
                        workload=Workload("paths", paths=paths),
                        connections=args.connections,
                        seconds=args.seconds,
                        warmup=args.warmup,
                        watch=_watch(pid),
                    )
                )
                if spy is not None:
                    await asyncio.to_thread(spy.wait)
                services.check_alive()
                return result

            async def half(name: str, rate: float) -> OpenResult:
                target, pid = apps[name]
                result = await generator.open(
                    OpenSpec(
                        target=target,
                        paths=paths,
                        rate=rate,
                        seconds=args.seconds,
                        warmup=args.warmup,
                        connections=args.connections,
                        watch=_watch(pid),
                    )
                )
                services.check_alive()
                return result

            rounds = []
            for i in range(args.rounds):
                step(f"full load, round {i + 1} of {args.rounds}")
                profile = i == 0 and args.profile is not None
                if i % 2 == 0:
                    f = await closed("floor", profile)
                    q = await closed("query", profile)
                else:
                    q = await closed("query")
                    f = await closed("floor")
                rounds.append(Round(f, q))
            rate = statistics.median(r.query.rate for r in rounds) / 2
            step(f"half load: {rate:,.0f} requests/s open-loop")
            half_query = await half("query", rate)
            half_floor = await half("floor", rate)
            busy_after = await machine_busy()
            return Results(
                rounds, rate, half_query, half_floor, agree, len(sample), busy_before, busy_after
            )
        finally:
            if floor is not None:
                floor.stop()
            services.stop_all()
            generator.close()
            await drop_redis_keys(url, prefix)


# --- the report ------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:.2f} ms" if value == value else "n/a"


def _us(result: LoadResult) -> str:
    """CPU microseconds the server spent per request."""
    server = result.cpu.get("server")
    return f"{server / result.rate * 1e6:.0f} us" if server and result.rate else "n/a"


def _cpu(cpu: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.2f}" for k, v in cpu.items())


def report(r: Results, args: argparse.Namespace) -> list[str]:
    lines = [
        f"{args.users:,} known users, {args.segments + 1} dynamic segments; "
        f"{args.connections} closed-loop connections, {args.seconds:g} s measured after "
        f"{args.warmup:g} s warm-up",
        f"answers of the two apps agree on {r.agree} of {r.asked} sampled users",
        "",
        "full load        floor req/s  p50      p99       query req/s  p50      p99       "
        "throughput  p99 ratio",
    ]
    for i, rnd in enumerate(r.rounds, 1):
        f, q = rnd.floor, rnd.query
        lines.append(
            f"  round {i}        {f.rate:>10,.0f}  {_ms(f.p50_ms):>7}  {_ms(f.p99_ms):>8}  "
            f"{q.rate:>11,.0f}  {_ms(q.p50_ms):>7}  {_ms(q.p99_ms):>8}  "
            f"{rnd.throughput_ratio:>9.2f}x  {rnd.p99_ratio:>8.2f}x"
        )
    lines.append(
        "server CPU per request (robust on a busy machine): "
        + "; ".join(
            f"round {i} floor {_us(rnd.floor)} query {_us(rnd.query)}"
            for i, rnd in enumerate(r.rounds, 1)
        )
    )
    h, hf = r.half_query, r.half_floor
    lines += [
        "",
        f"half load, {r.half_rate:,.0f} req/s open loop: query p50 {_ms(h.p50_ms)} "
        f"p99 {_ms(h.p99_ms)} max {_ms(h.max_ms)} ({h.answered:,} of {h.sent:,} answered); "
        f"floor p50 {_ms(hf.p50_ms)} p99 {_ms(hf.p99_ms)} max {_ms(hf.max_ms)}",
        "",
        f"machine busy before the run: {r.machine_busy_before:.2f} cores, after the "
        f"measurements: {r.machine_busy_after:.2f} (our own load included)",
        "CPU during each measurement (1.00 = one core; 'machine' = every process):",
    ]
    measured: list[tuple[str, LoadResult | OpenResult]] = []
    for i, rnd in enumerate(r.rounds, 1):
        measured += [(f"round {i} floor", rnd.floor), (f"round {i} query", rnd.query)]
    measured += [("half query", h), ("half floor", hf)]
    for label, res in measured:
        lines.append(f"  {label:<15} {_cpu(res.cpu)}")
        if res.cpu.get("generator", 0) >= GENERATOR_BUSY:
            lines.append("  ^ the load generator was saturated: this figure is a lower bound")
        if res.errors:
            lines.append(f"  ! {res.errors:,} errors, first: {res.first_error}")
    throughput = [rnd.throughput_ratio for rnd in r.rounds]
    p99 = [rnd.p99_ratio for rnd in r.rounds]

    def goal(ok: bool, text: str) -> str:
        return f"{'PASS' if ok else 'FAIL'}  {text}"

    t, p = statistics.median(throughput), statistics.median(p99)
    failed = sum(rnd.query.errors + rnd.query.unexpected for rnd in r.rounds)
    if failed:
        lines.append(f"! the query service answered {failed:,} requests wrongly: no PASS counts")
    lines += [
        "",
        goal(
            t >= THROUGHPUT_GOAL and not failed,
            f"throughput at full load {t:.2f}x the floor's (rounds {min(throughput):.2f}-"
            f"{max(throughput):.2f}; goal >= {THROUGHPUT_GOAL}x)",
        ),
        goal(
            p <= P99_RATIO_GOAL and not failed,
            f"p99 at full load {p:.2f}x the floor's (rounds {min(p99):.2f}-{max(p99):.2f}; "
            f"goal <= {P99_RATIO_GOAL:g}x)",
        ),
        goal(
            h.p99_ms <= HALF_P99_GOAL_MS and not h.errors,
            f"p99 at half load {_ms(h.p99_ms)} (goal <= {HALF_P99_GOAL_MS:g} ms)",
        ),
    ]
    return lines


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    results = asyncio.run(run(args))
    print("\n".join(report(results, args)))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(msgspec.to_builtins(results), out, indent=2)


if __name__ == "__main__":
    main()
