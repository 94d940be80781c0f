"""The lock order every writer of memberships follows, and the retry of what still conflicts.

Order (a transaction takes what it needs, in this order, and nothing earlier afterwards):

1. the environment's *definitions* lock (advisory ``(DEFINITIONS_LOCK, env_id)``): exclusive
   for an admin change of segment definitions or attribute types; shared for each worker
   batch, taken before it reads the definitions. So a batch never evaluates an old
   definition after a recompute of the new one has started: the change waits for batches in
   flight, later batches read the new definitions;
2. inbox rows (the worker's claim, an erase's messages);
3. user rows, in id order (``ORDER BY id FOR UPDATE``), before any membership of theirs is
   written and before :func:`shared.membership.store.bump_versions`;
4. company rows in id order, then segment rows.

A bulk recompute holds no lock but a chunk's users (a few thousand at most, for one short
transaction each). The worker's company neighbours are locked after its companies: a
deadlock PostgreSQL reports there (or anywhere) is retried at once by :func:`retrying`, as is
a user created by another transaction between a worker batch's read and its insert
(:class:`UserCreatedMeanwhile`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from shared.db import Conn

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Advisory lock class of an environment's definitions (two-int form: class, env id).
DEFINITIONS_LOCK = 7_413_002


class UserCreatedMeanwhile(Exception):
    """A user this transaction found missing, and so meant to create, was created by another
    transaction meanwhile: what it applied was read from stale state, so the whole
    transaction is retried (a retry finds the user and applies to it)."""


#: Conflicts that a fresh attempt of the same transaction resolves.
RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError, UserCreatedMeanwhile)


async def lock_definitions(conn: Conn, env_id: int, *, shared: bool = False) -> None:
    """Take the environment's definitions lock until the transaction ends."""
    if shared:
        await conn.execute(
            "SELECT pg_advisory_xact_lock_shared($1, $2::int)", DEFINITIONS_LOCK, env_id
        )
    else:
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2::int)", DEFINITIONS_LOCK, env_id)


async def retrying(attempt: Callable[[], Awaitable[T]], *, tries: int = 10, what: str = "") -> T:
    """Run ``attempt`` (one whole transaction) again at once, after a jitter of a few
    milliseconds, when PostgreSQL reports a deadlock or serialization failure."""
    for n in range(1, tries + 1):
        try:
            return await attempt()
        except RETRYABLE as exc:
            if n == tries:
                raise
            log.info("%s: %s, retrying at once (attempt %d)", what or "transaction", exc, n + 1)
            await asyncio.sleep(random.uniform(0, 0.01 * n))
    raise AssertionError("unreachable")
