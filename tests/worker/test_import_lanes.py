"""An import's rows applied in lanes at once (services.worker.imports), in-process on the real
PostgreSQL and Redis: a user's rows keep their file order across lanes and windows, and a
window of which one lane committed before the worker died is resumed without losing or
applying anything twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import redis.asyncio as aioredis

from services.admin.imports.schemas import ImportStart
from services.admin.imports.service import start_import
from services.admin.imports.upload import store_upload
from services.worker.import_rows import split_lanes
from services.worker.imports import LANES, _claim, _lane, _release, run_imports
from shared.environments import EnvironmentKeys
from shared.import_mapping import ColumnMapping
from shared.membership import SegmentCatalog
from shared.membership.cache import MembershipCache
from shared.settings import Settings

BATCH = 40  # rows per lane: windows of 80 rows
MAPPING = {"userId": ColumnMapping(as_="userId"), "n": ColumnMapping(as_="attribute")}


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _started(
    db: asyncpg.Pool,
    env_id: int,
    lines: list[str],
    header: str = "userId,n",
    mapping: dict[str, ColumnMapping] = MAPPING,
) -> int:
    """An import of users of ``lines`` (CSV under ``header``), started."""
    data = (header + "\n" + "\n".join(lines) + "\n").encode()
    async with db.acquire() as conn:
        import_id = await store_upload(conn, env_id, "users", None, None, _body(data), 1 << 20)
        await start_import(conn, env_id, str(import_id), ImportStart(mapping=mapping))
    return import_id


def _ctx(db: asyncpg.Pool, redis: aioredis.Redis, settings: Settings) -> dict[str, Any]:
    return {
        "pool": db,
        "cache": MembershipCache(redis, settings.redis_prefix),
        "settings": msgspec.structs.replace(settings, worker_batch=BATCH),
    }


async def _state(db: asyncpg.Pool, env_id: int, import_id: int) -> tuple[Any, ...]:
    row = await db.fetchrow(
        """SELECT status, rows_done, created, updated, unchanged, rejected, lanes_done
           FROM imports WHERE env_id = $1 AND id = $2""",
        env_id,
        import_id,
    )
    assert row is not None
    return tuple(row)


async def _values(db: asyncpg.Pool, env_id: int) -> dict[str, int]:
    rows = await db.fetch(
        "SELECT user_id, (attributes ->> 'n')::int AS n FROM users WHERE env_id = $1", env_id
    )
    return {r["user_id"]: r["n"] for r in rows}


async def test_a_users_rows_keep_their_order_across_lanes_and_windows(
    db: asyncpg.Pool, redis: aioredis.Redis, settings: Settings, env: EnvironmentKeys
) -> None:
    # 100 users, then each again with a new value (another window), a user repeated inside a
    # window, and a user on every row of the first window's end
    lines = [f"u{i},{i}" for i in range(100)]
    lines += [f"u{i},{1000 + i}" for i in range(100)]
    lines += ["u7,1", "u7,2", "u7,3"] + [f"hot,{i}" for i in range(60)]
    import_id = await _started(db, env.id, lines)
    ctx = _ctx(db, redis, settings)
    assert await run_imports(ctx) == 1
    # created: 100 users + hot; updated: the second 100, u7 twice (1 then 2; 3 too), hot 59
    assert await _state(db, env.id, import_id) == ("done", 263, 101, 162, 0, 0, 0)
    values = await _values(db, env.id)
    assert values == {**{f"u{i}": 1000 + i for i in range(100)}, "u7": 3, "hot": 59}
    split = split_lanes(
        ["userId", "n"], MAPPING, [(n, line.split(",")) for n, line in enumerate(lines)], LANES
    )
    assert all(split), "both lanes must have had rows for this test to mean anything"

    # the same file again: played against what the first run left, row by row as before
    again = await _started(db, env.id, lines)
    assert await run_imports(ctx) == 1
    assert await _state(db, env.id, again) == ("done", 263, 0, 263, 0, 0, 0)
    assert await _values(db, env.id) == values


async def test_one_import_at_a_time_per_worker_process(
    db: asyncpg.Pool, redis: aioredis.Redis, settings: Settings, env: EnvironmentKeys
) -> None:
    # arq hands each cron run a copy of the worker's ctx: a second run must not take the
    # import over from the first, even once its lease has lapsed
    rows = 3000
    import_id = await _started(db, env.id, [f"c{i},{i}" for i in range(rows)])
    first = asyncio.create_task(run_imports(_ctx(db, redis, settings)))
    sql = "SELECT rows_done FROM imports WHERE env_id = $1 AND id = $2"
    for _ in range(6000):  # until the first window has committed
        if await db.fetchval(sql, env.id, import_id):
            break
        await asyncio.sleep(0.01)
    await db.execute(
        """UPDATE imports SET lease_until = now() - interval '1 second'
           WHERE env_id = $1 AND id = $2""",
        env.id,
        import_id,
    )
    assert await db.fetchval(sql, env.id, import_id) < rows, "the import ended too soon"
    assert await run_imports(_ctx(db, redis, settings)) == 0
    assert await first == 1
    assert await _state(db, env.id, import_id) == ("done", rows, rows, 0, 0, 0, 0)


async def test_a_window_with_one_lane_committed_resumes_with_the_other(
    db: asyncpg.Pool, redis: aioredis.Redis, settings: Settings, env: EnvironmentKeys
) -> None:
    lines = [f"r{i},{i}" for i in range(200)]
    import_id = await _started(db, env.id, lines)
    ctx = _ctx(db, redis, settings)
    job = await _claim(db, "the-worker-that-dies")
    assert job is not None and job.id == import_id
    window = [(n, line.split(",")) for n, line in enumerate(lines[: 2 * BATCH], 1)]
    lanes = split_lanes(job.columns, job.mapping, window, LANES)
    assert len(lanes) == 2 and all(lanes)
    # lane 0 of the first window commits; the worker dies before lane 1 does
    await _lane(ctx, job, SegmentCatalog(), lanes[0], 1, 3, len(window))
    assert await _state(db, env.id, import_id) == (
        "processing",
        0,
        len(lanes[0]),
        0,
        0,
        0,
        1,
    )
    await _release(db, job)

    assert await run_imports(ctx) == 1
    assert await _state(db, env.id, import_id) == ("done", 200, 200, 0, 0, 0, 0)
    assert await _values(db, env.id) == {f"r{i}": i for i in range(200)}
    entries = await db.fetchval(
        """SELECT count(*) FROM membership_changes c
           JOIN segments s ON s.env_id = c.env_id AND s.id = c.segment_id AND s.kind = 'all'
           WHERE c.env_id = $1 AND c.entered AND c.cause = 'import'""",
        env.id,
    )
    assert entries == 200


def test_lanes_split_by_user_and_fall_back_to_one_without_a_userid() -> None:
    mapping = {**MAPPING, "email": ColumnMapping(as_="email")}
    columns = ["userId", "n", "email"]
    rows = [(n, [f"u{n % 7}", str(n), ""]) for n in range(1, 50)]
    lanes = split_lanes(columns, mapping, rows, 2)
    assert sorted(r for lane in lanes for r in lane) == rows  # every row, once
    assert all(lane == sorted(lane) for lane in lanes)  # in file order
    for user in {r[1][0] for r in rows}:  # a user's rows in one lane
        assert sum(any(r[1][0] == user for r in lane) for lane in lanes) == 1
    assert split_lanes(columns, mapping, rows, 2) == lanes  # the same split every time
    # an email alone may name another row's user: one lane, in file order
    by_email = [*rows[:5], (50, ["", "0", "u1@example.com"]), *rows[5:]]
    assert split_lanes(columns, mapping, by_email, 2) == [by_email]
    assert split_lanes(["email", "n"], mapping, [(1, ["a@b.c", "1"])], 2) == [[(1, ["a@b.c", "1"])]]
