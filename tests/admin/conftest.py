"""Fixtures and helpers for the admin service tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from arq.connections import ArqRedis
from arq.jobs import Job
from litestar.testing import AsyncTestClient

from services.admin.app import create_app
from shared.environments import EnvironmentKeys
from shared.redis_keys import queue_name
from shared.settings import Settings


@pytest.fixture
async def admin(settings: Settings) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    """A client of a fresh admin app, lifespan run."""
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


def secret(env: EnvironmentKeys) -> dict[str, str]:
    return {"Authorization": f"Bearer {env.secretKey}"}


def recompute_job_id(settings: Settings, env_id: int, segment_id: str, version: int) -> str:
    return f"{settings.redis_prefix}:recompute:{env_id}:{segment_id}:{version}"


async def recompute_enqueued(
    settings: Settings, redis: aioredis.Redis, job_id: str
) -> tuple[str, tuple[Any, ...]] | None:
    """(function, args) of job ``job_id`` when it is queued on this deployment's arq queue (or
    already taken by a running worker), else None."""
    queue = queue_name(settings.redis_prefix)
    in_queue = await redis.zscore(queue, job_id) is not None
    if not in_queue:
        taken = await redis.exists(f"arq:in-progress:{job_id}", f"arq:result:{job_id}")
        return ("recompute_segment", ()) if taken else None
    assert settings.redis_url is not None
    arq = ArqRedis.from_url(settings.redis_url)
    try:
        info = await Job(job_id, arq, _queue_name=queue).info()
    finally:
        await arq.aclose()
    assert info is not None
    return info.function, tuple(info.args)
