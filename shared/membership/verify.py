"""The cache verifier: every membership set in Redis compared with PostgreSQL, drift repaired.

Only a complete set can serve a wrong answer (a missing set or a hold is read from
PostgreSQL), so the verifier walks the sets Redis holds (``SCAN``), not the users: it also
finds sets of users PostgreSQL no longer knows. A set disagrees when its segment ids (those
of segments that still exist) differ from the stored memberships of the user its key
resolves to, or when it answers for nobody. A set found wrong is looked at again after
``recheck_after`` seconds (a writer between its commit and its Redis step is not drift),
and only then counted and, with ``repair``, overwritten from PostgreSQL.

The worker runs it in the background, a slice at a time; ``segments verify-cache`` runs it
over everything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Iterable

import asyncpg
import msgspec

from shared.membership.cache import MembershipCache, parse_members
from shared.metrics import CACHE_DRIFT_REPAIRS
from shared.redis_keys import ANONYMOUS_MARK, cache_repaired_at_key, cache_repairs_key

log = logging.getLogger(__name__)

# $2 ids, $3 whether each is an anonymous id (separate namespaces, as the query service reads)
_LOAD_IDENTS = """
SELECT k.n, t.version, t.segments
FROM unnest($2::text[], $3::bool[]) WITH ORDINALITY AS k(ident, anon, n)
LEFT JOIN LATERAL (
    SELECT x.membership_version AS version,
           array(SELECT m.segment_id FROM memberships m
                 WHERE m.env_id = $1 AND m.user_pk = x.id) AS segments
    FROM (SELECT id, membership_version FROM users
          WHERE env_id = $1 AND user_id = k.ident AND NOT k.anon
          UNION ALL
          SELECT u.id, u.membership_version FROM identities i
          JOIN users u ON u.env_id = i.env_id AND u.id = i.user_pk
          WHERE i.env_id = $1 AND i.anonymous_id = k.ident AND k.anon) AS x
) AS t ON true
"""


class Drift(msgspec.Struct, kw_only=True):
    """What a verification found: sets compared, sets that disagree, sets repaired."""

    checked: int = 0
    disagreeing: int = 0
    repaired: int = 0
    #: a few of the disagreeing keys ("env:user"), for the log
    examples: list[str] = []

    def add(self, other: Drift) -> None:
        self.checked += other.checked
        self.disagreeing += other.disagreeing
        self.repaired += other.repaired
        self.examples = (self.examples + other.examples)[:10]


class CacheVerifier:
    """Compares the Redis sets of one deployment (key prefix) with PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool, cache: MembershipCache) -> None:
        self.pool = pool
        self.cache = cache
        #: userIds' keys and anonymous ids' keys (their own namespace, ``:a:``)
        self.heads = {f"{cache.prefix}:m:{{": "", f"{cache.prefix}:a:{{": ANONYMOUS_MARK}
        self.pattern = f"{cache.prefix}:[am]:{{"
        #: where the background slices go on (0: the next slice starts a new round)
        self.cursor = 0

    async def verify_all(
        self, *, repair: bool, recheck_after: float = 1.0, env_id: int | None = None
    ) -> Drift:
        """Every set (of one environment, or all), in slices."""
        total = Drift()
        cursor = 0
        match = self.pattern + ("*" if env_id is None else f"{env_id}:*")
        while True:
            cursor, keys = await self.cache.redis.scan(cursor, match=match, count=2000)
            total.add(await self.verify_keys(keys, repair=repair, recheck_after=recheck_after))
            if cursor == 0:
                return total

    async def verify_slice(self, *, repair: bool, recheck_after: float = 1.0) -> Drift:
        """The next slice of a round that goes on where the last call stopped."""
        self.cursor, keys = await self.cache.redis.scan(
            self.cursor, match=self.pattern + "*", count=2000
        )
        return await self.verify_keys(keys, repair=repair, recheck_after=recheck_after)

    async def verify_keys(
        self, keys: Iterable[bytes | str], *, repair: bool, recheck_after: float
    ) -> Drift:
        by_env: dict[int, list[str]] = defaultdict(list)
        for key in keys:
            parsed = self._parse(key.decode() if isinstance(key, bytes) else key)
            if parsed is not None:
                by_env[parsed[0]].append(parsed[1])
        drift = Drift()
        for env_id, idents in by_env.items():
            wrong = await self._disagreeing(env_id, idents)
            drift.checked += len(idents)
            if wrong and recheck_after > 0:
                await asyncio.sleep(recheck_after)
                wrong = await self._disagreeing(env_id, sorted(wrong))
            if not wrong:
                continue
            drift.disagreeing += len(wrong)
            drift.examples += [f"{env_id}:{i!r}" for i in sorted(wrong)[:10]]
            if repair:
                drift.repaired += await self._repair(env_id, wrong)
        if drift.disagreeing:
            log.warning(
                "membership cache: %d of %d sets disagreed with PostgreSQL (%d repaired): %s",
                drift.disagreeing,
                drift.checked,
                drift.repaired,
                ", ".join(drift.examples[:5]),
            )
        return drift

    def _parse(self, key: str) -> tuple[int, str] | None:
        """(env id, user as the cache names it) of a membership key
        ``<prefix>:m:{<env>:<userId>}`` or ``<prefix>:a:{<env>:<anonymous id>}``."""
        for head, mark in self.heads.items():
            if key.startswith(head) and key.endswith("}"):
                env, sep, user = key[len(head) : -1].partition(":")
                if sep and env.isdigit():
                    return int(env), mark + user
        return None

    async def _disagreeing(
        self, env_id: int, idents: list[str]
    ) -> dict[str, tuple[int, list[int]] | None]:
        """{user id: PostgreSQL's (version, segments), None for nobody} of the complete sets
        among ``idents`` that disagree with it."""
        async with self.cache.redis.pipeline(transaction=False) as pipe:
            for ident in idents:
                pipe.smembers(self.cache.key(env_id, ident))
            replies = await pipe.execute()
        rows = await self.pool.fetch(
            _LOAD_IDENTS,
            env_id,
            [i.removeprefix(ANONYMOUS_MARK) for i in idents],
            [i.startswith(ANONYMOUS_MARK) for i in idents],
        )
        existing = {
            r["id"]
            for r in await self.pool.fetch("SELECT id FROM segments WHERE env_id = $1", env_id)
        }
        stored = {idents[r["n"] - 1]: r for r in rows}
        wrong: dict[str, tuple[int, list[int]] | None] = {}
        for ident, members in zip(idents, replies, strict=True):
            version, cached = parse_members(
                m.decode() if isinstance(m, bytes) else m for m in members
            )
            if version is None:
                continue  # no set (any more), or a hold: read from PostgreSQL
            row = stored.get(ident)
            if row is None or row["version"] is None:
                if version > 0 or cached & existing:
                    wrong[ident] = None
            elif cached & existing != set(row["segments"]) & existing:
                wrong[ident] = (row["version"], list(row["segments"]))
        return wrong

    async def _repair(self, env_id: int, wrong: dict[str, tuple[int, list[int]] | None]) -> int:
        """Overwrite the sets found wrong; a set of nobody is deleted (a read asks PostgreSQL).
        Counted in Redis (``<prefix>:cache-repairs``, the time in ``<prefix>:cache-repaired-at``)
        and in this process's ``segments_cache_drift_repairs_total``."""
        gone = [ident for ident, found in wrong.items() if found is None]
        sets = {ident: found for ident, found in wrong.items() if found is not None}
        repaired = await self.cache.repair(env_id, sets)
        if gone:
            await self.cache.forget(env_id, gone)
            repaired += len(gone)
        if repaired:
            CACHE_DRIFT_REPAIRS.inc(repaired)
            prefix = self.cache.prefix
            async with self.cache.redis.pipeline(transaction=False) as pipe:
                pipe.incrby(cache_repairs_key(prefix), repaired)
                pipe.set(cache_repaired_at_key(prefix), str(int(time.time())))
                await pipe.execute()
        return repaired
