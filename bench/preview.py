"""Preview count latency over 100,000 users: random 10-leaf condition trees compiled by the SQL
engine, beside the floor of a plain ``SELECT count(*) FROM users WHERE env_id = $1``.

Run: ``.venv/bin/python -m bench.preview [--users 100000] [--trees 50]``. It creates (and
drops) its own database, COPYs users with varied attributes (strings, numbers, numeric strings,
ISO and epoch dates, lists, booleans, missing values), tags, companies, manual memberships and
event counts, records the attribute types, then times the preview service's count query and
the whole preview (count and 20-user sample, one snapshot).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from bench.stack import BenchDatabase
from services.admin.queries.service import preview
from shared.attribute_types import load_types, record_inferred
from shared.conditions import compile_sql, parse_condition
from shared.db import Conn, create_pool
from shared.membership.graph import segment_names

PLANS = ["free", "starter", "pro", "enterprise", "Pro"]
COUNTRIES = ["FR", "US", "DE", "JP", "BR", "IN", "GB"]
ROLES = ["admin", "editor", "viewer", "billing", "owner"]
TAGS = [("Department", d) for d in ("Sales", "Eng", "Ops", "HR")] + [
    ("Location", c) for c in ("Dallas", "Paris", "Berlin", "Tokyo")
]
EVENTS = ["Clicked Upgrade", "Viewed Page", "Invited"]
SEGMENTS = ["beta", "vip", "churn-risk"]
NOW = datetime.now(UTC)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.preview", description=__doc__)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--trees", type=int, default=50, help="random 10-leaf trees to time")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--database", help="maintenance DSN (default: local PostgreSQL)")
    p.add_argument("--per-leaf", action="store_true", help="also time each kind of leaf alone")
    p.add_argument(
        "--write-cost",
        action="store_true",
        help="also time writing the users with and without the trigger that fills epochs",
    )
    return p.parse_args(argv)


def attributes(rng: random.Random, i: int) -> dict[str, Any]:
    a: dict[str, Any] = {"email": f"user{i}@example{rng.randrange(50)}.com"}
    if rng.random() < 0.9:
        a["plan"] = rng.choice(PLANS)
    if rng.random() < 0.8:
        seats: Any = rng.randrange(1, 500)
        a["seats"] = str(seats) if rng.random() < 0.1 else seats
    a["score"] = round(rng.uniform(0, 100), 2)
    signed = NOW - timedelta(days=rng.uniform(0, 730))
    a["signed_up_at"] = signed.isoformat() if rng.random() < 0.7 else int(signed.timestamp())
    if rng.random() < 0.6:
        a["last_login"] = (NOW - timedelta(hours=rng.uniform(0, 24 * 120))).isoformat()
    a["roles"] = rng.sample(ROLES, rng.randrange(0, 3))
    a["beta"] = rng.random() < 0.2
    a["country"] = rng.choice(COUNTRIES)
    a["name"] = rng.choice(["Ada", "Grace", "Linus", "Ünal", "Zoë"]) + f" {i}"
    return a


async def copy_with_jsonb(
    conn: Conn,
    table: str,
    columns: list[str],
    types: list[str],
    records: list[tuple[Any, ...]],
) -> None:
    """COPY through a text staging table (asyncpg's COPY has no binary jsonb encoder)."""
    staged = [
        tuple(json.dumps(v) if t == "jsonb" else v for v, t in zip(r, types, strict=True))
        for r in records
    ]
    stage_types = ["text" if t == "jsonb" else t for t in types]
    cols = ", ".join(f"{c} {t}" for c, t in zip(columns, stage_types, strict=True))
    await conn.execute(f"CREATE TEMP TABLE stage ({cols})")
    await conn.copy_records_to_table("stage", records=staged, columns=columns)
    select = ", ".join(f"{c}::{t}" for c, t in zip(columns, types, strict=True))
    await conn.execute(f"INSERT INTO {table} ({', '.join(columns)}) SELECT {select} FROM stage")
    await conn.execute("DROP TABLE stage")


async def load(conn: Conn, env_id: int, n: int, rng: random.Random) -> None:
    users = [
        (env_id, f"u{i}", attributes(rng, i), NOW - timedelta(days=rng.uniform(0, 800)), NOW)
        for i in range(n)
    ]
    await copy_with_jsonb(
        conn,
        "users",
        ["env_id", "user_id", "attributes", "first_seen_at", "last_seen_at"],
        ["bigint", "text", "jsonb", "timestamptz", "timestamptz"],
        users,
    )
    # the types the trees are written for, whatever the first user happens to hold (an epoch
    # number first would make signed_up_at a number, and its date leaves invalid)
    sample = {
        "plan": "x",
        "seats": 1,
        "signed_up_at": NOW.isoformat(),
        "last_login": NOW.isoformat(),
    }
    await record_inferred(conn, env_id, "user", users[0][2] | sample)
    await record_inferred(conn, env_id, "company", {"seats": 1, "plan": "x"})
    pks = [r["id"] for r in await conn.fetch("SELECT id FROM users WHERE env_id = $1", env_id)]
    tag_ids = [
        await conn.fetchval(
            "INSERT INTO tags (env_id, key, value) VALUES ($1, $2, $3) RETURNING id", env_id, k, v
        )
        for k, v in TAGS
    ]
    await conn.copy_records_to_table(
        "user_tags",
        records=[
            (env_id, pk, t) for pk in pks for t in rng.sample(tag_ids, rng.choice([0, 1, 1, 2, 3]))
        ],
        columns=["env_id", "user_pk", "tag_id"],
    )
    companies = [
        (env_id, f"c{i}", {"seats": rng.randrange(1, 1000), "plan": rng.choice(PLANS)})
        for i in range(n // 20)
    ]
    await copy_with_jsonb(
        conn,
        "companies",
        ["env_id", "company_id", "attributes"],
        ["bigint", "text", "jsonb"],
        companies,
    )
    company_pks = [
        r["id"] for r in await conn.fetch("SELECT id FROM companies WHERE env_id = $1", env_id)
    ]
    await conn.copy_records_to_table(
        "company_members",
        records=[(env_id, pk, rng.choice(company_pks)) for pk in pks if rng.random() < 0.7],
        columns=["env_id", "user_pk", "company_pk"],
    )
    for key in SEGMENTS:
        seg_id = await conn.fetchval(
            """INSERT INTO segments (env_id, key, name, kind) VALUES ($1, $2, $2, 'manual')
               RETURNING id""",
            env_id,
            key,
        )
        await conn.copy_records_to_table(
            "memberships",
            records=[(env_id, seg_id, pk) for pk in pks if rng.random() < 0.3],
            columns=["env_id", "segment_id", "user_pk"],
        )
    today = NOW.date()
    counts: dict[tuple[int, str, date], int] = {}
    for pk in pks:
        if rng.random() < 0.5:
            for _ in range(rng.randrange(1, 8)):
                day = today - timedelta(days=rng.randrange(0, 90))
                at = (pk, rng.choice(EVENTS), day)
                counts[at] = counts.get(at, 0) + rng.randrange(1, 4)
    await conn.copy_records_to_table(
        "event_counts",
        records=[(env_id, pk, name, day, c) for (pk, name, day), c in counts.items()],
        columns=["env_id", "user_pk", "name", "day", "count"],
    )
    await conn.execute("VACUUM ANALYZE")


def leaf(rng: random.Random) -> dict[str, Any]:
    kind = rng.choices(
        ["attribute", "tag", "segment", "event", "company"], weights=[12, 2, 1, 2, 1]
    )[0]
    if kind == "tag":
        k, v = rng.choice(TAGS)
        return {"tag": {"key": k, "value": v} if rng.random() < 0.7 else {"key": k}}
    if kind == "segment":
        return {"segment": rng.choice(SEGMENTS)}
    if kind == "event":
        op = rng.choice(["gte", "is", "lt"])
        out: dict[str, Any] = {"event": rng.choice(EVENTS), "op": op, "value": rng.randrange(4)}
        if rng.random() < 0.7:
            out["withinDays"] = rng.choice([7, 30, 60])
        return out
    if kind == "company":
        return {"attribute": "seats", "scope": "company", "op": "gte", "value": rng.randrange(800)}
    return rng.choice(
        [
            {"attribute": "plan", "op": "is", "value": rng.choice(PLANS)},
            {"attribute": "plan", "op": "in", "value": rng.sample(PLANS, 2), "ci": True},
            {"attribute": "seats", "op": "gte", "value": rng.randrange(500)},
            {"attribute": "seats", "op": "between", "value": [10, rng.randrange(10, 500)]},
            {"attribute": "score", "op": "lt", "value": rng.uniform(0, 100)},
            {"attribute": "signed_up_at", "op": "within_last_days", "value": rng.randrange(400)},
            {"attribute": "last_login", "op": "more_than_days_ago", "value": rng.randrange(60)},
            {"attribute": "roles", "op": "includes_any", "value": rng.sample(ROLES, 2)},
            {"attribute": "beta", "op": "is", "value": True},
            {"attribute": "country", "op": "not_in", "value": rng.sample(COUNTRIES, 3)},
            {"attribute": "email", "op": "ends_with", "value": f"example{rng.randrange(50)}.com"},
            {"attribute": "name", "op": "contains", "value": "ad", "ci": True},
            {"attribute": "name", "op": "regex", "value": "^[AG]\\w+ 1"},
            {"attribute": "last_login", "op": "is_set"},
        ]
    )


def tree(rng: random.Random, leaves: int = 10) -> dict[str, Any]:
    """10 leaves under a root group, some in a nested group."""
    items: list[Any] = [leaf(rng) for _ in range(leaves)]
    split = rng.randrange(2, 6)
    nested = {rng.choice(["any", "none"]): items[:split]}
    return {rng.choice(["all", "any"]): [nested, *items[split:]]}


async def time_leaves(
    conn: Conn, env_id: int, types: dict[str, str], segments: dict[str, int], rng: random.Random
) -> None:
    """Each kind of leaf alone (median of 5), to see which one a slow tree pays for."""
    seen: dict[str, float] = {}
    for _ in range(400):
        one = leaf(rng)
        label = json.dumps({k: v for k, v in one.items() if k != "value"}, ensure_ascii=False)
        if label in seen:
            continue
        where, params = compile_sql(
            parse_condition(one, types), first_param=2, segments=segments, env_param=1
        )
        times = []
        for _ in range(5):
            t = time.perf_counter()
            await conn.fetchval(
                f"SELECT count(*) FROM users u WHERE u.env_id = $1 AND {where}", env_id, *params
            )
            times.append(time.perf_counter() - t)
        seen[label] = statistics.median(times)
    for label, took in sorted(seen.items(), key=lambda kv: -kv[1]):
        print(f"  {took * 1000:7.1f} ms  {label}")


# The triggers that parse ISO strings into ``epochs`` on INSERT and UPDATE (migration 004;
# since 046 they fill ``email_lower`` as well).
EPOCHS_TRIGGERS = {
    "INSERT": "users_derived_insert",
    "UPDATE": "users_derived_update",
    "UPDATE membership_version": "users_derived_update",
}


async def time_writes(conn: Conn, env_id: int, n: int, rng: random.Random) -> None:
    """What the ``epochs`` triggers cost the worker: INSERT of ``n`` new users (from a staged
    table, as the load does) and UPDATE of every one's attributes, with the triggers and with
    them disabled; each run rolled back, median of 3."""
    users = [(f"w{i}", json.dumps(attributes(rng, i))) for i in range(n)]
    await conn.execute("CREATE TEMP TABLE stage_w (user_id text, attributes text)")
    await conn.copy_records_to_table("stage_w", records=users, columns=["user_id", "attributes"])
    statements = {
        "INSERT": f"""INSERT INTO users (env_id, user_id, attributes, first_seen_at, last_seen_at)
                      SELECT {env_id}, user_id, attributes::jsonb, now(), now() FROM stage_w""",
        # every attribute changes (a new email); the trigger re-parses the whole object
        "UPDATE": f"""UPDATE users SET attributes = attributes || jsonb_build_object(
                          'email', 'w' || id || '@example.com')
                      WHERE env_id = {env_id}""",
        # what bulk recompute does: attributes untouched, so the trigger does not fire
        "UPDATE membership_version": f"""UPDATE users
                      SET membership_version = membership_version + 1 WHERE env_id = {env_id}""",
    }
    for kind, statement in statements.items():
        took: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(3):
            for enabled in (True, False):
                transaction = conn.transaction()
                await transaction.start()
                try:
                    if not enabled:
                        await conn.execute(
                            f"ALTER TABLE users DISABLE TRIGGER {EPOCHS_TRIGGERS[kind]}"
                        )
                    t = time.perf_counter()
                    await conn.execute(statement)
                    took[enabled].append(time.perf_counter() - t)
                finally:
                    await transaction.rollback()
        on, off = statistics.median(took[True]), statistics.median(took[False])
        rows = (
            n
            if kind == "INSERT"
            else await conn.fetchval("SELECT count(*) FROM users WHERE env_id = $1", env_id)
        )
        print(
            f"  {kind} {rows:,} users: {on * 1000:6.0f} ms with the epochs trigger, "
            f"{off * 1000:6.0f} ms without ({(on - off) / rows * 1e6:.1f} µs a row)"
        )
    await conn.execute("DROP TABLE stage_w")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def run(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    async with BenchDatabase(args.database) as database:
        env = await database.environment("bench-preview")
        pool = await create_pool(database.dsn, size=2)
        try:
            async with pool.acquire() as conn:
                t0 = time.perf_counter()
                await load(conn, env.id, args.users, rng)
                print(f"loaded {args.users:,} users in {time.perf_counter() - t0:.1f} s")
                await conn.execute("SET jit = off")  # as the preview service does
                types = await load_types(conn, env.id)
                segments = await segment_names(conn, env.id)
                floor: list[float] = []
                for _ in range(max(args.trees, 10)):
                    t = time.perf_counter()
                    await conn.fetchval("SELECT count(*) FROM users WHERE env_id = $1", env.id)
                    floor.append(time.perf_counter() - t)
                counts: list[float] = []
                whole: list[float] = []
                matched: list[int] = []
                for _ in range(args.trees):
                    condition = tree(rng)
                    where, params = compile_sql(  # as the preview service compiles it
                        parse_condition(condition, types),
                        first_param=2,
                        segments=segments,
                        env_param=1,
                    )
                    t = time.perf_counter()
                    n = await conn.fetchval(
                        f"SELECT count(*) FROM users u WHERE u.env_id = $1 AND {where}",
                        env.id,
                        *params,
                    )
                    counts.append(time.perf_counter() - t)
                    matched.append(n)
                    t = time.perf_counter()
                    await preview(conn, env.id, condition, seconds=60)
                    whole.append(time.perf_counter() - t)
                if args.per_leaf:
                    await time_leaves(conn, env.id, types, segments, rng)
                if args.write_cost:
                    await time_writes(conn, env.id, args.users, rng)
        finally:
            await pool.close()

    def ms(values: list[float]) -> str:
        p50, p95 = percentile(values, 50) * 1000, percentile(values, 95) * 1000
        return f"p50 {p50:7.1f} ms   p95 {p95:7.1f} ms"

    print(f"{args.trees} random 10-leaf trees over {args.users:,} users")
    print(f"  floor: SELECT count(*) WHERE env_id   {ms(floor)}")
    print(f"  preview count query                   {ms(counts)}")
    print(f"  whole preview (count + 20 sample)     {ms(whole)}")
    print(
        f"  users matched: median {statistics.median(matched):,.0f}, "
        f"min {min(matched):,}, max {max(matched):,}"
    )


def main(argv: list[str] | None = None) -> None:
    asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    main()
