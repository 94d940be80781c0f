"""`segments status`: the five figures to alert on, read from PostgreSQL and Redis with no
service running, each line ok or WARN, and an exit code that says whether any is at alert
level. Each problem is made for real in the tables the worker reads and writes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import redis.asyncio as aioredis

from shared.backlog import EXACT_COUNT, read_backlog
from shared.environments import EnvironmentKeys, ensure_environment
from shared.redis_keys import cache_repaired_at_key, cache_repairs_key
from shared.settings import Settings, to_environ
from tests.conftest import ROOT, pool_for, private_database, redis_for


@pytest.fixture(scope="module")
def quiet() -> Iterator[Settings]:
    """A database and Redis prefix no worker drains (the session stack's would)."""
    with private_database(None, "status") as private:
        yield private


@pytest.fixture
async def db(quiet: Settings) -> AsyncIterator[asyncpg.Pool]:
    async with pool_for(quiet) as pool:
        yield pool


@pytest.fixture
async def cache(quiet: Settings) -> AsyncIterator[aioredis.Redis]:
    async with redis_for(quiet) as client:
        yield client


def run_status(settings: Settings) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "status"],
        env={**os.environ, **to_environ(settings)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def status(settings: Settings) -> tuple[int, dict[str, str]]:
    """(exit code, {figure: its line}) of `segments status`."""
    done = run_status(settings)
    assert not done.stderr, done.stderr
    lines = {}
    for line in done.stdout.splitlines():
        verdict, rest = line.split(maxsplit=1)
        for name in ("worker lag", "dead letters", "recomputes", "webhooks", "cache"):
            if rest.startswith(name):
                lines[name] = f"{verdict} {rest}"
    assert len(lines) == 5, done.stdout
    return done.returncode, lines


def warned(lines: dict[str, str]) -> set[str]:
    return {name for name, line in lines.items() if line.startswith("WARN")}


async def test_status_says_ok_then_names_each_figure_at_alert_level(
    quiet: Settings, db: asyncpg.Pool, cache: aioredis.Redis
) -> None:
    async with db.acquire() as conn:
        env: EnvironmentKeys = await ensure_environment(conn, "status")
    code, lines = status(quiet)
    assert code == 0 and warned(lines) == set(), lines
    assert "inbox empty" in lines["worker lag"]

    # a message received a minute ago that no worker applied
    await db.execute(
        "INSERT INTO inbox (env_id, received_at, body) VALUES ($1, now() - interval '61 s', '')",
        env.id,
    )
    code, lines = status(quiet)
    assert code == 1 and warned(lines) == {"worker lag"}, lines
    assert "s old, 1 rows waiting" in lines["worker lag"]

    # a message the worker could not apply
    await db.execute(
        """INSERT INTO dead_letters (env_id, inbox_id, received_at, body, error)
           VALUES ($1, 0, now(), '', 'boom')""",
        env.id,
    )
    # a segment whose recompute failed for good
    await db.execute(
        """INSERT INTO segments (env_id, key, name, kind, conditions, status, status_reason)
           VALUES ($1, 'broken', 'Broken', 'dynamic', '{}', 'failed', 'timed out')""",
        env.id,
    )
    # a receiver failing: a delivery retried three times already
    hook = await db.fetchval(
        "INSERT INTO webhooks (env_id, url, secret) VALUES ($1, 'http://x', 's') RETURNING id",
        env.id,
    )
    await db.execute(
        """INSERT INTO webhook_deliveries (env_id, webhook_id, change_id, payload, attempts)
           VALUES ($1, $2, 1, '{}', 3)""",
        env.id,
        hook,
    )
    # a Redis set the verifier found wrong a moment ago
    await cache.set(cache_repairs_key(quiet.redis_prefix), 2)
    await cache.set(cache_repaired_at_key(quiet.redis_prefix), int(time.time()) - 5)
    code, lines = status(quiet)
    assert code == 1
    assert warned(lines) == {"worker lag", "dead letters", "recomputes", "webhooks", "cache"}
    assert "1 in the last day, 1 kept" in lines["dead letters"]
    assert "1 failed, 0 computing" in lines["recomputes"]
    assert "1 failing (3+ attempts)" in lines["webhooks"]
    assert "2 sets repaired" in lines["cache"]

    # each put right: ok again
    await db.execute("DELETE FROM inbox WHERE env_id = $1", env.id)
    await db.execute("DELETE FROM dead_letters WHERE env_id = $1", env.id)
    await db.execute("UPDATE segments SET status = 'ready' WHERE env_id = $1", env.id)
    await db.execute("UPDATE webhook_deliveries SET status = 'delivered' WHERE env_id = $1", env.id)
    await cache.set(cache_repaired_at_key(quiet.redis_prefix), int(time.time()) - 7200)
    code, lines = status(quiet)
    assert code == 0 and warned(lines) == set(), lines
    assert "the latest 2 h ago" in lines["cache"]


async def test_overdue_cache_outbox_notes_and_given_up_deliveries_warn(
    quiet: Settings, db: asyncpg.Pool, cache: aioredis.Redis
) -> None:
    async with db.acquire() as conn:
        env = await ensure_environment(conn, "status-2")
    await db.execute(
        """INSERT INTO cache_outbox (env_id, user_pks, created_at)
           VALUES ($1, '{1}', clock_timestamp() - interval '1 min')""",
        env.id,
    )
    hook = await db.fetchval(
        "INSERT INTO webhooks (env_id, url, secret) VALUES ($1, 'http://x', 's') RETURNING id",
        env.id,
    )
    await db.execute(
        """INSERT INTO webhook_deliveries (env_id, webhook_id, change_id, payload, attempts,
                                           status, next_attempt_at)
           VALUES ($1, $2, 1, '{}', 24, 'failed', now() - interval '2 h')""",
        env.id,
        hook,
    )
    code, lines = status(quiet)
    assert code == 1 and warned(lines) == {"cache", "webhooks"}, lines
    assert "1 outbox notes overdue" in lines["cache"]
    assert "1 given up in the last day" in lines["webhooks"]
    await db.execute("DELETE FROM cache_outbox WHERE env_id = $1", env.id)
    await db.execute("DELETE FROM webhooks WHERE env_id = $1", env.id)


async def test_a_large_inbox_is_counted_up_to_a_bound_then_estimated(
    quiet: Settings, db: asyncpg.Pool, cache: aioredis.Redis
) -> None:
    async with db.acquire() as conn:
        env = await ensure_environment(conn, "status-3")
    await db.execute(
        """INSERT INTO inbox (env_id, body)
           SELECT $1, '' FROM generate_series(1, $2)""",
        env.id,
        EXACT_COUNT + 5,
    )
    try:
        backlog = await read_backlog(db, cache, quiet.redis_prefix)
        assert backlog.inbox_estimated and backlog.inbox_depth >= EXACT_COUNT + 1
        assert 0 <= backlog.inbox_lag_seconds < 3600
    finally:
        await db.execute("DELETE FROM inbox WHERE env_id = $1", env.id)
    backlog = await read_backlog(db, cache, quiet.redis_prefix)
    assert not backlog.inbox_estimated and backlog.inbox_depth == 0


async def test_status_with_redis_unreachable_warns_on_the_cache(quiet: Settings) -> None:
    import msgspec

    from services.embedded import free_port

    away = msgspec.structs.replace(quiet, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    code, lines = status(away)
    assert code == 1 and "cache" in warned(lines)
    assert "Redis unreachable" in lines["cache"]


def test_status_with_postgresql_unreachable_says_so_and_fails(quiet: Settings) -> None:
    import msgspec

    from services.embedded import free_port

    away = msgspec.structs.replace(
        quiet, database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    )
    done = run_status(away)
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith("WARN  postgresql    unreachable")
    assert "Traceback" not in done.stderr
