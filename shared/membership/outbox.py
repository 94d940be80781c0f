"""The cache outbox: every membership writer's Redis step tied to its commit.

A writer records, in the transaction that changes memberships, which users' Redis sets it
must rewrite (:func:`record`); after the commit it writes them and clears its row
(:func:`done`). When the writer dies or Redis fails in between, the row outlives
``GRACE_SECONDS`` and :func:`sweep` (the worker, every second) rewrites those users' sets
from PostgreSQL. Writes are version-checked (:mod:`shared.membership.cache`), so the sweeper
racing a slow writer is harmless.

This bounds a stale answer: a set that PostgreSQL has moved past is replaced at most about
``GRACE_SECONDS`` + one sweep interval + the rewrite after the commit, even when its writer
died (3 s with the defaults; the stated bound is 5 s).
"""

from __future__ import annotations

import logging
from collections import defaultdict

import asyncpg
from redis.exceptions import RedisError

from shared.db import Conn
from shared.membership.cache import MembershipCache, load_memberships_by_pk
from shared.redis_keys import ANONYMOUS_MARK, anonymous

log = logging.getLogger(__name__)

#: Seconds a writer has between its commit and clearing its row before the sweeper steps in.
GRACE_SECONDS = 2.0


async def record(
    conn: Conn,
    env_id: int,
    user_pks: list[int],
    *,
    erased_keys: list[str] | None = None,
    hold_version: int = 0,
) -> int | None:
    """Note, inside the writer's transaction, the users (and erased users' keys, as the
    cache names them) whose Redis sets it will write after the commit; returns the row id for
    :func:`done` (None: nothing)."""
    erased = erased_keys or []
    if not user_pks and not erased:
        return None
    outbox_id: int = await conn.fetchval(
        """INSERT INTO cache_outbox
             (env_id, user_pks, erased_users, erased_anonymous, hold_version)
           VALUES ($1, $2, $3, $4, $5) RETURNING id""",
        env_id,
        user_pks,
        [k for k in erased if not k.startswith(ANONYMOUS_MARK)],
        [k.removeprefix(ANONYMOUS_MARK) for k in erased if k.startswith(ANONYMOUS_MARK)],
        hold_version,
    )
    return outbox_id


async def done(conn: Conn | asyncpg.Pool, env_id: int, outbox_id: int | None) -> None:
    """The writer's Redis step succeeded: its row goes. A failure here only leaves the
    sweeper a redundant (version-checked) rewrite."""
    if outbox_id is None:
        return
    try:
        await conn.execute(
            "DELETE FROM cache_outbox WHERE env_id = $1 AND id = $2", env_id, outbox_id
        )
    except (asyncpg.PostgresError, OSError) as exc:
        log.warning("cache outbox row %s not cleared (the sweeper will): %s", outbox_id, exc)


async def flush(
    conn: Conn, cache: MembershipCache, env_id: int, user_pks: list[int], outbox_id: int | None
) -> None:
    """A writer's Redis step after its commit: rewrite the users' sets (under their userId and
    every anonymous id) from PostgreSQL, then clear its row. On a Redis failure the row
    stays for the sweeper."""
    try:
        for start in range(0, len(user_pks), 5000):
            sets = await load_memberships_by_pk(conn, env_id, user_pks[start : start + 5000])
            await cache.write_many(env_id, sets)
    except (RedisError, OSError) as exc:
        log.warning("membership sets not written to Redis (the outbox sweeper will): %s", exc)
        return
    await done(conn, env_id, outbox_id)


async def sweep(
    pool: asyncpg.Pool,
    cache: MembershipCache,
    grace: float = GRACE_SECONDS,
    limit: int = 500,
) -> int:
    """Finish the Redis step of writers that committed over ``grace`` seconds ago and have not
    cleared their row: rewrite those users' sets from PostgreSQL, hold erased keys. Returns
    how many rows it finished (they stay when Redis fails, for the next sweep)."""
    try:
        return await _sweep(pool, cache, grace, limit)
    except (RedisError, OSError) as exc:  # Redis away: the rows wait for the next sweep
        log.warning("cache outbox not swept (Redis unavailable): %s", exc)
        return 0


async def _sweep(pool: asyncpg.Pool, cache: MembershipCache, grace: float, limit: int) -> int:
    finished = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT env_id, id, user_pks, erased_users, erased_anonymous, hold_version
                   FROM cache_outbox
                   WHERE created_at < clock_timestamp() - make_interval(secs => $1)
                   ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED""",
                grace,
                limit,
            )
            if not rows:
                return finished
            pks: dict[int, set[int]] = defaultdict(set)
            for row in rows:
                pks[row["env_id"]].update(row["user_pks"])
                erased = [*row["erased_users"], *map(anonymous, row["erased_anonymous"])]
                if erased:
                    await cache.hold(row["env_id"], erased, row["hold_version"])
            for env_id, users in pks.items():
                if users:
                    sets = await load_memberships_by_pk(conn, env_id, sorted(users))
                    await cache.write_many(env_id, sets)
            await conn.execute(
                """DELETE FROM cache_outbox
                   WHERE (env_id, id) IN (SELECT * FROM unnest($1::bigint[], $2::bigint[]))""",
                [r["env_id"] for r in rows],
                [r["id"] for r in rows],
            )
        finished += len(rows)
        log.info("cache outbox: finished %d writers' Redis steps", len(rows))
        if len(rows) < limit:
            return finished
