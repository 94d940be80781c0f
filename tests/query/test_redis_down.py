"""Redis is a cache: with no Redis at all, the query service answers from PostgreSQL and its
/health says "degraded" (200), so that load balancers keep it in service."""

from __future__ import annotations

import asyncpg
import msgspec
from litestar.testing import AsyncTestClient

from services.embedded import free_port
from services.query.app import create_app
from shared.environments import EnvironmentKeys
from shared.settings import Settings
from tests.query.conftest import add_segment, add_user, bearer


async def test_answers_from_postgres_and_health_is_degraded_without_redis(
    settings: Settings, db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    beta = await add_segment(db, env, "beta")
    await add_segment(db, env, "gamma")
    await add_user(db, env, "u1", version=2, segments=(beta,))
    nowhere = msgspec.structs.replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    headers = bearer(env.writeKey)
    async with AsyncTestClient(app=create_app(nowhere)) as query:
        for _ in range(2):  # the first read meets the dead Redis, the second skips it
            resp = await query.get("/v1/users/u1/segments/beta", headers=headers)
            assert resp.status_code == 200 and resp.json() == {"member": True}
            resp = await query.get("/v1/users/u1/segments/gamma", headers=headers)
            assert resp.status_code == 200 and resp.json() == {"member": False}
            resp = await query.post(
                "/v1/check", json={"userId": "u1", "segments": ["beta", "gamma"]}, headers=headers
            )
            assert resp.json()["results"] == {"beta": True, "gamma": False}
        health = await query.get("/health")
        assert health.status_code == 200
        body = health.json()
        assert body["status"] == "degraded" and "redis" in body
        # bad input is still refused as usual
        resp = await query.get("/v1/users/u1/segments/nope", headers=headers)
        assert resp.status_code == 404 and resp.json()["field"] == "segment"
