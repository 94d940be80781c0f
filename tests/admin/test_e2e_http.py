"""Real HTTP against the running services (the ``stack`` fixture starts all four processes):
a segment made through admin answers through query, before and after the Redis copy is lost."""

from __future__ import annotations

import asyncpg
import httpx
import redis.asyncio as aioredis

from shared.environments import EnvironmentKeys
from shared.redis_keys import membership_key
from shared.settings import Settings
from tests.conftest import ServiceStack


async def test_admin_then_query_over_http(
    stack: ServiceStack,
    env: EnvironmentKeys,
    db: asyncpg.Pool,
    redis: aioredis.Redis,
    settings: Settings,
) -> None:
    secret = {"Authorization": f"Bearer {env.secretKey}"}
    write = {"Authorization": f"Bearer {env.writeKey}"}
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.post(
            stack.url("admin") + "/v1/segments",
            json={"name": "Beta testers", "kind": "manual"},
            headers=secret,
        )
        assert resp.status_code == 201, resp.text
        seg = resp.json()
        # one transaction: a cache rebuild by the stack's worker (another test emptied this
        # session's Redis keys) must never see the user without its membership
        async with db.acquire() as conn, conn.transaction():
            pk = await conn.fetchval(
                """INSERT INTO users (env_id, user_id, first_seen_at, last_seen_at,
                                      membership_version)
                   VALUES ($1, 'e2e-user', now(), now(), 1) RETURNING id""",
                env.id,
            )
            await conn.execute(
                "INSERT INTO memberships (env_id, segment_id, user_pk) VALUES ($1, $2, $3)",
                env.id,
                int(seg["id"]),
                pk,
            )
        query = stack.url("query")
        for _ in range(2):
            resp = await http.get(query + "/v1/users/e2e-user/segments/beta-testers", headers=write)
            assert resp.json() == {"member": True}
            # Lose this user's Redis copy: the answer comes from PostgreSQL again.
            await redis.delete(membership_key(settings.redis_prefix, env.id, "e2e-user"))
        resp = await http.post(
            query + "/v1/check",
            json={"userId": "e2e-user", "segments": ["beta-testers", "missing"]},
            headers=write,
        )
        assert resp.json() == {
            "results": {"beta-testers": True, "missing": False},
            "unknownSegments": ["missing"],
        }
        resp = await http.get(stack.url("admin") + "/v1/segments/beta-testers", headers=secret)
        assert resp.json()["memberCount"] == 1
        resp = await http.get(stack.url("admin") + "/v1/segments", headers=write)
        assert resp.status_code == 403
