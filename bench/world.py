"""The worker's sustained apply rate in a realistic world (issue 14), beside a raw COPY floor.

    python -m bench.world [--users 100000] [--segments 60] [--statements] [--py-spy FILE]

The world: an environment with 60 random dynamic segments (nested all / any / none trees over
strings, numbers, booleans, dates, lists and regexes), chosen so that a new user enters about
24 of them on average. N new users (identify messages with a dozen attributes each) are sent
through ``/v1/batch`` on the real stack (ingest, query, worker; :mod:`bench.stack`) while the
worker runs; the clock stops when the inbox is empty and the query service answers the last
users' memberships exactly as the Python engine computes them here.

Printed beside it: the floor, a raw ``COPY`` of the very rows the run wrote (users,
memberships, membership_changes) into the same tables under a second environment; the CPU
shares of the worker, PostgreSQL, ingest, query and Redis over the apply; with
``--statements`` the heaviest statements of ``pg_stat_statements`` (the extension is
preloaded on the local PostgreSQL); with ``--py-spy FILE`` a py-spy profile of the worker over
the run (raw collapsed stacks in FILE, the top frames printed). The machine may be shared:
compare a figure only with the floor printed beside it in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec

from bench.cpu import CpuWindow, pids_named
from bench.imports import BackendCpu
from bench.keepalive import Pool, Target, post_request
from bench.stack import BenchDatabase, Services, drop_redis_keys, redis_url
from shared.conditions import Subject, compile_python, parse_condition
from shared.environments import ensure_environment
from shared.settings import Settings

PLANS = ("free", "starter", "pro", "business", "enterprise")
COUNTRIES = ("US", "GB", "FR", "DE", "ES", "IT", "NL", "SE", "BR", "IN", "JP", "CA")
DOMAINS = ("gmail.com", "example.com", "acme.io", "corp.example", "mail.fr", "uni.edu")
ROLES = ("admin", "editor", "viewer", "billing", "support", "owner")
INTERESTS = ("sports", "music", "travel", "tech", "food", "art", "finance", "games")
WORDS = ("alpha", "bravo", "delta", "echo", "kilo", "lima", "nova", "omega", "sierra", "tango")
NOW = datetime.now(UTC).replace(microsecond=0)
_json = msgspec.json.Encoder()


def _date(rng: random.Random, days: int) -> str:
    moment = NOW - timedelta(days=rng.uniform(0, days))
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def user_traits(n: int, seed: int = 0) -> dict[str, Any]:
    """The attributes of new user ``n`` (deterministic)."""
    rng = random.Random(seed * 1_000_003 + n)
    return {
        "plan": rng.choice(PLANS),
        "country": rng.choice(COUNTRIES),
        "email": f"{rng.choice(WORDS)}.{n}@{rng.choice(DOMAINS)}",
        "name": f"{rng.choice(WORDS).title()} {rng.choice(WORDS).title()}",
        "seats": rng.randint(1, 500),
        "score": round(rng.uniform(0, 100), 2),
        "age": rng.randint(18, 80),
        "active": rng.random() < 0.7,
        "verified": rng.random() < 0.5,
        "signed_up_at": _date(rng, 730),
        "last_order_at": _date(rng, 120),
        "roles": rng.sample(ROLES, rng.randint(0, 3)),
        "interests": rng.sample(INTERESTS, rng.randint(0, 4)),
    }


def _leaf(rng: random.Random) -> dict[str, Any]:
    values: tuple[str, ...]
    kind = rng.choice(("string", "string", "number", "number", "boolean", "date", "list", "regex"))
    if kind == "string":
        name, values = rng.choice((("plan", PLANS), ("country", COUNTRIES)))
        op = rng.choice(("is", "not", "in", "not_in"))
        if op in ("in", "not_in"):
            return {"attribute": name, "op": op, "value": rng.sample(values, rng.randint(1, 4))}
        value = rng.choice(values)
        if rng.random() < 0.3:
            return {"attribute": name, "op": op, "value": value.upper(), "ci": True}
        return {"attribute": name, "op": op, "value": value}
    if kind == "number":
        name, lo, hi = rng.choice((("seats", 1, 500), ("score", 0, 100), ("age", 18, 80)))
        op = rng.choice(("gt", "gte", "lt", "lte", "between"))
        if op == "between":
            a = rng.randint(lo, hi)
            return {"attribute": name, "op": op, "value": [a, min(hi, a + rng.randint(5, hi - lo))]}
        return {"attribute": name, "op": op, "value": rng.randint(lo, hi)}
    if kind == "boolean":
        return {"attribute": rng.choice(("active", "verified")), "op": "is", "value": True}
    if kind == "date":
        name, span = rng.choice((("signed_up_at", 730), ("last_order_at", 120)))
        op = rng.choice(("before", "after", "within_last_days", "more_than_days_ago"))
        if op in ("within_last_days", "more_than_days_ago"):
            return {"attribute": name, "op": op, "value": rng.randint(1, span)}
        return {"attribute": name, "op": op, "value": _date(rng, span)[:10]}
    if kind == "list":
        name, values = rng.choice((("roles", ROLES), ("interests", INTERESTS)))
        op = rng.choice(("includes_any", "includes_all", "not_includes_any"))
        return {"attribute": name, "op": op, "value": rng.sample(values, rng.randint(1, 2))}
    pattern = rng.choice(
        (
            r"@(gmail|acme)\.",
            r"\.(edu|fr)$",
            r"^(alpha|nova|echo)\.",
            r"[0-9]{4}@",
            r"^[a-k]",
            r"\.1[0-9]*@",
        )
    )
    return {"attribute": "email", "op": "regex", "value": pattern}


def _tree(rng: random.Random, depth: int, root: bool = False) -> dict[str, Any]:
    if depth == 0 or (not root and rng.random() < 0.3):
        return _leaf(rng)
    group = rng.choice(("all", "all", "any", "any", "none"))
    return {group: [_tree(rng, depth - 1) for _ in range(rng.randint(2, 4))]}


def world_segments(count: int, target: float, seed: int = 14) -> list[dict[str, Any]]:
    """``count`` random condition trees whose mean match rate over sample users is close to
    ``target`` (each between 5 % and 95 %, so every segment both admits and refuses)."""
    rng = random.Random(seed)
    sample = [user_traits(n, seed=99) for n in range(1500)]
    chosen: list[dict[str, Any]] = []
    rates: list[float] = []
    while len(chosen) < count:
        tree = _tree(rng, 3, root=True)
        test = compile_python(parse_condition(tree))
        rate = sum(test(_subject(a), NOW) for a in sample) / len(sample)
        if not 0.05 <= rate <= 0.95:
            continue
        mean = (sum(rates) + rate) / (len(rates) + 1)
        if (
            rates
            and abs(mean - target) > 0.01
            and abs(mean - target) > abs(sum(rates) / len(rates) - target)
        ):
            continue  # keeps the mean near the target, moving towards it when it is not
        chosen.append(tree)
        rates.append(rate)
    return chosen


def _subject(attributes: dict[str, Any]) -> Subject:
    return Subject(
        user_pk=1, user_id="x", attributes=attributes, first_seen_at=NOW, last_seen_at=NOW
    )


def batches(users: int, size: int, seed: int) -> list[bytes]:
    """/v1/batch bodies of ``size`` identify messages of new users w-0 ... w-(users-1)."""
    out = []
    for start in range(0, users, size):
        out.append(
            _json.encode(
                {
                    "batch": [
                        {
                            "type": "identify",
                            "userId": f"w-{n}",
                            "messageId": f"wm-{seed}-{n}",
                            "traits": user_traits(n, seed),
                        }
                        for n in range(start, min(users, start + size))
                    ]
                }
            )
        )
    return out


async def post_all(target: Target, bodies: list[bytes], connections: int) -> None:
    pool = Pool(target.host, target.port, connections)
    queue = list(reversed(bodies))

    async def sender() -> None:
        while queue:
            body = queue.pop()
            status, answer = await pool.request(post_request(target, "/v1/batch", body))
            if status != 200:
                raise RuntimeError(f"/v1/batch answered {status}: {answer[:300]!r}")

    try:
        await asyncio.gather(*(sender() for _ in range(connections)))
    finally:
        pool.close()


async def copy_floor(dsn: str, env_id: int) -> tuple[float, dict[str, int]]:
    """Seconds a raw COPY of the rows ``env_id`` holds in users, memberships and
    membership_changes takes into the same tables (under a new environment), and the counts."""
    conn = await asyncpg.connect(dsn)
    try:
        floor_env = (await ensure_environment(conn, "floor")).id
        users = await conn.fetch(
            """SELECT $2::bigint, id, user_id, attributes::text, attr_ts::text, first_seen_at,
                      last_seen_at, membership_version FROM users WHERE env_id = $1""",
            env_id,
            floor_env,
        )
        members = await conn.fetch(
            "SELECT $2::bigint, segment_id, user_pk, since FROM memberships WHERE env_id = $1",
            env_id,
            floor_env,
        )
        changes = await conn.fetch(
            """SELECT $2::bigint, segment_id, user_pk, entered, cause, at
               FROM membership_changes WHERE env_id = $1""",
            env_id,
            floor_env,
        )
        # the floor's users get ids of their own: the same pks would collide with the run's
        base = await conn.fetchval("SELECT coalesce(max(id), 0) + 1 FROM users")
        users_rows = [(r[0], r[1] + base, *tuple(r)[2:]) for r in users]
        members_rows = [(r[0], r[1], r[2] + base, r[3]) for r in members]
        changes_rows = [(r[0], r[1], r[2] + base, *tuple(r)[3:]) for r in changes]
        start = time.perf_counter()
        async with conn.transaction():
            await conn.copy_records_to_table(
                "users",
                records=users_rows,
                columns=[
                    "env_id",
                    "id",
                    "user_id",
                    "attributes",
                    "attr_ts",
                    "first_seen_at",
                    "last_seen_at",
                    "membership_version",
                ],
            )
            await conn.copy_records_to_table(
                "memberships",
                records=members_rows,
                columns=["env_id", "segment_id", "user_pk", "since"],
            )
            await conn.copy_records_to_table(
                "membership_changes",
                records=changes_rows,
                columns=["env_id", "segment_id", "user_pk", "entered", "cause", "at"],
            )
        seconds = time.perf_counter() - start
        counts = {"users": len(users), "memberships": len(members), "changes": len(changes)}
        return seconds, counts
    finally:
        await conn.close()


async def top_statements(conn: asyncpg.Connection, limit: int = 14) -> None:
    rows = await conn.fetch(
        """SELECT calls, total_exec_time, rows, query FROM pg_stat_statements
           WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
           ORDER BY total_exec_time DESC LIMIT $1""",
        limit,
    )
    total = await conn.fetchval(
        """SELECT sum(total_exec_time) FROM pg_stat_statements
           WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"""
    )
    print(f"pg_stat_statements: {total / 1000:.1f} s of statement time in this database")
    print(f"{'ms':>9} {'share':>6} {'calls':>7} {'rows':>9}  statement")
    for r in rows:
        text = " ".join(r["query"].split())[:110]
        print(
            f"{r['total_exec_time']:9,.0f} {r['total_exec_time'] / total:6.1%} {r['calls']:7,}"
            f" {r['rows']:9,}  {text}"
        )


def summarize_py_spy(path: Path, limit: int = 18) -> None:
    """Top frames of a py-spy raw profile: by own samples, and by samples under our code."""
    own: Counter[str] = Counter()
    inside: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        seen = set()
        for frame in frames:
            if ("services/" in frame or "shared/" in frame) and frame not in seen:
                seen.add(frame)
                inside[frame] += count
    if not total:
        print("py-spy: no samples")
        return
    print(f"py-spy: {total:,} samples of the worker (busy only); own time:")
    for frame, count in own.most_common(limit):
        print(f"  {count / total:6.1%}  {frame[:120]}")
    print("py-spy: inclusive time of our functions:")
    for frame, count in inside.most_common(limit):
        print(f"  {count / total:6.1%}  {frame[:120]}")


async def run(args: argparse.Namespace) -> None:
    url = redis_url(None)
    prefix = f"benchworld{os.getpid()}"
    trees = world_segments(args.segments, args.target)
    sample = [user_traits(n, args.seed) for n in range(min(args.users, 2000))]
    tests = [compile_python(parse_condition(t)) for t in trees]
    per_user = sum(sum(t(_subject(a), NOW) for t in tests) for a in sample) / len(sample)
    bodies = batches(args.users, args.batch, args.seed)
    load = os.getloadavg()[0]
    print(
        f"world: {args.segments} dynamic segments; a new user enters {per_user:.1f} of them on "
        f"average (+ All users); {args.users:,} new users in {len(bodies)} /v1/batch requests "
        f"of {args.batch}; worker batch {args.worker_batch}, {args.workers} worker process(es) "
        f"of {args.lanes or 'the default'} drain lane(s); "
        f"load average {load:.1f} on {os.cpu_count()} cores"
    )
    async with BenchDatabase(None) as db:
        env = await db.environment("world")
        services = Services(
            Settings(
                database_url=db.dsn,
                redis_url=url,
                redis_prefix=prefix,
                worker_batch=args.worker_batch,
                # (passed only when given: bench.compare runs this file on older code too)
                **({} if args.lanes is None else {"drain_lanes": args.lanes}),
            )
        )
        conn = await asyncpg.connect(db.dsn)
        spy: asyncio.subprocess.Process | None = None
        try:
            for i, tree in enumerate(trees):
                await conn.execute(
                    """INSERT INTO segments (env_id, key, name, kind, conditions)
                       VALUES ($1, $2, $2, 'dynamic', $3::jsonb)""",
                    env.id,
                    f"w{i}",
                    _json.encode(tree).decode(),
                )
            keys = {
                r["id"]: r["key"]
                for r in await conn.fetch("SELECT id, key FROM segments WHERE env_id = $1", env.id)
            }
            for name in ("ingest", "query"):
                await services.start_async(name)
            workers = ["worker"] + [f"worker{i}" for i in range(2, args.workers + 1)]
            for name in workers:
                await services.start_async(name)
            if args.statements:
                await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                await conn.execute(
                    """SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database
                       WHERE datname = current_database()), 0)"""
                )
            if args.py_spy:
                spy = await asyncio.create_subprocess_exec(
                    shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(services.pid("worker")),
                    "--format",
                    "raw",
                    "--rate",
                    "50",
                    "--nonblocking",
                    "-o",
                    args.py_spy,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            target = Target("127.0.0.1", services.port("ingest"), f"Bearer {env.writeKey}")
            backends = BackendCpu(conn, db.name)
            window = CpuWindow(
                {
                    "worker": [services.pid(w) for w in workers],
                    "ingest": [services.pid("ingest")],
                    "query": [services.pid("query")],
                    "redis": pids_named("redis-server"),
                }
            )
            await backends.sample()
            window.start()
            start = time.perf_counter()
            await post_all(target, bodies, args.connections)
            accepted = time.perf_counter()
            while await conn.fetchval("SELECT EXISTS (SELECT 1 FROM inbox)"):
                services.check_alive()
                await backends.sample()
                await asyncio.sleep(0.1)
            applied = time.perf_counter()
            await backends.sample()
            shares = window.stop(applied - start)
            # the last users, answered by the query service as the Python engine says
            query = httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{services.port('query')}",
                headers={"Authorization": f"Bearer {env.writeKey}"},
                timeout=30,
            )
            try:
                for n in range(max(0, args.users - 20), args.users):
                    traits = user_traits(n, args.seed)
                    want = {f"w{i}" for i, t in enumerate(tests) if t(_subject(traits), NOW)}
                    while True:
                        got = await query.get(f"/v1/users/w-{n}/segments")
                        have = {s["key"] for s in got.json()["segments"]} - {"all-users"}
                        if have == want:
                            break
                        if time.perf_counter() - applied > 30:
                            raise RuntimeError(f"w-{n}: query says {have}, expected {want}")
                        await asyncio.sleep(0.02)
            finally:
                await query.aclose()
            visible = time.perf_counter()
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its file on an interrupt
                await spy.wait()
            changes = await conn.fetchval(
                "SELECT count(*) FROM membership_changes WHERE env_id = $1", env.id
            )
            counted = await conn.fetch(
                """SELECT segment_id, count(*) AS n FROM memberships WHERE env_id = $1
                   GROUP BY 1""",
                env.id,
            )
            if args.statements:
                await top_statements(conn)
            services.stop_all()
            floor, rows = await copy_floor(db.dsn, env.id)
        finally:
            if spy is not None and spy.returncode is None:
                spy.kill()
            services.stop_all()
            await conn.close()
            await drop_redis_keys(url, prefix)
    total = visible - start
    entries = sum(r["n"] for r in counted if keys[r["segment_id"]] != "all-users")
    users_rate = args.users / total
    print(
        f"applied: {users_rate:10,.0f} users/s end to end ({total:.1f} s: accepted in "
        f"{accepted - start:.1f} s, inbox empty at {applied - start:.1f} s, the last users "
        f"answered at +{visible - applied:.2f} s)"
    )
    print(
        f"         {changes / total:10,.0f} membership changes/s ({changes:,} changes; "
        f"{entries / args.users:.1f} dynamic segments entered per user)"
    )
    print(
        f"floor:   {args.users / floor:10,.0f} users/s, {changes / floor:,.0f} changes/s: raw COPY "
        f"of the same {rows['users']:,} users, {rows['memberships']:,} memberships and "
        f"{rows['changes']:,} changes into the same tables ({floor:.1f} s); run / floor "
        f"{floor / total:.2f}"
    )
    pg = backends.seconds()
    print(
        "cpu over the run (cores): "
        + ", ".join(f"{k} {v:.2f}" for k, v in shares.items())
        + f", PostgreSQL backends of this database {pg / (applied - start):.2f}"
        + f"; load average now {os.getloadavg()[0]:.1f}"
    )
    if args.py_spy:
        summarize_py_spy(Path(args.py_spy))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.world", description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--segments", type=int, default=60)
    parser.add_argument(
        "--target", type=float, default=0.393, help="mean share of segments a user enters"
    )
    parser.add_argument("--batch", type=int, default=500, help="messages per /v1/batch request")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--worker-batch", type=int, default=Settings().worker_batch)
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--lanes", type=int, help="drain lanes per worker (default: its own)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--statements", action="store_true", help="top pg_stat_statements")
    parser.add_argument("--py-spy", metavar="FILE", help="profile the worker into FILE (raw)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
