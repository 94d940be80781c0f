"""The Redis copy of per-user memberships, and the PostgreSQL reads that refill it.

Each user's memberships live in one Redis set (:func:`shared.redis_keys.membership_key`) of
segment ids plus one marker member ``_<version>``: the user's ``membership_version`` in
PostgreSQL when the set was written. A set without a marker is incomplete and counts as a miss.

Every write goes through one Lua script that replaces the set only when its version is newer
than the one stored, so writers racing each other (the worker after a batch, a bulk recompute,
the query service refilling after a miss) can land in any order and the newest state wins.

A bulk recompute changes one segment for many users; instead of reloading each one's whole
set from PostgreSQL it *patches* the sets (:meth:`MembershipCache.patch_segment`): a set at
exactly the version before the recompute's gets the segment added or removed and the new
version; any other set (missing, or behind) becomes a *hold* ``~<version>``: a set with no
``_`` marker, so a read misses and refills from PostgreSQL, but whose version still turns away
late writes of older states.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Mapping

import asyncpg
import redis.asyncio as aioredis
from hiredis import pack_command
from redis.exceptions import NoScriptError, ResponseError

from shared.db import Conn
from shared.metrics import CACHE_MISSES, CACHE_REFILLS
from shared.redis_keys import ANONYMOUS_MARK, anonymous, membership_key

#: Seconds a membership set lives in Redis; a miss is refilled from PostgreSQL.
SET_TTL = 7 * 24 * 3600
#: Seconds the "unknown user" answer is cached.
UNKNOWN_TTL = 30
MARKER = "_"
#: Marker of a hold: the version is known, the contents are not (a read misses).
HOLD = "~"
#: Seconds a hold lives: longer than any write still in flight for an older version.
HOLD_TTL = 600

# Replace the set by version ARGV[1] (TTL ARGV[2], segment ids ARGV[3:]) unless the stored
# one wins: ``{keeps}`` (v: its version, c: '_' complete or '~' hold).
_REPLACE = """
local new = tonumber(ARGV[1])
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local c = string.sub(m, 1, 1)
  if c == '_' or c == '~' then
    local v = tonumber(string.sub(m, 2))
    if v ~= nil and ({keeps}) then return 0 end
  end
end
redis.call('DEL', KEYS[1])
redis.call('SADD', KEYS[1], '_' .. ARGV[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
# A write: a complete set at version >= ours, or a hold at a version > ours, wins.
_REPLACE_IF_NEWER = _REPLACE.replace("{keeps}", "v > new or (v == new and c == '_')")
# A repair (the verifier found the set wrong): only a newer version wins.
_REPAIR = _REPLACE.replace("{keeps}", "v > new")

# KEYS: the users' keys; ARGV: segment id, hold TTL, then per key its new version and 1 (the
# user entered) or 0 (exited). Returns how many sets were patched (the others hold).
_PATCH_SEGMENT = """
local seg, hold = ARGV[1], ARGV[2]
local patched = 0
for i, key in ipairs(KEYS) do
  local new = tonumber(ARGV[2 * i + 1])
  local v, complete, marker = nil, false, nil
  for _, m in ipairs(redis.call('SMEMBERS', key)) do
    local c = string.sub(m, 1, 1)
    if c == '_' or c == '~' then
      v = tonumber(string.sub(m, 2))
      complete, marker = c == '_', m
    end
  end
  if v == nil or v < new then
    if complete and v == new - 1 then
      redis.call('SREM', key, marker)
      if ARGV[2 * i + 2] == '1' then
        redis.call('SADD', key, seg, '_' .. new)
      else
        redis.call('SREM', key, seg)
        redis.call('SADD', key, '_' .. new)
      end
      patched = patched + 1
    else
      redis.call('DEL', key)
      redis.call('SADD', key, '~' .. new)
      redis.call('EXPIRE', key, hold)
    end
  end
end
return patched
"""


def parse_members(members: Iterable[str]) -> tuple[int | None, set[int]]:
    """(version, segment ids) of a Redis set's members; version None means incomplete."""
    version: int | None = None
    segments: set[int] = set()
    for member in members:
        if member.startswith(MARKER):
            try:
                version = int(member[1:])
            except ValueError:
                continue
        elif not member.startswith(HOLD):
            segments.add(int(member))
    return version, segments


class MembershipCache:
    """Reads and writes the per-user membership sets of one deployment (Redis key prefix)."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._sha = hashlib.sha1(_REPLACE_IF_NEWER.encode()).hexdigest()  # noqa: S324
        self._patch_sha = hashlib.sha1(_PATCH_SEGMENT.encode()).hexdigest()  # noqa: S324
        self._repair_sha = hashlib.sha1(_REPAIR.encode()).hexdigest()  # noqa: S324

    def key(self, env_id: int, user_id: str) -> str:
        return membership_key(self.prefix, env_id, user_id)

    async def get(self, env_id: int, user_id: str) -> set[int] | None:
        """The user's segment ids, or None when Redis has no complete answer."""
        members = await self.redis.smembers(self.key(env_id, user_id))  # type: ignore[misc]
        version, segments = parse_members(
            m.decode() if isinstance(m, bytes) else m for m in members
        )
        return None if version is None else segments

    async def write(self, env_id: int, user_id: str, version: int, segments: Iterable[int]) -> None:
        """Store one user's complete set unless Redis already holds a newer one (the query
        service's refill after a miss)."""
        CACHE_REFILLS.inc()
        ttl = SET_TTL if version > 0 else UNKNOWN_TTL
        await self._replace(
            [(self.key(env_id, user_id), [str(version), str(ttl), *map(str, segments)])]
        )

    async def _replace(self, calls: list[tuple[str, list[str]]]) -> None:
        """Run the replace-if-newer script once per (key, args)."""
        await self._evalsha(_REPLACE_IF_NEWER, self._sha, [([key], args) for key, args in calls])

    async def _evalsha(
        self, script: str, sha: str, calls: list[tuple[list[str], list[str]]]
    ) -> list[object]:
        """Run ``script`` once per (keys, args) by EVALSHA, all commands packed (by hiredis)
        and sent at once on one connection: per call this costs a third of a redis-py
        pipeline. The script is loaded on the first NOSCRIPT (a new or flushed Redis) and the
        batch re-run (the scripts are idempotent). Returns the replies."""
        for attempt in range(2):
            packed = b"".join(
                pack_command(("EVALSHA", sha, len(keys), *keys, *args))  # type: ignore[arg-type]
                for keys, args in calls
            )
            pool = self.redis.connection_pool
            conn = await pool.get_connection()
            missing_script = False
            error: ResponseError | None = None
            replies: list[object] = []
            try:
                await conn.send_packed_command(packed)
                for _ in calls:
                    try:
                        replies.append(await conn.read_response())
                    except NoScriptError:
                        missing_script = True
                    except ResponseError as exc:
                        error = exc
            except BaseException:
                await conn.disconnect()  # mid-stream: the connection can't be reused
                raise
            finally:
                await pool.release(conn)
            if error is not None:
                raise error
            if not missing_script:
                return replies
            if attempt:
                raise NoScriptError("the membership script could not be loaded")
            await self.redis.script_load(script)
        raise AssertionError("unreachable")

    async def write_many(
        self,
        env_id: int,
        sets: Mapping[str, tuple[int, Iterable[int]]],
        chunk: int = 1000,
    ) -> None:
        """Store many users' complete sets ({user_id: (version, segment ids)}), pipelined."""
        items = list(sets.items())
        for start in range(0, len(items), chunk):
            await self._replace(
                [
                    (self.key(env_id, user_id), [str(version), str(SET_TTL), *map(str, segments)])
                    for user_id, (version, segments) in items[start : start + chunk]
                ]
            )

    async def patch_segment(
        self,
        env_id: int,
        segment_id: int,
        changes: Iterable[tuple[str, int, bool]],
        keys_per_call: int = 100,
        calls_per_send: int = 50,
    ) -> int:
        """Apply one segment's entries and exits ({user_id or anonymous id, new version,
        entered}) to the users' sets: each set at exactly ``version - 1`` is patched, every
        other (missing, behind) becomes a hold at ``version`` (see the module's doc); sets
        already at ``version`` or newer are left alone. Returns how many were patched."""
        items = list(changes)
        head = [str(segment_id), str(HOLD_TTL)]
        step = keys_per_call * calls_per_send

        async def send(starts: range) -> int:
            patched = 0
            for start in starts:
                calls: list[tuple[list[str], list[str]]] = []
                for first in range(start, min(start + step, len(items)), keys_per_call):
                    chunk = items[first : min(first + keys_per_call, start + step)]
                    args = list(head)
                    for _, version, entered in chunk:
                        args.append(str(version))
                        args.append("1" if entered else "0")
                    calls.append(([self.key(env_id, user) for user, _, _ in chunk], args))
                replies = await self._evalsha(_PATCH_SEGMENT, self._patch_sha, calls)
                patched += sum(int(r) for r in replies)  # type: ignore[call-overload]
            return patched

        # two senders: one prepares its next batch while Redis runs the other's
        counts = await asyncio.gather(
            send(range(0, len(items), 2 * step)), send(range(step, len(items), 2 * step))
        )
        return sum(counts)

    async def repair(self, env_id: int, sets: Mapping[str, tuple[int, Iterable[int]]]) -> int:
        """Overwrite sets found wrong ({user_id: (version, segment ids)} as PostgreSQL has
        them), even at the same version, unless Redis already holds a newer one. Returns
        how many were written."""
        calls = [
            ([self.key(env_id, user_id)], [str(version), str(SET_TTL), *map(str, segments)])
            for user_id, (version, segments) in sets.items()
        ]
        if not calls:
            return 0
        replies = await self._evalsha(_REPAIR, self._repair_sha, calls)
        return sum(int(r) for r in replies)  # type: ignore[call-overload]

    async def hold(
        self, env_id: int, user_ids: Iterable[str], version: int, ttl: int = UNKNOWN_TTL
    ) -> None:
        """Replace the users' sets by holds at ``version`` for ``ttl`` seconds, whatever they
        held (an erase: a read misses and asks PostgreSQL; older writes are turned away)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for user_id in user_ids:
                key = self.key(env_id, user_id)
                pipe.delete(key)
                pipe.sadd(key, f"{HOLD}{version}")
                pipe.expire(key, ttl)
            await pipe.execute()

    async def forget(self, env_id: int, user_ids: Iterable[str]) -> None:
        keys = [self.key(env_id, u) for u in user_ids]
        if keys:
            await self.redis.delete(*keys)


# $3: whether $2 is an anonymous id (separate namespaces: a userId never matches an
# anonymous id); the other branch is a one-time filter, never scanned
_LOAD_ONE = """
WITH target AS (
    SELECT id, membership_version FROM users WHERE env_id = $1 AND user_id = $2 AND NOT $3
    UNION ALL
    SELECT u.id, u.membership_version
    FROM identities i JOIN users u ON u.env_id = i.env_id AND u.id = i.user_pk
    WHERE i.env_id = $1 AND i.anonymous_id = $2 AND $3
)
SELECT t.membership_version AS version,
       coalesce(array_agg(m.segment_id) FILTER (WHERE m.segment_id IS NOT NULL), '{}') AS segments
FROM target t LEFT JOIN memberships m ON m.env_id = $1 AND m.user_pk = t.id
GROUP BY t.membership_version
"""

_LOAD_MANY = """
WITH sets AS (
    SELECT u.id, u.user_id, u.membership_version AS version,
           coalesce(array_agg(m.segment_id) FILTER (WHERE m.segment_id IS NOT NULL), '{}')
             AS segments
    FROM users u LEFT JOIN memberships m ON m.env_id = u.env_id AND m.user_pk = u.id
    WHERE u.env_id = $1 AND u.id = ANY($2::bigint[])
    GROUP BY u.env_id, u.id
)
SELECT s.user_id AS key, false AS anonymous, s.version, s.segments
FROM sets s WHERE s.user_id IS NOT NULL
UNION ALL
SELECT i.anonymous_id, true, s.version, s.segments
FROM sets s JOIN identities i ON i.env_id = $1 AND i.user_pk = s.id
"""


async def load_user_memberships(
    conn: Conn | asyncpg.Pool, env_id: int, user_id: str
) -> tuple[int, set[int]] | None:
    """(membership_version, segment ids) of a user from PostgreSQL, by userId or by anonymous
    id (marked by :func:`shared.redis_keys.anonymous`); None when there is no such user.
    (The query service's read after a Redis miss: counted as one.)"""
    CACHE_MISSES.inc()
    is_anonymous = user_id.startswith(ANONYMOUS_MARK)
    row = await conn.fetchrow(_LOAD_ONE, env_id, user_id.removeprefix(ANONYMOUS_MARK), is_anonymous)
    if row is None:
        return None
    return row["version"], set(row["segments"])


async def load_memberships_by_pk(
    conn: Conn | asyncpg.Pool, env_id: int, user_pks: list[int]
) -> dict[str, tuple[int, list[int]]]:
    """{key: (membership_version, segment ids)} for ``user_pks``: one entry per userId and
    per anonymous id resolving to them (every Redis key that answers for these users)."""
    rows = await conn.fetch(_LOAD_MANY, env_id, user_pks)
    return {
        anonymous(r["key"]) if r["anonymous"] else r["key"]: (r["version"], list(r["segments"]))
        for r in rows
    }


async def rebuild_cache(
    pool: asyncpg.Pool, cache: MembershipCache, env_id: int | None = None, chunk: int = 5000
) -> int:
    """Refill every identified user's Redis set from PostgreSQL (all environments, or one);
    returns how many sets were written. Sets are replaced only by newer versions, so this can
    run while the worker writes."""
    written = 0
    envs = (
        [env_id]
        if env_id is not None
        else [r["id"] for r in await pool.fetch("SELECT id FROM environments ORDER BY id")]
    )
    for env in envs:
        after = 0
        while True:
            pks = [
                r["id"]
                for r in await pool.fetch(
                    "SELECT id FROM users WHERE env_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                    env,
                    after,
                    chunk,
                )
            ]
            if not pks:
                break
            sets = await load_memberships_by_pk(pool, env, pks)
            await cache.write_many(env, sets)
            written += len(sets)
            after = pks[-1]
    return written
