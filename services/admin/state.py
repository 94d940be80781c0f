"""The admin service's resources, opened in the app's lifespan and handed to handlers by
dependency injection (``state`` and the caller's ``env``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg
import redis.asyncio as aioredis
from arq.connections import ArqRedis
from litestar import Request
from litestar.di import NamedDependency

from services.admin.console.sessions import COOKIE as session_cookie
from services.admin.console.sessions import session_environment
from shared.environments import Environment
from shared.http import EnvironmentCache, key_from_headers
from shared.membership.cache import MembershipCache
from shared.redis_keys import drain_job_id, queue_name, recompute_job_id
from shared.settings import Settings

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AdminState:
    """Everything an admin handler needs, built once per process."""

    settings: Settings
    pool: asyncpg.Pool
    arq: ArqRedis
    envs: EnvironmentCache
    #: the per-user membership sets (refreshed after manual changes, deleted on erase)
    redis: aioredis.Redis
    cache: MembershipCache

    async def enqueue_recompute(
        self, env_id: int, segment_id: int, version: int, nonce: str | None = None
    ) -> bool:
        """Ask the worker to recompute ``version`` of a dynamic segment in bulk. The job id
        carries the version, so a retried request enqueues it once. False when Redis refused
        (the segment stays 'computing' until the worker's sweep finds it).

        ``nonce`` (a recompute because the data under the segment changed, e.g. a manual
        segment it refers to or a tag it uses) makes the job id unique: a recompute of the
        same version already running has read the data before this change."""
        prefix = self.settings.redis_prefix
        job_id = recompute_job_id(prefix, env_id, segment_id, version)
        if nonce is not None:
            job_id += f":{nonce}"
        try:
            await self.arq.enqueue_job(
                "recompute_segment",
                env_id,
                segment_id,
                _job_id=job_id,
                _queue_name=queue_name(prefix),
            )
        except Exception as exc:  # Redis down: the definition is committed all the same
            log.warning("could not enqueue recompute of segment %s: %s", segment_id, exc)
            return False
        return True

    async def enqueue_drain(self) -> None:
        """Wake the worker's inbox drain (the deduplicated job ingest enqueues); a failure
        is logged only: the rows are committed and the worker's sweep finds them."""
        prefix = self.settings.redis_prefix
        try:
            await self.arq.enqueue_job(
                "drain", _job_id=drain_job_id(prefix), _queue_name=queue_name(prefix)
            )
        except Exception as exc:
            log.warning("could not enqueue the drain job (the sweep will catch up): %s", exc)


async def provide_state(request: Request[Any, Any, Any]) -> AdminState:
    """Dependency: the app's :class:`AdminState`."""
    state: AdminState = request.app.state.admin
    return state


async def provide_env(request: Request[Any, Any, Any]) -> Environment:
    """Dependency: the caller's environment; the secret key only (401 unknown, 403 write key),
    or a console session's environment (its cookie, and its CSRF token on changes)."""
    state: AdminState = request.app.state.admin
    key = key_from_headers(request.headers)
    if key is None and session_cookie in request.cookies:
        return await session_environment(request, state.pool)
    return await state.envs.require(key, secret=True)


#: Handler parameter types for the two dependencies.
Admin: TypeAlias = NamedDependency[AdminState]
Env: TypeAlias = NamedDependency[Environment]
