"""Time partitions (migration 060, shared.partitions): the maintenance job's clock is moved
with ``today``, the dedup's day with ``first_new(day=...)``."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import asyncpg
import msgspec

from services.admin.segments.changes import changes_page
from services.admin.users.history import membership_history
from services.admin.webhooks.service import deliveries_page
from services.worker.drain import first_new
from shared.db import Conn
from shared.environments import EnvironmentKeys
from shared.erase import erase_user
from shared.membership import record_changes
from shared.messages import InboxMessage, normalise, wire_decoder
from shared.partitions import TABLES, maintain, partitions
from shared.settings import Settings
from tests.worker.conftest import Worker


def _msg(message_id: str) -> InboxMessage:
    wire = {"type": "identify", "userId": "u", "messageId": message_id, "traits": {"a": 1}}
    return normalise(wire_decoder.decode(msgspec.json.encode(wire)), datetime.now(UTC))


async def _today(db: asyncpg.Pool) -> date:
    today: date = await db.fetchval("SELECT (now() AT TIME ZONE 'UTC')::date")
    return today


async def _new(
    conn: Conn,
    env_id: int,
    ids: list[str],
    day: date,
) -> list[str]:
    rows = [(env_id, i, _msg(m)) for i, m in enumerate(ids)]
    return [m.messageId for _, _, m in await first_new(conn, rows, day=day)]


async def _where(db: asyncpg.Pool, table: str, column: str, value: object) -> set[str]:
    """Names of the partitions holding rows of ``table`` whose ``column`` is ``value``."""
    rows = await db.fetch(
        f"SELECT DISTINCT tableoid::regclass::text AS p FROM {table} WHERE {column} = $1", value
    )
    return {r["p"] for r in rows}


async def _monday(db: asyncpg.Pool) -> date:
    """This week's Monday: the partitions of this week and the next two exist."""
    today = await _today(db)
    return today - timedelta(days=today.weekday())


async def test_dedup_spans_partitions_within_the_window(
    db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    monday = await _monday(db)
    wednesday, sunday, next_monday = (monday + timedelta(days=d) for d in (2, 6, 7))
    async with db.acquire() as conn:
        async with conn.transaction():
            assert await _new(conn, env.id, ["m1", "m2", "m1"], wednesday) == ["m1", "m2"]
        async with conn.transaction():  # a later day of the week: m1 is known, m3 is new
            assert await _new(conn, env.id, ["m1", "m3"], sunday) == ["m3"]
        async with conn.transaction():  # the next week's partition: all three are known
            assert await _new(conn, env.id, ["m2", "m3", "m4"], next_monday) == ["m4"]
    days = await db.fetch(
        """SELECT day, tableoid::regclass::text AS part, count(*) AS n FROM processed_messages
           WHERE env_id = $1 GROUP BY 1, 2""",
        env.id,
    )
    # a messageId once per day it was seen (so the window runs from its last sighting)
    assert {(r["day"] - monday).days: r["n"] for r in days} == {2: 2, 6: 2, 7: 3}
    assert {r["part"] for r in days} == {
        f"processed_messages_p{monday:%Y%m%d}",
        f"processed_messages_p{next_monday:%Y%m%d}",
    }


async def _waiting(db: asyncpg.Pool, pid: int) -> bool:
    state = await db.fetchval("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid)
    return bool(state == "Lock")


async def _until_waiting(db: asyncpg.Pool, pid: int) -> None:
    for _ in range(500):
        if await _waiting(db, pid):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the second transaction never waited for the first")


async def test_concurrent_duplicate_across_midnight_applies_once(
    db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    """Two workers claim two inbox rows with one messageId: one still in Sunday's
    transaction, one in Monday's (the next week's partition). Monday's waits for Sunday's to
    commit, then sees it."""
    today = await _monday(db) + timedelta(days=7)
    yesterday = today - timedelta(days=1)
    for outcome in ("commit", "rollback"):
        mid = f"boundary-{outcome}"
        late = await db.acquire()
        early = await db.acquire()
        try:
            late_tx = late.transaction()
            await late_tx.start()
            assert await _new(late, env.id, [mid], yesterday) == [mid]
            async with early.transaction():
                pid = early.get_server_pid()
                second = asyncio.create_task(_new(early, env.id, [mid], today))
                await _until_waiting(db, pid)
                assert not second.done()
                if outcome == "commit":
                    await late_tx.commit()
                    assert await second == []  # a duplicate: applied once
                else:
                    await late_tx.rollback()
                    assert await second == [mid]  # the first never happened
        finally:
            await db.release(late)
            await db.release(early)


async def test_same_day_concurrent_duplicate_waits_on_the_key(
    db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    today = await _today(db)
    first = await db.acquire()
    second = await db.acquire()
    try:
        tx = first.transaction()
        await tx.start()
        assert await _new(first, env.id, ["same"], today) == ["same"]
        async with second.transaction():
            task = asyncio.create_task(_new(second, env.id, ["same"], today))
            await _until_waiting(db, second.get_server_pid())
            await tx.commit()
            assert await task == []
    finally:
        await db.release(first)
        await db.release(second)


async def test_maintenance_creates_ahead_moves_default_rows_and_drops_expired(
    db: asyncpg.Pool, settings: Settings, env: EnvironmentKeys
) -> None:
    today = await _today(db)
    later = today + timedelta(days=400)  # beyond every partition made so far: the default
    await db.execute(
        """INSERT INTO membership_changes (env_id, segment_id, user_pk, entered, cause, at)
           VALUES ($1, 1, 1, true, 'test', $2)""",
        env.id,
        datetime(later.year, later.month, later.day, 12, tzinfo=UTC),
    )
    async with db.acquire() as conn, conn.transaction():
        assert await _new(conn, env.id, ["kept-a-while"], today) == ["kept-a-while"]
    assert await _where(db, "membership_changes", "env_id", env.id) == {
        "membership_changes_default"
    }
    webhook = await db.fetchval(
        """INSERT INTO webhooks (env_id, url, secret, active) VALUES ($1, 'http://x', 's', false)
           RETURNING id""",
        env.id,
    )
    await db.execute(
        """INSERT INTO webhook_deliveries (env_id, webhook_id, change_id, payload, status)
           VALUES ($1, $2, 1, '{}', 'pending'), ($1, $2, 2, '{}', 'delivered')""",
        env.id,
        webhook,
    )

    report = await maintain(db, settings, today=later)
    # the default row moved into a partition of its own week; the default is empty
    holding = await _where(db, "membership_changes", "env_id", env.id)
    assert len(holding) == 1 and holding != {"membership_changes_default"}
    for spec in TABLES:
        assert await db.fetchval(f"SELECT count(*) FROM {spec.table}_default") == 0
        names = await partitions(db, spec.table)
        days = {lo for _, lo in names}
        # the coming periods exist; none older than the retention is left
        for ahead in range(0, spec.ahead + 1):
            start = later + timedelta(days=ahead)
            start -= timedelta(days=start.weekday() if spec.days == 7 else 0)
            assert start in days, (spec.table, start)
        horizon = later - timedelta(days=getattr(settings, spec.retention))
        assert all(lo + timedelta(days=spec.days) > horizon for lo in days)
    assert report.created > 0 and report.dropped and not report.skipped
    # today's messageId went with its partition (past the dedup window); nothing else was
    # deleted row by row: the pending delivery of the paused webhook was carried forward
    assert await _where(db, "processed_messages", "env_id", env.id) == set()
    kept = await db.fetch(
        "SELECT change_id, status FROM webhook_deliveries WHERE webhook_id = $1", webhook
    )
    assert [(r["change_id"], r["status"]) for r in kept] == [(1, "pending")]
    # the job again: nothing left to do
    again = await maintain(db, settings, today=later)
    assert again.created == 0 and again.dropped == []
    await maintain(db, settings)  # today's partitions back, for the tests after this one


async def _user_and_hook(
    db: asyncpg.Pool, worker: Worker, env_id: int, user_id: str
) -> tuple[int, int, int]:
    """A user made by the worker, the environment's all-users segment, a webhook."""
    await worker.send(env_id, {"type": "identify", "userId": user_id, "traits": {"a": 1}})
    await worker.drain()
    pk = await db.fetchval(
        "SELECT id FROM users WHERE env_id = $1 AND user_id = $2", env_id, user_id
    )
    segment = await db.fetchval(
        "SELECT id FROM segments WHERE env_id = $1 AND kind = 'all'", env_id
    )
    webhook = await db.fetchval(
        "INSERT INTO webhooks (env_id, url, secret) VALUES ($1, 'http://x', 's') RETURNING id",
        env_id,
    )
    return pk, segment, webhook


async def test_history_reads_span_partitions(
    db: asyncpg.Pool, worker: Worker, env: EnvironmentKeys
) -> None:
    """The change feed, a profile's history and the delivery log page across partitions:
    rows written weeks apart (and one the default partition took) come back in id order."""
    pk, segment, webhook = await _user_and_hook(db, worker, env.id, "hist")
    now = datetime.now(UTC)
    ats = [now - timedelta(days=40), now - timedelta(days=9), now, now + timedelta(days=500)]
    for i, at in enumerate(ats):
        change = await db.fetchval(
            """INSERT INTO membership_changes (env_id, segment_id, user_pk, entered, cause, at)
               VALUES ($1, $2, $3, $4, 'test', $5) RETURNING id""",
            env.id,
            segment,
            pk,
            i % 2 == 0,
            at,
        )
        await db.execute(
            """INSERT INTO webhook_deliveries (env_id, webhook_id, change_id, payload, created_at)
               VALUES ($1, $2, $3, '{}', $4)""",
            env.id,
            webhook,
            change,
            at,
        )
    assert len(await _where(db, "membership_changes", "user_pk", pk)) >= 2
    ours = await db.fetch(
        "SELECT id FROM membership_changes WHERE env_id = $1 AND cause = 'test' ORDER BY id",
        env.id,
    )
    ids = [str(r["id"]) for r in ours]

    history = await membership_history(db, env.id, pk, 3)
    assert [c.id for c in history.changes] == ids[::-1][:3]
    seen: list[str] = []
    cursor = 0
    while True:
        page = await changes_page(db, env.id, segment, 2, cursor)
        seen += [c.id for c in page.changes]
        if not page.hasMore:
            break
        assert page.nextCursor is not None
        cursor = int(page.nextCursor)
    assert [i for i in seen if i in ids] == ids
    async with db.acquire() as conn:
        first, before = await deliveries_page(conn, env.id, str(webhook), 3, 0, None)
        rest, end = await deliveries_page(conn, env.id, str(webhook), 3, before or 0, None)
    assert before is not None and end is None
    assert [int(d.changeId) for d in first + rest] == [int(i) for i in ids[::-1]]


async def test_erase_reaches_every_partition(
    db: asyncpg.Pool, worker: Worker, env: EnvironmentKeys
) -> None:
    pk, segment, webhook = await _user_and_hook(db, worker, env.id, "gone")
    now = datetime.now(UTC)
    for n, (at, status) in enumerate(
        [
            (now - timedelta(days=20), "delivered"),
            (now - timedelta(days=20), "pending"),
            (now, "failed"),
            (now, "pending"),
        ]
    ):
        await db.execute(
            """INSERT INTO webhook_deliveries
                   (env_id, webhook_id, change_id, payload, status, created_at)
               VALUES ($1, $2, $3, jsonb_build_object('userId', 'gone'), $4, $5)""",
            env.id,
            webhook,
            n,
            status,
            at,
        )
        await db.execute(
            """INSERT INTO membership_changes (env_id, segment_id, user_pk, entered, cause, at)
               VALUES ($1, $2, $3, true, 'test', $4)""",
            env.id,
            segment,
            pk,
            at,
        )
    assert len(await _where(db, "webhook_deliveries", "webhook_id", webhook)) == 2
    async with db.acquire() as conn:
        erased = await erase_user(conn, env.id, "gone")
    assert erased is not None
    left = await db.fetch(
        """SELECT status, payload ->> 'userId' AS who, payload ->> 'cause' AS cause
           FROM webhook_deliveries WHERE webhook_id = $1 AND change_id < 4 ORDER BY change_id""",
        webhook,
    )
    # pending ones in both partitions dropped; sent ones kept, nameless, in both
    assert [(r["status"], r["who"]) for r in left] == [("delivered", None), ("failed", None)]
    # the change log is history kept on purpose, in every partition (it names nobody now)
    kept = await db.fetchval(
        """SELECT count(*) FROM membership_changes
           WHERE env_id = $1 AND user_pk = $2 AND cause = 'test'""",
        env.id,
        pk,
    )
    assert kept == 4


async def test_changes_recorded_by_the_store_land_in_the_current_partition(
    db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    async with db.acquire() as conn, conn.transaction():
        await record_changes(conn, env.id, [1, 1], [10, 11], [True, False], "test")
    holding = await _where(db, "membership_changes", "env_id", env.id)
    today = await _today(db)
    monday = today - timedelta(days=today.weekday())
    assert holding == {f"membership_changes_p{monday:%Y%m%d}"}
