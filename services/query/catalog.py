"""Segment metadata (id, key, name) per environment, held in process memory.

The query service answers "which segments is U in" from Redis sets of segment ids; this catalog
turns ids into ``{"id", "key", "name"}`` and keys into ids. It is never older than ``ttl``
seconds: once it is half that old, the next request starts a reload in the background and is
answered from the current one, so that under traffic no request waits for PostgreSQL (a reload
awaited by every request in flight was the query service's worst tail latency); only after a
quiet spell longer than ``ttl`` does a request wait for the reload. It is also reloaded at once
when a caller names a key or id it does not know (so a segment
created a moment ago is found, not answered with 404). A check naming many keys
(:meth:`SegmentKeyCache.resolve_many`) reloads at most once, and remembers the names still
unknown for :data:`UNKNOWN_SECONDS`: a flood of unknown names (1,000 in one check, or the same
ones in every check) no longer costs a load each. Ids found in a membership set but not in
the catalog belong to deleted segments and are left out of every answer.
"""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg
import msgspec


class SegmentRef(msgspec.Struct, frozen=True):
    """What the query API says about a segment."""

    id: str
    key: str
    name: str


class SegmentKeys:
    """One environment's segment keys and ids, as the query service resolves them, loaded at
    ``loaded_at`` (monotonic seconds). (Not the worker's compiled segments:
    :class:`shared.membership.EnvSegments`.)"""

    __slots__ = ("all_id", "by_id", "by_key", "high_water", "loaded_at")

    def __init__(self, rows: list[asyncpg.Record], high_water: int, loaded_at: float) -> None:
        self.by_id: dict[int, SegmentRef] = {}
        self.by_key: dict[str, int] = {}
        self.all_id: int | None = None
        for row in rows:
            self.by_id[row["id"]] = SegmentRef(str(row["id"]), row["key"], row["name"])
            self.by_key[row["key"]] = row["id"]
            if row["kind"] == "all":
                self.all_id = row["id"]
        #: Every segment id up to this one had been handed out before ``rows`` were read, so a
        #: missing id at or below it is a deleted segment, one above it a segment newer than us.
        self.high_water = high_water
        self.loaded_at = loaded_at

    def lookup(self, ref: str) -> int | None:
        """The id of the segment with key ``ref``, else with id ``ref``, else None."""
        found = self.by_key.get(ref)
        if found is None and ref.isascii() and ref.isdigit():
            candidate = int(ref)
            if candidate in self.by_id:
                return candidate
        return found


#: How long a name a check found in no segment is answered "unknown" without a reload (a
#: segment created with that key within it reads as unknown to checks for that long).
UNKNOWN_SECONDS = 1.0
#: Unknown names remembered per environment at most (a flood of random names must not grow
#: memory for ever).
MAX_UNKNOWN = 10_000

log = logging.getLogger(__name__)

#: Fraction of ``ttl`` after which a request starts a background reload.
REFRESH_AT = 0.5

_LOAD = "SELECT id, key, name, kind FROM segments WHERE env_id = $1"
_HIGH_WATER = "SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('segments', 'id')), 0)"


class SegmentKeyCache:
    """Per-environment :class:`SegmentKeys`, reloaded every ``ttl`` seconds or on demand."""

    def __init__(self, pool: asyncpg.Pool, ttl: float) -> None:
        self.pool = pool
        self.ttl = ttl
        self._envs: dict[int, SegmentKeys] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        #: env id -> name -> monotonic time until which it is known to be unknown
        self._unknown: dict[int, dict[str, float]] = {}
        #: env id -> its background reload in flight
        self._refreshing: dict[int, asyncio.Task[SegmentKeys]] = {}
        #: loads from PostgreSQL so far (for tests and operators)
        self.loads = 0
        #: of which loads asked for by a name or id the catalog did not know
        self.unknown_loads = 0

    async def get(self, env_id: int) -> SegmentKeys:
        """The environment's segments, no older than ``ttl`` seconds."""
        current = self._envs.get(env_id)
        now = time.monotonic()
        if current is not None:
            age = now - current.loaded_at
            if age < self.ttl:
                if age >= self.ttl * REFRESH_AT and env_id not in self._refreshing:
                    self._refresh(env_id, now)
                return current
        return await self._reload(env_id, since=now - self.ttl)

    def _refresh(self, env_id: int, now: float) -> None:
        """Reload in the background. A failure is logged once and not retried in the
        background (PostgreSQL down would otherwise be asked again by every request): the
        failed task stays in ``_refreshing`` until a reload succeeds, at the latest the one
        a request waits for once the catalog is ``ttl`` old."""
        task = asyncio.ensure_future(self._reload(env_id, since=now))
        self._refreshing[env_id] = task

        def done(task: asyncio.Task[SegmentKeys]) -> None:
            if not task.cancelled() and (exc := task.exception()) is not None:
                log.warning("reloading the segment catalog failed: %r", exc)
            elif self._refreshing.get(env_id) is task:
                del self._refreshing[env_id]

        task.add_done_callback(done)

    async def covering(self, env_id: int, ids: set[int]) -> SegmentKeys:
        """The environment's segments, reloaded first when ``ids`` (from a membership set)
        hold a segment created after the last load."""
        segments = await self.get(env_id)
        if any(i > segments.high_water and i not in segments.by_id for i in ids):
            self.unknown_loads += 1
            segments = await self._reload(env_id, since=time.monotonic())
        return segments

    async def resolve(self, env_id: int, ref: str) -> tuple[SegmentKeys, int | None]:
        """(segments, id of the segment named by key or id ``ref`` or None when it does not
        exist). An unknown ``ref`` triggers a reload begun after this call, so the answer None
        is never older than the question."""
        segments = await self.get(env_id)
        found = segments.lookup(ref)
        if found is None:
            self.unknown_loads += 1
            segments = await self._reload(env_id, since=time.monotonic())
            found = segments.lookup(ref)
        return segments, found

    async def resolve_many(
        self, env_id: int, refs: list[str], segments: SegmentKeys
    ) -> tuple[SegmentKeys, dict[str, int | None]]:
        """Like :meth:`resolve` for many keys or ids, starting from ``segments``: one reload
        at most, and none for names found unknown less than :data:`UNKNOWN_SECONDS` ago."""
        now = time.monotonic()
        unknown = self._unknown.get(env_id, {})
        found = {ref: segments.lookup(ref) for ref in refs}
        if any(i is None and unknown.get(ref, 0.0) <= now for ref, i in found.items()):
            self.unknown_loads += 1
            segments = await self._reload(env_id, since=now)
            found = {ref: segments.lookup(ref) for ref in refs}
            unknown = self._unknown.setdefault(env_id, {})
            if len(unknown) > MAX_UNKNOWN:
                unknown.clear()
            until = time.monotonic() + UNKNOWN_SECONDS
            for ref, segment_id in found.items():
                if segment_id is None:
                    unknown[ref] = until
        return segments, found

    async def _reload(self, env_id: int, since: float) -> SegmentKeys:
        """Load unless another task already began a load at or after ``since``; concurrent
        callers share one query (one in flight per environment)."""
        lock = self._locks.get(env_id)
        if lock is None:
            lock = self._locks.setdefault(env_id, asyncio.Lock())
        async with lock:
            current = self._envs.get(env_id)
            if current is not None and current.loaded_at >= since:
                return current
            started = time.monotonic()
            self.loads += 1
            async with self.pool.acquire() as conn:
                high_water = await conn.fetchval(_HIGH_WATER)
                rows = await conn.fetch(_LOAD, env_id)
            fresh = SegmentKeys(rows, high_water, started)
            self._envs[env_id] = fresh
            failed = self._refreshing.get(env_id)
            if failed is not None and failed.done():  # background reloads may run again
                del self._refreshing[env_id]
            return fresh
