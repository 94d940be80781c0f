"""A user's segment ids: the Redis set first (one round trip), PostgreSQL on a miss.

A miss (no set, or a set without its version marker) is answered from PostgreSQL and the set is
refilled through :class:`MembershipCache`, whose versioned write never replaces a newer set.
When Redis is unreachable the answer still comes from PostgreSQL (Redis is only a cache), and
for a second after each failure Redis is not even tried, so an outage costs no timeouts.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import asyncpg
from redis.exceptions import RedisError

from services.query.redis_reader import PipelinedReader
from shared.membership.cache import MembershipCache, load_user_memberships, parse_members
from shared.metrics import CACHE_HITS

log = logging.getLogger(__name__)

#: After a Redis error, reads skip Redis for this long (then try it again).
REDIS_RETRY_SECONDS = 1.0


class Memberships:
    """Reads one environment user's memberships for the query service."""

    def __init__(
        self, cache: MembershipCache, pool: asyncpg.Pool, reader: PipelinedReader | None = None
    ) -> None:
        self.cache = cache
        self.pool = pool
        #: The hot read goes through the pipelined connection when there is one.
        self.smembers = reader.smembers if reader is not None else self._smembers
        self._redis_retry_at = 0.0
        self._redis_down = False

    def _redis_failed(self, exc: RedisError) -> None:
        """Answer from PostgreSQL alone for REDIS_RETRY_SECONDS: while Redis is down every
        request would otherwise pay a failed connection (or the reader's timeout) first."""
        self._redis_retry_at = time.monotonic() + REDIS_RETRY_SECONDS
        if not self._redis_down:
            self._redis_down = True
            log.warning("redis unavailable, answering from PostgreSQL: %r", exc)

    async def _smembers(self, key: str) -> Any:
        return await self.cache.redis.smembers(key)  # type: ignore[misc]

    async def read(self, env_id: int, user_id: str) -> tuple[bool, set[int]]:
        """(known, segment ids) of ``user_id`` (a userId or an anonymous id).

        ``known`` is False for a user the system has never seen (version 0, no segments): such
        a user is a member of nothing, not even "All users".
        """
        if time.monotonic() < self._redis_retry_at:  # Redis is down: don't wait for it
            return await self._load(env_id, user_id, refill=False)
        try:
            raw = await self.smembers(self.cache.key(env_id, user_id))
        except RedisError as exc:
            self._redis_failed(exc)
            return await self._load(env_id, user_id, refill=False)
        if self._redis_down:
            self._redis_down = False
            log.warning("redis answers again")
        # Same parse as MembershipCache.get, but we also need the version (known user or not).
        version, segments = parse_members(m.decode() if isinstance(m, bytes) else m for m in raw)
        if version is None:
            return await self._load(env_id, user_id, refill=True)
        CACHE_HITS.inc()
        return version > 0 or bool(segments), segments

    async def _load(self, env_id: int, user_id: str, *, refill: bool) -> tuple[bool, set[int]]:
        loaded = await load_user_memberships(self.pool, env_id, user_id)
        version, segments = (0, set()) if loaded is None else loaded
        if refill:
            try:
                await self.cache.write(env_id, user_id, version, segments)
            except RedisError as exc:
                self._redis_failed(exc)
        return version > 0 or bool(segments), segments
