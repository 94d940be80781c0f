"""Redis is only the worker's doorbell: ingest starts and acknowledges while it is down."""

from __future__ import annotations

import asyncpg
import msgspec
from litestar.testing import AsyncTestClient

from services.embedded import free_port
from services.ingest.app import create_app
from shared.environments import EnvironmentKeys
from shared.settings import Settings
from tests.ingest.conftest import inbox_count


async def test_starts_and_acknowledges_without_redis(
    ingest_settings: Settings, ingest_db: asyncpg.Pool, ienv: EnvironmentKeys
) -> None:
    nowhere = msgspec.structs.replace(
        ingest_settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"
    )
    headers = {"Authorization": f"Bearer {ienv.writeKey}"}
    async with AsyncTestClient(app=create_app(nowhere)) as client:
        for i in range(3):
            resp = await client.post(
                "/v1/identify", json={"userId": f"u{i}", "traits": {"a": i}}, headers=headers
            )
            assert resp.status_code == 200, resp.text
        resp = await client.post("/v1/identify", json={"traits": {"a": 1}}, headers=headers)
        assert resp.status_code in (400, 422)  # bad input is still refused, and not kept
        assert (await client.get("/health")).status_code == 200
    assert await inbox_count(ingest_db, ienv.id) == 3
