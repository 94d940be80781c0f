"""The query service's resources, opened in the app's lifespan and kept on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis

from services.query.catalog import SegmentKeyCache
from services.query.memberships import Memberships
from shared.http import EnvironmentCache
from shared.rate_limit import RequestLimits


@dataclass(slots=True)
class QueryState:
    """Everything a query handler needs, built once per process."""

    pool: asyncpg.Pool
    redis: aioredis.Redis
    envs: EnvironmentCache
    catalog: SegmentKeyCache
    memberships: Memberships
    limits: RequestLimits
    #: SEGMENTS_IDENTITY_TOKEN_MAX_AGE_SECONDS
    token_max_age: float
