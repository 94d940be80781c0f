"""The membership engine: which segments a user belongs to, incrementally and in bulk.

- :class:`~shared.segment_catalog.SegmentCatalog` (re-exported) loads an environment's
  segments compiled for the Python engine, in dependency order.
- :func:`write_memberships` stores the new memberships of the users a worker batch touched:
  only the difference with what is stored, with every entry and exit in the change log.
- :func:`recompute_segment` recomputes one dynamic segment for every user by SQL: the new
  membership is computed beside the old one and swapped in one transaction, so readers never
  see an empty or partial segment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from shared.attribute_types import load_types
from shared.conditions import ConditionError, compile_sql, parse_condition, referenced_segments
from shared.db import Conn
from shared.membership_cache import MembershipCache, load_memberships_by_pk
from shared.redis_keys import anonymous
from shared.segment_catalog import (
    DynamicSegment,
    EnvSegments,
    SegmentCatalog,
    dependency_order,
    segment_names,
)

__all__ = [
    "DynamicSegment",
    "EnvSegments",
    "RecomputeResult",
    "SegmentCatalog",
    "bump_versions",
    "dependents_of",
    "recheck_timed_segments",
    "recompute_segment",
    "recompute_with_dependents",
    "record_changes",
    "stale_recomputes",
    "stored_memberships",
    "write_memberships",
]

log = logging.getLogger(__name__)


async def stored_memberships(conn: Conn, env_id: int, user_pks: list[int]) -> dict[int, set[int]]:
    """{user pk: segment ids} as stored, for ``user_pks`` (users with none map to an empty set)."""
    out: dict[int, set[int]] = {pk: set() for pk in user_pks}
    rows = await conn.fetch(
        "SELECT user_pk, segment_id FROM memberships WHERE env_id = $1 AND user_pk = ANY($2)",
        env_id,
        user_pks,
    )
    for row in rows:
        out[row["user_pk"]].add(row["segment_id"])
    return out


async def write_memberships(
    conn: Conn,
    env_id: int,
    old: Mapping[int, set[int]],
    new: Mapping[int, set[int]],
    cause: str,
) -> int:
    """Write the difference between ``old`` and ``new`` ({user pk: segment ids}) and log each
    entry and exit. Returns how many (user, segment) pairs changed."""
    entered: list[tuple[int, int]] = []
    exited: list[tuple[int, int]] = []
    for pk, segments in new.items():
        before = old.get(pk, set())
        entered.extend((seg, pk) for seg in segments - before)
        exited.extend((seg, pk) for seg in before - segments)
    if entered:
        await conn.execute(
            """INSERT INTO memberships (env_id, segment_id, user_pk)
               SELECT $1, s, u FROM unnest($2::bigint[], $3::bigint[]) AS x(s, u)
               ON CONFLICT DO NOTHING""",
            env_id,
            [s for s, _ in entered],
            [u for _, u in entered],
        )
    if exited:
        await conn.execute(
            """DELETE FROM memberships m
               USING unnest($2::bigint[], $3::bigint[]) AS x(s, u)
               WHERE m.env_id = $1 AND m.segment_id = x.s AND m.user_pk = x.u""",
            env_id,
            [s for s, _ in exited],
            [u for _, u in exited],
        )
    changes = [(s, u, True) for s, u in entered] + [(s, u, False) for s, u in exited]
    await record_changes(
        conn,
        env_id,
        [c[0] for c in changes],
        [c[1] for c in changes],
        [c[2] for c in changes],
        cause,
    )
    return len(changes)


# Logs the changes listed by ``{source}`` (rows of segment id, user pk, entered) with the cause
# ``{cause}`` and, in the same statement, queues a delivery for every webhook subscribed to
# them (an outbox: committed with the change, sent by the worker). Only identified users are
# announced to webhooks.
_RECORD_CHANGES = """
WITH changes AS (
    INSERT INTO membership_changes (env_id, segment_id, user_pk, entered, cause)
    SELECT $1, s, u, e, {cause} FROM ({source}) AS x(s, u, e)
    RETURNING id, segment_id, user_pk, entered, at
)
INSERT INTO webhook_deliveries (env_id, webhook_id, change_id, payload)
SELECT $1, w.id, c.id, jsonb_build_object(
           'type', CASE WHEN c.entered THEN 'segment.entered' ELSE 'segment.exited' END,
           'id', c.id::text,
           'at', c.at,
           'cause', {cause},
           'userId', u.user_id,
           'segment', jsonb_build_object('id', g.id::text, 'key', g.key, 'name', g.name))
FROM changes c
JOIN webhooks w ON w.env_id = $1 AND w.active
     AND (w.segment_ids IS NULL OR c.segment_id = ANY (w.segment_ids))
     AND CASE WHEN c.entered THEN w.on_entered ELSE w.on_exited END
JOIN segments g ON g.env_id = $1 AND g.id = c.segment_id
JOIN users u ON u.env_id = $1 AND u.id = c.user_pk AND u.user_id IS NOT NULL
"""

_RECORD_ONLY = """
INSERT INTO membership_changes (env_id, segment_id, user_pk, entered, cause)
SELECT $1, s, u, e, {cause} FROM ({source}) AS x(s, u, e)
"""

_FROM_ARRAYS = "SELECT * FROM unnest($2::bigint[], $3::bigint[], $4::bool[])"


async def _log_changes(conn: Conn, env_id: int, source: str, cause: str, *args: Any) -> None:
    """Run _RECORD_CHANGES, or only its log when the environment has no active webhook."""
    hooked = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM webhooks WHERE env_id = $1 AND active)", env_id
    )
    sql = _RECORD_CHANGES if hooked else _RECORD_ONLY  # the common case: no subscriber, no join
    await conn.execute(sql.format(source=source, cause=cause), env_id, *args)


async def record_changes(
    conn: Conn,
    env_id: int,
    segment_ids: list[int],
    user_pks: list[int],
    entered: list[bool],
    cause: str,
) -> None:
    """Log membership entries/exits and queue their webhook deliveries (see _RECORD_CHANGES)."""
    if segment_ids:
        await _log_changes(
            conn, env_id, _FROM_ARRAYS, "$5::text", segment_ids, user_pks, entered, cause
        )


async def bump_versions(conn: Conn, env_id: int, pks: list[int]) -> dict[int, int]:
    """Bump ``membership_version`` of users whose memberships this transaction changes, so
    that the Redis sets written after the commit replace any older copy; returns {pk: new
    version}. Rows are locked in id order, the order every writer of memberships locks in."""
    rows = await conn.fetch(
        """UPDATE users SET membership_version = membership_version + 1
           WHERE env_id = $1 AND id = ANY($2::bigint[]) RETURNING id, membership_version""",
        env_id,
        sorted(pks),
    )
    return {r["id"]: r["membership_version"] for r in rows}


class _Phases:
    """Seconds spent in each phase of a recompute, for the log."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.spent: list[tuple[str, float]] = []

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.spent.append((phase, now - self.last))
        self.last = now

    def __str__(self) -> str:
        return ", ".join(f"{phase} {seconds:.2f}s" for phase, seconds in self.spent)


class _Progress:
    """Where a recompute is, written to ``segment_progress`` on connections of its own (the
    recompute's transaction is not visible until it commits) and deleted at the end. A
    failed write only loses the report."""

    #: the percent of the whole run at which each phase starts and ends (measured at 1M users)
    SPAN = {"selecting": (0, 5), "writing": (5, 70), "caching": (70, 100)}

    def __init__(self, pool: asyncpg.Pool, env_id: int, segment_id: int) -> None:
        self.pool = pool
        self.env_id = env_id
        self.segment_id = segment_id
        self.started = datetime.now(UTC)
        self.given_up = False

    async def report(self, phase: str, done: float = 0.0) -> None:
        """Enter ``phase``, ``done`` (0..1) of the way through it."""
        start, end = self.SPAN[phase]
        percent = round(start + (end - start) * min(max(done, 0.0), 1.0))
        try:
            await self._execute(
                """INSERT INTO segment_progress (env_id, segment_id, phase, percent, started_at)
                   VALUES ($1, $2, $3, $4, $5)
                   ON CONFLICT (env_id, segment_id) DO UPDATE
                   SET phase = EXCLUDED.phase, percent = EXCLUDED.percent,
                       started_at = EXCLUDED.started_at, updated_at = now()""",
                self.env_id,
                self.segment_id,
                phase,
                percent,
                self.started,
            )
        except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
            log.warning("progress of segment %s not recorded: %s", self.segment_id, exc)

    async def done(self) -> None:
        try:
            await self._execute(
                "DELETE FROM segment_progress WHERE env_id = $1 AND segment_id = $2",
                self.env_id,
                self.segment_id,
            )
        except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
            log.warning("progress of segment %s not cleared: %s", self.segment_id, exc)

    async def _execute(self, sql: str, *args: Any) -> None:
        # Never wait long for a connection: every other one may be held by recomputes. After
        # one wait in vain, this run reports nothing more.
        if self.given_up:
            return
        try:
            async with self.pool.acquire(timeout=1.0) as conn:
                await conn.execute(sql, *args, timeout=5.0)
        except TimeoutError:
            self.given_up = True
            raise


class RecomputeResult(msgspec.Struct, frozen=True):
    segment_id: int
    version: int
    members: int
    entered: int
    exited: int


async def recompute_segment(
    pool: asyncpg.Pool,
    cache: MembershipCache,
    env_id: int,
    segment_id: int,
    now: datetime,
    *,
    wait: bool = True,
    cause: str = "recompute",
) -> RecomputeResult | None:
    """Recompute a dynamic segment's membership for every user of the environment by SQL and
    swap it in one transaction; then refresh the Redis sets of the users that changed.

    One recompute of a segment runs at a time (an advisory lock; ``wait=False`` gives up at
    once when another holds it). None when the segment is gone, not dynamic, or busy."""
    async with pool.acquire() as conn:
        lock_key = f"recompute:{env_id}:{segment_id}"
        if wait:
            await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", lock_key)
        elif not await conn.fetchval(
            "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", lock_key
        ):
            return None
        progress = _Progress(pool, env_id, segment_id)
        try:
            return await _recompute_locked(conn, cache, env_id, segment_id, now, cause, progress)
        finally:
            await progress.done()
            await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", lock_key)


async def _recompute_locked(
    conn: Conn,
    cache: MembershipCache,
    env_id: int,
    segment_id: int,
    now: datetime,
    cause: str,
    progress: _Progress,
) -> RecomputeResult | None:
    clock = _Phases()
    async with conn.transaction():
        seg = await conn.fetchrow(
            "SELECT kind, version, conditions FROM segments WHERE env_id = $1 AND id = $2",
            env_id,
            segment_id,
        )
        if seg is None or seg["kind"] != "dynamic" or seg["conditions"] is None:
            return None
        await progress.report("selecting")
        # users the worker changes while we compute are re-checked after our commit
        since = await conn.fetchval("SELECT clock_timestamp() - interval '60 seconds'")
        await conn.execute("SET LOCAL jit = off")  # compiling the expressions costs more
        where, params = await _segment_where(conn, env_id, seg["conditions"])
        await conn.execute(
            f"""CREATE TEMP TABLE new_members ON COMMIT DROP AS
                SELECT u.id FROM users u
                WHERE u.env_id = $1 AND $2::timestamptz IS NOT NULL
                  AND $3::timestamptz IS NOT NULL AND ({where})""",
            env_id,
            now,
            since,
            *params,
        )
        await conn.execute("CREATE INDEX ON new_members (id)")
        clock.mark("select")
        await progress.report("writing")
        # the difference, in one statement (both halves see the memberships as they were)
        await conn.execute(
            """CREATE TEMP TABLE swapped (user_pk bigint, entered boolean) ON COMMIT DROP"""
        )
        await conn.execute(
            """WITH entered AS (
                   INSERT INTO memberships (env_id, segment_id, user_pk)
                   SELECT $1, $2, n.id FROM new_members n
                   WHERE NOT EXISTS (SELECT 1 FROM memberships m
                                     WHERE m.env_id = $1 AND m.segment_id = $2
                                       AND m.user_pk = n.id)
                   ON CONFLICT DO NOTHING RETURNING user_pk),
               exited AS (
                   DELETE FROM memberships m WHERE m.env_id = $1 AND m.segment_id = $2
                     AND NOT EXISTS (SELECT 1 FROM new_members n WHERE n.id = m.user_pk)
                   RETURNING user_pk)
               INSERT INTO swapped
               SELECT user_pk, true FROM entered UNION ALL SELECT user_pk, false FROM exited""",
            env_id,
            segment_id,
        )
        clock.mark("swap")
        counts = await conn.fetchrow(
            """SELECT count(*) FILTER (WHERE entered) AS entered,
                      count(*) FILTER (WHERE NOT entered) AS exited,
                      coalesce(array_agg(user_pk) FILTER (WHERE entered), '{}') AS entered_pks
               FROM swapped"""
        )
        assert counts is not None
        entered_count, exited_count = counts["entered"], counts["exited"]
        patches: list[tuple[str, int, bool]] = []
        if entered_count or exited_count:
            await _log_changes(
                conn,
                env_id,
                "SELECT $2::bigint, user_pk, entered FROM swapped",
                "$3::text",
                segment_id,
                cause,
            )
            clock.mark("log")
            await progress.report("writing", 0.6)
            # Bump versions so Redis takes our sets. An index scan over a sorted array locks in
            # id order, as the worker does (a third of the cost of a FOR UPDATE sub-select).
            bumped = await conn.fetch(
                """UPDATE users SET membership_version = membership_version + 1
                   WHERE env_id = $1
                     AND id = ANY(ARRAY(SELECT user_pk FROM swapped ORDER BY user_pk))
                   RETURNING id, user_id, membership_version""",
                env_id,
            )
            clock.mark("bump")
            patches = await _cache_patches(conn, env_id, bumped, set(counts["entered_pks"]))
        members = await conn.fetchval("SELECT count(*) FROM new_members")
        # 'ready' only if nobody changed the definition meanwhile (their job follows ours)
        await conn.execute(
            """UPDATE segments SET computed_version = $3,
                      status = CASE WHEN version = $3 THEN 'ready' ELSE status END
               WHERE env_id = $1 AND id = $2""",
            env_id,
            segment_id,
            seg["version"],
        )
    clock.mark("commit")
    await progress.report("caching")
    rechecked = await _recheck_touched(conn, env_id, segment_id, where, params, now, since, cause)
    clock.mark("recheck")
    # Redis after the commit: the swap's changes as patches, the re-checked users reloaded.
    for start in range(0, len(patches), 50_000):
        await cache.patch_segment(env_id, segment_id, patches[start : start + 50_000])
        await progress.report("caching", (start + 50_000) / len(patches))
    for start in range(0, len(rechecked), 5000):
        sets = await load_memberships_by_pk(conn, env_id, rechecked[start : start + 5000])
        await cache.write_many(env_id, sets)
    clock.mark("redis")
    log.info(
        "recomputed segment %s (%d changed, %d re-checked): %s",
        segment_id,
        entered_count + exited_count,
        len(rechecked),
        clock,
    )
    return RecomputeResult(segment_id, seg["version"], members, entered_count, exited_count)


async def _cache_patches(
    conn: Conn, env_id: int, bumped: list[asyncpg.Record], entered: set[int]
) -> list[tuple[str, int, bool]]:
    """(Redis key's user, new version, entered) for every key answering for the bumped users:
    their userIds and the anonymous ids resolving to them. Call inside the swap's
    transaction (it reads the ``swapped`` temp table)."""
    by_pk = {r["id"]: (r["membership_version"], r["id"] in entered) for r in bumped}
    out = [(r["user_id"], *by_pk[r["id"]]) for r in bumped if r["user_id"] is not None]
    for row in await conn.fetch(  # inside the swap's transaction: ``swapped`` lists the users
        """SELECT i.user_pk, i.anonymous_id FROM identities i
           JOIN swapped s ON s.user_pk = i.user_pk WHERE i.env_id = $1""",
        env_id,
    ):
        out.append((anonymous(row["anonymous_id"]), *by_pk[row["user_pk"]]))
    return out


async def _segment_where(conn: Conn, env_id: int, conditions: Any) -> tuple[str, list[Any]]:
    """A segment's conditions as SQL over ``users u`` ($1 env, $2 now, $3 free, then params)."""
    types = await load_types(conn, env_id)
    names = await segment_names(conn, env_id)
    return compile_sql(
        parse_condition(conditions, types),
        alias="u",
        first_param=4,
        now_param=2,
        types=types,
        segments=names,
    )


async def _recheck_touched(
    conn: Conn,
    env_id: int,
    segment_id: int,
    where: str,
    params: list[Any],
    now: datetime,
    since: datetime,
    cause: str,
) -> list[int]:
    """Users the worker wrote while the bulk computation ran may have been judged on a
    snapshot older than their last write: lock them (waiting for a worker still holding
    them) and decide this segment again on their committed state. Returns the users whose
    membership this changed."""
    async with conn.transaction():
        rows = await conn.fetch(
            f"""SELECT u.id, coalesce(({where}), false) AS member FROM users u
                WHERE u.env_id = $1 AND $2::timestamptz IS NOT NULL AND u.updated_at >= $3
                ORDER BY u.id FOR UPDATE""",
            env_id,
            now,
            since,
            *params,
        )
        if not rows:
            return []
        pks = [r["id"] for r in rows]
        stored = {
            r["user_pk"]
            for r in await conn.fetch(
                """SELECT user_pk FROM memberships
                   WHERE env_id = $1 AND segment_id = $2 AND user_pk = ANY($3)""",
                env_id,
                segment_id,
                pks,
            )
        }
        old = {pk: ({segment_id} if pk in stored else set()) for pk in pks}
        new = {r["id"]: ({segment_id} if r["member"] else set()) for r in rows}
        changed = [pk for pk in pks if old[pk] != new[pk]]
        if changed:
            await write_memberships(conn, env_id, old, new, cause)
            await bump_versions(conn, env_id, changed)
    return changed


async def stale_recomputes(conn: Conn, older_than_seconds: float) -> list[tuple[int, int]]:
    """(env_id, segment_id) of dynamic segments still 'computing' a while after their last
    change: their job was lost (Redis restarted, enqueue failed); the worker's sweep redoes them."""
    rows = await conn.fetch(
        """SELECT env_id, id FROM segments
           WHERE status = 'computing' AND kind = 'dynamic'
             AND updated_at < now() - make_interval(secs => $1)""",
        older_than_seconds,
    )
    return [(r["env_id"], r["id"]) for r in rows]


async def dependents_of(conn: Conn, env_id: int, segment_id: int) -> list[int]:
    """Dynamic segments whose conditions refer (directly or through others) to
    ``segment_id``, in dependency order: what to recompute after it changed."""
    rows = await conn.fetch(
        """SELECT id, key, conditions FROM segments
           WHERE env_id = $1 AND kind = 'dynamic' AND conditions IS NOT NULL""",
        env_id,
    )
    names = await segment_names(conn, env_id)
    refs: dict[int, set[int]] = {}
    for row in rows:
        try:
            cond = parse_condition(row["conditions"])
        except ConditionError:
            continue
        refs[row["id"]] = {names[r] for r in referenced_segments(cond) if r in names}
    reached = {segment_id}
    changed = True
    while changed:
        changed = False
        for seg, targets in refs.items():
            if seg not in reached and targets & reached:
                reached.add(seg)
                changed = True
    return [s for s in dependency_order(refs) if s in reached and s != segment_id]


async def recompute_with_dependents(
    pool: asyncpg.Pool,
    cache: MembershipCache,
    env_id: int,
    segment_id: int,
    now: datetime,
    *,
    wait: bool = True,
    cause: str = "recompute",
) -> RecomputeResult | None:
    """Recompute a segment, then (if its membership changed) every segment built on it, in
    dependency order. Returns the first segment's result."""
    result = await recompute_segment(pool, cache, env_id, segment_id, now, wait=wait, cause=cause)
    if result is None or not (result.entered or result.exited):
        return result
    async with pool.acquire() as conn:
        dependents = await dependents_of(conn, env_id, segment_id)
    for dependent in dependents:
        await recompute_segment(pool, cache, env_id, dependent, now, cause=cause)
    return result


async def recheck_timed_segments(
    pool: asyncpg.Pool, cache: MembershipCache, catalog: SegmentCatalog, now: datetime
) -> int:
    """Re-evaluate every segment whose answer can change with time alone (relative dates,
    event windows) at ``now``; only real entries and exits are recorded. Returns how many
    segments were rechecked."""
    checked = 0
    env_ids = [r["id"] for r in await pool.fetch("SELECT id FROM environments ORDER BY id")]
    for env_id in env_ids:
        async with pool.acquire() as conn:
            segments = await catalog.load(conn, env_id)
        for segment in segments.dynamic:
            if segment.timed:
                await recompute_with_dependents(
                    pool, cache, env_id, segment.id, now, wait=False, cause="time"
                )
                checked += 1
    return checked
