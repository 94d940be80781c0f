"""The data path, end to end, each figure beside its floor measured in the same run.

    python -m bench.data_path [--seconds 8] [--json results.json]

1. ingest: single ``POST /v1/identify`` requests/s vs ``GET /hello`` of the same server, same
   client and concurrency (the worker is stopped, so that ingest has the machine to itself);
2. ingest: messages/s accepted through ``POST /v1/batch`` (worker still stopped), then the
   worker is started and the time it takes to drain everything ingested so far is measured;
3. freshness: identifies (plan=pro, a new user each) sent open-loop at a steady rate; for each,
   the delay from the identify's 2xx until the query service answers ``member: true`` for the
   dynamic segment "plan is pro";
4. query: ``GET /v1/users/{u}/segments/{key}`` on known users (Redis hits) vs ``GET /hello`` of
   the same server.

The run owns a fresh database (created, migrated, dropped) and a Redis key prefix (deleted at
the end). The load generator runs in a process of its own; each figure shows the CPU share
(1.0 = one core) of the generator and the servers over the same window, so a saturated
generator, or a machine shared with something else, shows up in the output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
import urllib.request
from typing import Any

import asyncpg
import msgspec

from bench.cpu import machine_seconds, pids_named
from bench.keepalive import Target
from bench.load import (
    ClosedSpec,
    FreshResult,
    FreshSpec,
    Generator,
    LoadResult,
    Workload,
)
from bench.stack import DATA, BenchDatabase, Services, drop_redis_keys, redis_url
from bench.worker import segment_conditions
from shared.settings import Settings

SEGMENT_KEY = "plan-pro"
MEMBER = b'{"member":true}'
#: generator CPU share above which its figures are suspect
GENERATOR_BUSY = 0.9
#: cores busy on the machine below which it counts as quiet (nothing but us running)
QUIET = 0.25


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.data_path", description=__doc__)
    p.add_argument("--seconds", type=float, default=6, help="length of each measurement")
    p.add_argument(
        "--batch-seconds",
        type=float,
        default=3,
        help="length of the batch measurement (the worker then drains all it accepted)",
    )
    p.add_argument("--warmup", type=float, default=1.5, help="unmeasured start of each")
    p.add_argument("--connections", type=int, default=32, help="closed-loop concurrency")
    p.add_argument("--batch-size", type=int, default=250, help="messages per /v1/batch")
    p.add_argument("--batch-connections", type=int, default=8)
    p.add_argument("--rate", type=float, default=1000, help="identifies/s of the freshness run")
    p.add_argument("--poll-ms", type=float, default=50, help="poll interval per pending user")
    p.add_argument("--sample-every", type=int, default=5, help="poll one user in this many")
    p.add_argument("--give-up", type=float, default=10, help="seconds before a user times out")
    p.add_argument("--drain-timeout", type=float, default=300)
    p.add_argument("--query-users", type=int, default=5000, help="distinct users queried")
    p.add_argument(
        "--extra-segments",
        type=int,
        default=0,
        help="more dynamic segments the worker evaluates for every identify (issue 4: 49)",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=30,
        help="seconds to wait for other work on the machine to stop before starting",
    )
    p.add_argument("--database", help="maintenance DSN (default: local PostgreSQL)")
    p.add_argument("--redis", help="Redis URL (default: local Redis)")
    p.add_argument("--json", help="also write the results to this file")
    return p.parse_args(argv)


# --- admin calls (a few, so plain urllib) ----------------------------------------------------


def _admin(port: int, secret: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else msgspec.json.encode(body)
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
        return msgspec.json.decode(resp.read())


def create_segment(port: int, secret: str, timeout: float = 30) -> float:
    """Create the dynamic segment "plan is pro" and wait until it is ready; returns seconds."""
    started = time.monotonic()
    _admin(
        port,
        secret,
        "POST",
        "/v1/segments",
        {
            "name": "Plan is pro",
            "key": SEGMENT_KEY,
            "kind": "dynamic",
            "conditions": {"attribute": "plan", "op": "is", "value": "pro"},
        },
    )
    while time.monotonic() - started < timeout:
        if _admin(port, secret, "GET", f"/v1/segments/{SEGMENT_KEY}")["status"] == "ready":
            return time.monotonic() - started
        time.sleep(0.1)
    raise RuntimeError(f"segment {SEGMENT_KEY} not ready after {timeout}s")


# --- the drain -------------------------------------------------------------------------------


class Drain(msgspec.Struct):
    backlog: int
    seconds_from_launch: float
    seconds_applying: float
    left: int
    dead_letters: int

    @property
    def rate(self) -> float:
        done = self.backlog - self.left
        return done / self.seconds_applying if self.seconds_applying > 0 else math.nan


async def measure_drain(services: Services, dsn: str, limit: float) -> Drain:
    """Start the worker and watch the inbox empty. The applying time runs from the last sample
    that still saw the whole backlog (so the worker's start-up is left out) to the first that
    saw the inbox empty: an over-estimate by at most one sampling interval."""
    conn = await asyncpg.connect(dsn)
    try:
        backlog: int = await conn.fetchval("SELECT count(*) FROM inbox")
        launched = time.monotonic()
        untouched = launched
        await services.start_async("worker")
        left = backlog
        while left and time.monotonic() - launched < limit:
            await asyncio.sleep(0.2)
            left = await conn.fetchval("SELECT count(*) FROM inbox")
            if left >= backlog:
                untouched = time.monotonic()
        finished = time.monotonic()
        dead: int = await conn.fetchval("SELECT count(*) FROM dead_letters")
    finally:
        await conn.close()
    return Drain(backlog, finished - launched, finished - untouched, left, dead)


# --- the run ---------------------------------------------------------------------------------


class Results(msgspec.Struct):
    ingest_hello: LoadResult
    ingest_identify: LoadResult
    ingest_batch: LoadResult
    drain: Drain
    fresh: FreshResult
    query_hello: LoadResult
    query_member: LoadResult
    segment_ready_seconds: float
    #: cores busy on the machine just before the run (other work disturbs every figure)
    machine_busy_before: float


def _watch(services: Services, *names: str) -> dict[str, list[int]]:
    groups = {name: [services.pid(name)] for name in names}
    groups["postgres"] = pids_named("postgres")
    groups["redis"] = pids_named("redis-server")
    return groups


async def machine_busy(seconds: float = 1.0) -> float:
    """Cores busy on the whole machine over the next ``seconds`` (NaN without /proc)."""
    before = machine_seconds()
    await asyncio.sleep(seconds)
    after = machine_seconds()
    return math.nan if before is None or after is None else (after - before) / seconds


async def run(args: argparse.Namespace) -> Results:
    busy_before = await machine_busy()
    waited = 0.0
    while busy_before > QUIET and waited < args.wait_quiet:
        if not waited:
            step(f"the machine is busy ({busy_before:.2f} cores); waiting for it to calm down")
        busy_before = await machine_busy()
        waited += 1
    url = redis_url(args.redis)
    prefix = f"segbench{os.getpid()}"
    generator = Generator()
    async with BenchDatabase(args.database) as db:
        keys = await db.environment("bench")
        services = Services(
            Settings(database_url=db.dsn, redis_url=url, redis_prefix=prefix, data_dir=str(DATA))
        )
        try:
            for name in ("ingest", "query", "admin", "worker"):
                await services.start_async(name)
            ready = await asyncio.to_thread(create_segment, services.port("admin"), keys.secretKey)
            for i in range(args.extra_segments):
                _admin(
                    services.port("admin"),
                    keys.secretKey,
                    "POST",
                    "/v1/segments",
                    {"name": f"extra {i}", "kind": "dynamic", "conditions": segment_conditions(i)},
                )
            await services.stop_async("worker")
            return await _measure(
                args, services, generator, db.dsn, keys.writeKey, ready, busy_before
            )
        finally:
            services.stop_all()
            generator.close()
            await drop_redis_keys(url, prefix)


async def _measure(
    args: argparse.Namespace,
    services: Services,
    generator: Generator,
    dsn: str,
    write_key: str,
    segment_ready: float,
    busy_before: float,
) -> Results:
    auth = f"Bearer {write_key}"
    ingest = Target("127.0.0.1", services.port("ingest"), auth)
    query = Target("127.0.0.1", services.port("query"), auth)

    async def closed(
        target: Target,
        workload: Workload,
        conns: int,
        watch: str,
        seconds: float | None = None,
        warmup: float | None = None,
    ) -> LoadResult:
        spec = ClosedSpec(
            target=target,
            workload=workload,
            connections=conns,
            seconds=seconds or args.seconds,
            warmup=args.warmup if warmup is None else warmup,
            watch=_watch(services, watch),
        )
        try:
            return await generator.closed(spec)
        finally:
            services.check_alive()  # a dead service explains a failed run better than ECONNREFUSED

    hello = Workload("paths", paths=["/hello"])
    step("1. ingest: GET /hello, then single identifies (worker stopped)")
    ingest_hello = await closed(ingest, hello, args.connections, "ingest")
    ingest_identify = await closed(
        ingest, Workload("identify", user_prefix="one-"), args.connections, "ingest"
    )
    step(f"2. ingest: /v1/batch of {args.batch_size} (worker stopped), then the worker's drain")
    ingest_batch = await closed(
        ingest,
        Workload("batch", user_prefix="many-", batch_size=args.batch_size),
        args.batch_connections,
        "ingest",
        args.batch_seconds,
        # what the warm-up accepts lengthens the drain; batches need little warming
        warmup=min(args.warmup, 0.5),
    )
    drain = await measure_drain(services, dsn, args.drain_timeout)
    step(f"3. freshness: {args.rate:.0f} identifies/s open-loop, polling the query service")
    fresh = await generator.fresh(
        FreshSpec(
            ingest=ingest,
            query=query,
            segment=SEGMENT_KEY,
            user_prefix="fresh-",
            rate=args.rate,
            seconds=args.seconds,
            warmup=args.warmup,
            poll_interval=args.poll_ms / 1000,
            sample_every=args.sample_every,
            give_up=args.give_up,
            ingest_connections=16,
            poll_connections=32,
            watch=_watch(services, "ingest", "worker", "query"),
        )
    )
    services.check_alive()
    step("4. query: GET /hello, then membership checks on known users")
    users = fresh.users[: args.query_users] or ["nobody"]
    member = Workload(
        "paths",
        paths=[f"/v1/users/{u}/segments/{SEGMENT_KEY}" for u in users],
        expect_body=MEMBER if fresh.users else None,
    )
    query_hello = await closed(query, hello, args.connections, "query")
    query_member = await closed(query, member, args.connections, "query")
    return Results(
        ingest_hello,
        ingest_identify,
        ingest_batch,
        drain,
        fresh,
        query_hello,
        query_member,
        segment_ready,
        busy_before,
    )


def step(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --- the report ------------------------------------------------------------------------------


def _n(value: float, unit: str = "") -> str:
    if value != value:  # NaN
        return "n/a"
    text = f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"
    return text + unit


def _ratio(value: float, floor: float) -> str:
    return f"{value / floor:.0%}" if floor and floor == floor and value == value else "-"


def _cpu(result: LoadResult | FreshResult) -> str:
    return " ".join(f"{k} {v:.2f}" for k, v in result.cpu.items())


def table(r: Results, args: argparse.Namespace) -> list[str]:
    ih, ii, ib, qh, qm, f, d = (
        r.ingest_hello,
        r.ingest_identify,
        r.ingest_batch,
        r.query_hello,
        r.query_member,
        r.fresh,
        r.drain,
    )
    rows: list[tuple[str, str, str, str, str]] = [
        ("figure", "value", "floor (/hello)", "ratio", "aim"),
        ("1 ingest identify, req/s", _n(ii.rate), _n(ih.rate), _ratio(ii.rate, ih.rate), "-"),
        ("1 ingest identify p99", _n(ii.p99_ms, " ms"), _n(ih.p99_ms, " ms"), "-", "-"),
        ("2 ingest batch, msgs/s", _n(ib.message_rate), "-", "-", ">= 20,000"),
        ("2 ingest batch p99/request", _n(ib.p99_ms, " ms"), "-", "-", "-"),
        ("2 worker drain, msgs/s", _n(d.rate), "-", "-", "-"),
        ("3 identify -> member p50", _n(f.visible_p50_ms, " ms"), "-", "-", "-"),
        ("3 identify -> member p99", _n(f.visible_p99_ms, " ms"), "-", "-", "<= 1,000 ms"),
        ("3 identify ack p99 (open loop)", _n(f.ack_p99_ms, " ms"), "-", "-", "-"),
        ("4 query membership, req/s", _n(qm.rate), _n(qh.rate), _ratio(qm.rate, qh.rate), ">= 70%"),
        ("4 query membership p99", _n(qm.p99_ms, " ms"), _n(qh.p99_ms, " ms"), "-", "-"),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    notes = [
        "",
        f"closed loop: {args.connections} keep-alive connections, {args.seconds:g} s measured "
        f"after {args.warmup:g} s warm-up; batches: {args.batch_connections} connections x "
        f"{args.batch_size} messages for {args.batch_seconds:g} s "
        f"after {min(args.warmup, 0.5):g} s.",
        "The worker was STOPPED during 1 and 2, so that ingest had the cores to itself.",
        f"drain: {d.backlog:,} inbox rows (from 1 and 2), empty {d.seconds_from_launch:.1f} s "
        f"after launching the worker, {d.seconds_applying:.1f} s applying; left {d.left:,}, "
        f"dead letters {d.dead_letters:,}",
        f"freshness: {f.sent:,} identifies in {f.seconds:g} s ({f.achieved_rate:,.0f}/s sent, "
        f"{f.ack_errors:,} errors, ack p50 {_n(f.ack_p50_ms, ' ms')} from the scheduled send); "
        f"1 user in {args.sample_every} polled: {f.visible:,} of {f.sampled:,} seen as members "
        f"(max {_n(f.visible_max_ms, ' ms')}), {f.timed_out:,} timed out (> {args.give_up:g} s)",
        f"  polled every {args.poll_ms:g} ms (x4 after 1 s), {f.poll_requests:,} polls, round "
        f"trip p50 {_n(f.poll_p50_ms, ' ms')} p99 {_n(f.poll_p99_ms, ' ms')}: a latency is the "
        "answer of the first true poll, late by up to one interval",
        f"query: {len(r.fresh.users[: args.query_users]):,} distinct known users; "
        f"{qm.unexpected:,} answers were not member=true",
        "",
        f"machine busy before the run: {r.machine_busy_before:.2f} cores"
        + (
            "  <- other work is running: figures are disturbed"
            if r.machine_busy_before > QUIET
            else ""
        ),
        "CPU during each measurement (1.00 = one core busy; 'machine' = all processes):",
    ]
    for label, result in (
        ("1 ingest /hello", ih),
        ("1 ingest identify", ii),
        ("2 ingest batch", ib),
        ("3 freshness", f),
        ("4 query /hello", qh),
        ("4 query membership", qm),
    ):
        notes.append(f"  {label:<20} {_cpu(result)}")
        if result.cpu.get("generator", 0) >= GENERATOR_BUSY:
            notes.append("  ^ the load generator was saturated: this figure is a lower bound")
    errors = [
        (label, res)
        for label, res in (
            ("ingest hello", ih),
            ("identify", ii),
            ("batch", ib),
            ("query hello", qh),
            ("membership", qm),
        )
        if res.errors
    ]
    for label, res in errors:
        notes.append(f"! {label}: {res.errors:,} errors, first: {res.first_error}")
    if f.first_error:
        notes.append(f"! freshness: first error: {f.first_error}")
    return lines + notes


def as_json(r: Results, args: argparse.Namespace) -> dict[str, Any]:
    def clean(value: Any) -> Any:
        if isinstance(value, float):
            return None if value != value else round(value, 2)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    figures = msgspec.to_builtins(r)
    figures["fresh"].pop("users", None)
    for name in ("ingest_hello", "ingest_identify", "ingest_batch", "query_hello", "query_member"):
        result: LoadResult = getattr(r, name)
        figures[name]["rate"] = result.rate
        figures[name]["message_rate"] = result.message_rate
    figures["drain"]["rate"] = r.drain.rate
    figures["ratios"] = {
        "identify_vs_hello": r.ingest_identify.rate / r.ingest_hello.rate,
        "membership_vs_hello": r.query_member.rate / r.query_hello.rate,
    }
    out: dict[str, Any] = clean(
        {
            "bench": "data_path",
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "cpus": os.cpu_count(),
            "args": vars(args),
            "figures": figures,
        }
    )
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    results = asyncio.run(run(args))
    print("\n".join(table(results, args)))
    data = as_json(results, args)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(data, out, indent=2)
    print(json.dumps(data, separators=(",", ":")))


if __name__ == "__main__":
    main()
