"""Bulk recompute of one dynamic segment by SQL, in short chunks.

A recompute never holds locks on many users, so the worker's batches go on meanwhile. Its
named steps:

1. :func:`_begin` reads the segment (its version, request *generation* and resume cursor) and
   compiles its conditions to SQL;
2. for each range of ``RANGE_USERS`` users after the cursor (by id):
   a. :func:`_candidates`: the users whose answer differs from their stored membership (one
      read-only statement, no lock);
   b. :func:`_apply_chunk`, one short transaction: lock those users in id order, decide again
      on their committed state (a worker batch may have changed them meanwhile), write the
      difference, log it, bump their versions, note the cache outbox, and advance the cursor;
      all only while the segment's generation is the one this pass began under;
   c. patch their Redis sets (:meth:`MembershipCache.patch_segment`) and clear the outbox row;
3. :func:`_finish`: ``ready`` when neither the definition nor the data under it was changed
   meanwhile (else the pass ends and the segment is recomputed again), and the segments
   built on it are requested when its membership changed.

A pass given a :class:`TimeMark` (the worker's time pass: every stored answer held at an
earlier instant, for this version and request generation of a ``ready`` segment) replaces
step 2's ranges by the users whose answer can have changed by time alone since then
(:func:`shared.conditions.sql_flips.compile_time_flips`, one statement), in chunks of
``RANGE_USERS`` through the same steps b and c (the cursor is not moved: the segment is not
``computing``). Any other state gets the whole pass.

Since the cursor advances with each chunk's commit, a recompute interrupted (a worker killed,
a statement timeout) resumes where it stopped. Members change chunk by chunk while the
segment is ``computing``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from redis.exceptions import RedisError

from shared.attribute_types import load_types
from shared.conditions import Condition, compile_sql, compile_time_flips, parse_condition
from shared.db import Conn
from shared.member_counts import member_count
from shared.membership import outbox
from shared.membership.cache import MembershipCache
from shared.membership.graph import dependents_of, segment_names
from shared.membership.locking import retrying
from shared.membership.progress import Phases, Progress
from shared.membership.store import (
    bump_versions,
    delete_memberships,
    insert_memberships,
    record_changes,
)
from shared.redis_keys import anonymous

log = logging.getLogger(__name__)

#: Users per range: a chunk locks at most this many, for one short transaction.
RANGE_USERS = 2000
#: Seconds a lane's claim on a segment lasts past its last chunk.
LEASE_SECONDS = 60


class RecomputeResult(msgspec.Struct, frozen=True):
    segment_id: int
    version: int
    members: int
    entered: int
    exited: int
    #: the request generation the pass ran under
    generation: int = 0
    #: every user's answer was decided at the pass's ``now`` (a pass from the first user, or
    #: one given a TimeMark) and the segment was marked ``ready`` at the same generation
    whole: bool = False
    #: users whose conditions a TimeMark pass evaluated; None: a pass over every user
    evaluated: int | None = None


class TimeMark(msgspec.Struct, frozen=True):
    """Every user's stored answer to the segment at ``version`` and request ``generation``
    held at ``since`` (or later): a pass at ``now`` need only evaluate the users whose
    answer can change by time alone between ``since`` and ``now``."""

    version: int
    generation: int
    since: datetime


class Superseded(Exception):
    """The segment was redefined, requested again or deleted during the pass."""


@dataclass
class _Pass:
    env_id: int
    segment_id: int
    version: int
    generation: int
    cursor: int
    where: str
    params: list[Any]
    now: datetime
    cause: str
    condition: Condition
    #: ``ready`` at the version it is defined by
    ready: bool
    #: began at a resume cursor: users before it were decided by an earlier pass
    resumed: bool = False
    entered: int = 0
    exited: int = 0
    evaluated: int | None = None

    def args(self, *extra: Any) -> list[Any]:
        """Bind values of the candidate and chunk statements: $1 env, $2 now, $3 the range
        or the chunk, the condition's own parameters, then ``extra``."""
        return [self.env_id, self.now, *extra[:1], *self.params, *extra[1:]]

    def param(self, n: int) -> str:
        """The placeholder of the ``n``-th extra value after the condition's parameters."""
        return f"${3 + len(self.params) + n}"


async def recompute_segment(
    pool: asyncpg.Pool,
    cache: MembershipCache,
    env_id: int,
    segment_id: int,
    now: datetime,
    *,
    wait: bool = True,
    cause: str = "recompute",
    statement_timeout: float | None = None,
    mark: TimeMark | None = None,
) -> RecomputeResult | None:
    """Recompute a dynamic segment's membership for every user (see the module's doc), or
    with ``mark`` only for those whose answer can have changed by time alone since then
    (when ``mark`` still describes the segment, else for every user).

    One recompute of a segment runs at a time (an advisory lock; ``wait=False`` gives up at
    once when another holds it). None when the segment is gone, not dynamic, busy, or was
    changed during the pass (it is then recomputed again). ``statement_timeout`` (seconds)
    bounds each statement: a timeout raises, and the next attempt resumes at the cursor."""
    async with pool.acquire() as conn:
        lock_key = f"recompute:{env_id}:{segment_id}"
        if wait:
            await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", lock_key)
        elif not await conn.fetchval(
            "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", lock_key
        ):
            return None
        progress = Progress(pool, env_id, segment_id)
        try:
            await conn.execute("SET jit = off")  # compiling the expressions costs more
            if statement_timeout is not None:
                await conn.execute(
                    "SELECT set_config('statement_timeout', $1, false)",
                    f"{int(statement_timeout * 1000)}ms",
                )
            return await _run(conn, cache, env_id, segment_id, now, cause, progress, mark)
        finally:
            await progress.done()
            await conn.execute("RESET jit; RESET statement_timeout")
            await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", lock_key)


async def _run(
    conn: Conn,
    cache: MembershipCache,
    env_id: int,
    segment_id: int,
    now: datetime,
    cause: str,
    progress: Progress,
    mark: TimeMark | None,
) -> RecomputeResult | None:
    clock = Phases()
    p = await _begin(conn, env_id, segment_id, now, cause)
    if p is None:
        return None
    if (
        mark is not None
        and p.ready
        and (p.version, p.generation) == (mark.version, mark.generation)
    ):
        try:
            await _run_flipped(conn, cache, p, mark.since)
        except Superseded:
            log.info("segment %s changed during its time pass: it is recomputed", segment_id)
            await _release(conn, p)
            return None
        clock.mark("time pass")
        result = await _finish(conn, p)
        clock.mark("finish")
        log.info(
            "time pass of segment %s (%d users evaluated, +%d -%d): %s",
            segment_id,
            p.evaluated,
            p.entered,
            p.exited,
            clock,
        )
        return result
    await progress.report("selecting")
    bounds = await conn.fetchrow("SELECT min(id), max(id) FROM users WHERE env_id = $1", env_id)
    first, last = (bounds[0], bounds[1]) if bounds is not None else (None, None)
    try:
        while (upper := await _next_upper(conn, p)) is not None:
            candidates = await _candidates(conn, p, upper)
            clock.mark("select")
            changes = await _apply_chunk_retrying(conn, p, candidates, upper)
            clock.mark("write")
            await _patch_cache(conn, cache, p, changes)
            clock.mark("redis")
            p.cursor = upper
            if first is not None and last is not None and last > first:
                await progress.report("writing", (upper - first) / (last - first))
    except Superseded:
        log.info("segment %s changed during its recompute: it is recomputed again", segment_id)
        await _release(conn, p)
        return None
    result = await _finish(conn, p)
    clock.mark("finish")
    log.info(
        "recomputed segment %s (+%d -%d, %d members): %s",
        segment_id,
        p.entered,
        p.exited,
        result.members,
        clock,
    )
    return result


async def _begin(
    conn: Conn, env_id: int, segment_id: int, now: datetime, cause: str
) -> _Pass | None:
    """The pass over the segment as it is now; None when it is gone or not dynamic. Raises
    ConditionError when its conditions no longer compile."""
    seg = await conn.fetchrow(
        """SELECT kind, version, conditions, status, computed_version, recompute_generation,
                  recompute_cursor
           FROM segments WHERE env_id = $1 AND id = $2""",
        env_id,
        segment_id,
    )
    if seg is None or seg["kind"] != "dynamic" or seg["conditions"] is None:
        return None
    types = await load_types(conn, env_id)
    condition = parse_condition(seg["conditions"], types)
    where, params = compile_sql(
        condition,
        alias="u",
        first_param=4,
        now_param=2,
        types=types,
        segments=await segment_names(conn, env_id),
    )
    cursor = seg["recompute_cursor"] if seg["status"] == "computing" else 0
    return _Pass(
        env_id,
        segment_id,
        seg["version"],
        seg["recompute_generation"],
        cursor,
        where,
        params,
        now,
        cause,
        condition,
        ready=seg["status"] == "ready" and seg["computed_version"] == seg["version"],
        resumed=cursor > 0,
    )


async def _next_upper(conn: Conn, p: _Pass) -> int | None:
    """The last user id of the next range after the cursor; None when no user is left."""
    upper: int | None = await conn.fetchval(
        """SELECT max(id) FROM (SELECT id FROM users WHERE env_id = $1 AND id > $2
                                ORDER BY id LIMIT $3) AS r""",
        p.env_id,
        p.cursor,
        RANGE_USERS,
    )
    return upper


def _decide(p: _Pass, users: str) -> str:
    """For the users ``users`` selects (a WHERE over ``users u``): id, whether the condition
    holds, whether the membership is stored."""
    return f"""SELECT u.id, coalesce(({p.where}), false) AS member,
                      EXISTS (SELECT 1 FROM memberships m
                              WHERE m.env_id = $1 AND m.segment_id = {p.param(1)}
                                AND m.user_pk = u.id) AS stored
               FROM users u
               WHERE u.env_id = $1 AND $2::timestamptz IS NOT NULL AND {users}"""


async def _candidates(conn: Conn, p: _Pass, upper: int) -> list[int]:
    """Users of the range (cursor, upper] whose answer differs from what is stored."""
    rows = await conn.fetch(
        f"""SELECT id FROM ({_decide(p, f"u.id > $3 AND u.id <= {p.param(2)}")}) AS d
            WHERE member <> stored""",
        *p.args(p.cursor, p.segment_id, upper),
    )
    return [r["id"] for r in rows]


class _Chunk(msgspec.Struct):
    """What a committed chunk changed, for its Redis step."""

    changes: list[tuple[str, int, bool]]
    outbox_id: int | None = None


async def _run_flipped(conn: Conn, cache: MembershipCache, p: _Pass, since: datetime) -> None:
    """Step 2 for the users whose answer can change by time alone between ``since`` and the
    pass's ``now`` (both included, in either order): selected by one statement that reads
    their time values without evaluating the tree, then decided in chunks as a range is."""
    lo, hi = sorted((since, p.now))
    flips, params = compile_time_flips(
        p.condition, alias="u", first_param=4, since_param=2, until_param=3, env_param=1
    )
    rows = await conn.fetch(
        f"""SELECT u.id FROM users u
            WHERE u.env_id = $1 AND $2::timestamptz <= $3::timestamptz AND {flips}
            ORDER BY u.id""",
        p.env_id,
        lo,
        hi,
        *params,
    )
    users = [r["id"] for r in rows]
    p.evaluated = len(users)
    for start in range(0, len(users), RANGE_USERS):
        chunk = users[start : start + RANGE_USERS]
        differ = await conn.fetch(
            f"""SELECT id FROM ({_decide(p, "u.id = ANY($3::bigint[])")}) AS d
                WHERE member <> stored""",
            *p.args(chunk, p.segment_id),
        )
        if differ:
            changes = await _apply_chunk_retrying(conn, p, [r["id"] for r in differ], None)
            await _patch_cache(conn, cache, p, changes)


async def _apply_chunk(conn: Conn, p: _Pass, candidates: list[int], upper: int | None) -> _Chunk:
    """One transaction: lock ``candidates``, decide again on their committed state, write the
    difference, log it, bump versions, note the outbox, advance the cursor to ``upper`` (if
    given)."""
    async with conn.transaction():
        locked = [
            r["id"]
            for r in await conn.fetch(
                """SELECT id FROM users WHERE env_id = $1 AND id = ANY($2::bigint[])
                   ORDER BY id FOR UPDATE""",
                p.env_id,
                candidates,
            )
        ]
        await _check_current(conn, p)
        # a statement of its own, after the locks: it sees what their holders committed
        rows = await conn.fetch(
            _decide(p, "u.id = ANY($3::bigint[])"), *p.args(locked, p.segment_id)
        )
        entered = [r["id"] for r in rows if r["member"] and not r["stored"]]
        exited = [r["id"] for r in rows if r["stored"] and not r["member"]]
        chunk = _Chunk([])
        if entered or exited:
            chunk = await _write(conn, p, entered, exited)
        if upper is not None:
            await _advance(conn, p, upper)
    return chunk


async def _apply_chunk_retrying(
    conn: Conn, p: _Pass, candidates: list[int], upper: int | None
) -> _Chunk:
    return await retrying(lambda: _apply_chunk(conn, p, candidates, upper), what="recompute chunk")


async def _check_current(conn: Conn, p: _Pass) -> None:
    """Raise Superseded unless the segment is still the one the pass began with (its row
    locked against deletion until the chunk commits)."""
    seg = await conn.fetchrow(
        """SELECT version, recompute_generation FROM segments
           WHERE env_id = $1 AND id = $2 FOR SHARE""",
        p.env_id,
        p.segment_id,
    )
    if seg is None or (seg["version"], seg["recompute_generation"]) != (p.version, p.generation):
        raise Superseded


async def _write(conn: Conn, p: _Pass, entered: list[int], exited: list[int]) -> _Chunk:
    """The chunk's difference: memberships, change log (and webhooks), versions, outbox."""
    await insert_memberships(conn, p.env_id, [p.segment_id] * len(entered), entered)
    await delete_memberships(conn, p.env_id, [p.segment_id] * len(exited), exited)
    changed = entered + exited
    await record_changes(
        conn,
        p.env_id,
        [p.segment_id] * len(changed),
        changed,
        [True] * len(entered) + [False] * len(exited),
        p.cause,
    )
    bumped = await bump_versions(conn, p.env_id, changed)
    into = set(entered)
    changes = [(b.user_id, b.version, b.pk in into) for b in bumped.values() if b.user_id]
    for row in await conn.fetch(
        "SELECT user_pk, anonymous_id FROM identities WHERE env_id = $1 AND user_pk = ANY($2)",
        p.env_id,
        changed,
    ):
        b = bumped[row["user_pk"]]
        changes.append((anonymous(row["anonymous_id"]), b.version, b.pk in into))
    p.entered += len(entered)
    p.exited += len(exited)
    return _Chunk(changes, await outbox.record(conn, p.env_id, sorted(bumped)))


async def _advance(conn: Conn, p: _Pass, upper: int) -> None:
    """Move the resume cursor, and a lane's claim with it."""
    await conn.execute(
        f"""UPDATE segments SET recompute_cursor = $3,
                   recompute_claimed_until = CASE WHEN recompute_claimed_until IS NULL THEN NULL
                       ELSE clock_timestamp() + interval '{LEASE_SECONDS} seconds' END
            WHERE env_id = $1 AND id = $2""",
        p.env_id,
        p.segment_id,
        upper,
    )


async def _patch_cache(conn: Conn, cache: MembershipCache, p: _Pass, chunk: _Chunk) -> None:
    """The chunk's Redis step after its commit; on failure the outbox row stays for the
    worker's sweeper."""
    if not chunk.changes:
        await outbox.done(conn, p.env_id, chunk.outbox_id)
        return
    try:
        await cache.patch_segment(p.env_id, p.segment_id, chunk.changes)
    except (RedisError, OSError) as exc:
        log.warning(
            "recompute of segment %s: Redis not patched (swept later): %s", p.segment_id, exc
        )
        return
    await outbox.done(conn, p.env_id, chunk.outbox_id)


async def _release(conn: Conn, p: _Pass) -> None:
    await conn.execute(
        "UPDATE segments SET recompute_claimed_until = NULL WHERE env_id = $1 AND id = $2",
        p.env_id,
        p.segment_id,
    )


async def _finish(conn: Conn, p: _Pass) -> RecomputeResult:
    """Mark the segment ready (if nothing changed it meanwhile) and request the segments built
    on it when its membership changed; one transaction."""
    async with conn.transaction():
        ready = await conn.fetchval(
            """UPDATE segments SET status = 'ready', status_reason = NULL, computed_version = $3,
                      recompute_cursor = 0, recompute_attempts = 0, recompute_claimed_until = NULL
               WHERE env_id = $1 AND id = $2 AND version = $3 AND recompute_generation = $4
               RETURNING true""",
            p.env_id,
            p.segment_id,
            p.version,
            p.generation,
        )
        if not ready:
            await _release(conn, p)
        if p.entered or p.exited:
            dependents = await dependents_of(conn, p.env_id, p.segment_id)
            if dependents:
                await conn.execute(
                    """UPDATE segments SET status = 'computing'
                       WHERE env_id = $1 AND id = ANY($2::bigint[])""",
                    p.env_id,
                    dependents,
                )
        members = await member_count(conn, p.env_id, "s", p.segment_id)
    return RecomputeResult(
        p.segment_id,
        p.version,
        members,
        p.entered,
        p.exited,
        generation=p.generation,
        whole=bool(ready) and not p.resumed,
        evaluated=p.evaluated,
    )


async def recompute_with_dependents(
    pool: asyncpg.Pool,
    cache: MembershipCache,
    env_id: int,
    segment_id: int,
    now: datetime,
    *,
    wait: bool = True,
    cause: str = "recompute",
    mark: TimeMark | None = None,
) -> list[RecomputeResult]:
    """Recompute a segment (given ``mark``: see :func:`recompute_segment`), then (if its
    membership changed) every segment built on it, in dependency order, here and now.
    Returns the results of the passes that ran: the segment's first (none when it was
    gone, busy or changed meanwhile), then its dependents'."""
    result = await recompute_segment(
        pool, cache, env_id, segment_id, now, wait=wait, cause=cause, mark=mark
    )
    if result is None:
        return []
    results = [result]
    if not (result.entered or result.exited):
        return results
    async with pool.acquire() as conn:
        dependents = await dependents_of(conn, env_id, segment_id)
    for dependent in dependents:
        done = await recompute_segment(pool, cache, env_id, dependent, now, cause=cause)
        if done is not None:
            results.append(done)
    return results
