"""When PostgreSQL is unreachable, ingest answers 503 and acknowledges nothing."""

from __future__ import annotations

import asyncpg
from litestar.testing import AsyncTestClient

from services.ingest.app import create_app
from shared.environments import EnvironmentKeys
from shared.settings import Settings
from tests.ingest.conftest import inbox_count, ingest_of


async def test_database_down_is_503(
    ingest_settings: Settings, ingest_db: asyncpg.Pool, ienv: EnvironmentKeys
) -> None:
    headers = {"Authorization": f"Bearer {ienv.writeKey}"}
    message = {"userId": "u1", "event": "E"}
    async with AsyncTestClient(app=create_app(ingest_settings)) as client:
        assert (await client.post("/v1/track", json=message, headers=headers)).status_code == 200
        # the app's own pool goes away, its connections cut (in the app's event loop), the
        # one the inbox writer keeps included
        client.blocking_portal.call(ingest_of(client).pool.terminate)
        for path, body in (
            ("/v1/track", message),
            ("/v1/batch", {"batch": [{**message, "type": "track"}]}),
        ):
            resp = await client.post(path, json=body, headers=headers)
            assert resp.status_code == 503, resp.text
            assert "retry" in resp.json()["error"]
        health = await client.get("/health")
        assert health.status_code == 503
    assert await inbox_count(ingest_db, ienv.id) == 1
