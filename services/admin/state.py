"""The admin service's resources, opened in the app's lifespan and handed to handlers by
dependency injection (``state`` and the caller's ``env``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg
from arq.connections import ArqRedis
from litestar import Request
from litestar.di import NamedDependency

from shared.environments import Environment
from shared.http import EnvironmentCache, key_from_headers
from shared.redis_keys import queue_name
from shared.settings import Settings

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AdminState:
    """Everything an admin handler needs, built once per process."""

    settings: Settings
    pool: asyncpg.Pool
    arq: ArqRedis
    envs: EnvironmentCache

    async def enqueue_recompute(self, env_id: int, segment_id: int, version: int) -> bool:
        """Ask the worker to recompute ``version`` of a dynamic segment in bulk. The job id
        carries the version, so a retried request enqueues it once. False when Redis refused
        (the segment stays 'computing' until the worker's sweep finds it)."""
        prefix = self.settings.redis_prefix
        try:
            await self.arq.enqueue_job(
                "recompute_segment",
                env_id,
                segment_id,
                _job_id=f"{prefix}:recompute:{env_id}:{segment_id}:{version}",
                _queue_name=queue_name(prefix),
            )
        except Exception as exc:  # Redis down: the definition is committed all the same
            log.warning("could not enqueue recompute of segment %s: %s", segment_id, exc)
            return False
        return True


async def provide_state(request: Request[Any, Any, Any]) -> AdminState:
    """Dependency: the app's :class:`AdminState`."""
    state: AdminState = request.app.state.admin
    return state


async def provide_env(request: Request[Any, Any, Any]) -> Environment:
    """Dependency: the caller's environment; the secret key only (401 unknown, 403 write key)."""
    state: AdminState = request.app.state.admin
    return await state.envs.require(key_from_headers(request.headers), secret=True)


#: Handler parameter types for the two dependencies.
Admin: TypeAlias = NamedDependency[AdminState]
Env: TypeAlias = NamedDependency[Environment]
