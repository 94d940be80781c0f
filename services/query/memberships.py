"""A user's segment ids: the Redis set first (one round trip), PostgreSQL on a miss.

A miss (no set, or a set without its version marker) is answered from PostgreSQL and the set is
refilled through :class:`MembershipCache`, whose versioned write never replaces a newer set.
When Redis is unreachable the answer still comes from PostgreSQL: Redis is only a cache.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from redis.exceptions import RedisError

from services.query.redis_reader import PipelinedReader
from shared.membership_cache import MembershipCache, load_user_memberships, parse_members

log = logging.getLogger(__name__)


class Memberships:
    """Reads one environment user's memberships for the query service."""

    def __init__(
        self, cache: MembershipCache, pool: asyncpg.Pool, reader: PipelinedReader | None = None
    ) -> None:
        self.cache = cache
        self.pool = pool
        #: The hot read goes through the pipelined connection when there is one.
        self.smembers = reader.smembers if reader is not None else self._smembers

    async def _smembers(self, key: str) -> Any:
        return await self.cache.redis.smembers(key)  # type: ignore[misc]

    async def read(self, env_id: int, user_id: str) -> tuple[bool, set[int]]:
        """(known, segment ids) of ``user_id`` (a userId or an anonymous id).

        ``known`` is False for a user the system has never seen (version 0, no segments): such
        a user is a member of nothing, not even "All users".
        """
        try:
            raw = await self.smembers(self.cache.key(env_id, user_id))
        except RedisError as exc:
            log.warning("redis read failed, answering from PostgreSQL: %s", exc)
            return await self._load(env_id, user_id, refill=False)
        # Same parse as MembershipCache.get, but we also need the version (known user or not).
        version, segments = parse_members(m.decode() if isinstance(m, bytes) else m for m in raw)
        if version is None:
            return await self._load(env_id, user_id, refill=True)
        return version > 0 or bool(segments), segments

    async def _load(self, env_id: int, user_id: str, *, refill: bool) -> tuple[bool, set[int]]:
        loaded = await load_user_memberships(self.pool, env_id, user_id)
        version, segments = (0, set()) if loaded is None else loaded
        if refill:
            try:
                await self.cache.write(env_id, user_id, version, segments)
            except RedisError as exc:
                log.warning("redis refill failed: %s", exc)
        return version > 0 or bool(segments), segments
