"""Rate limits per API key and per client address: a 429 with Retry-After, nothing written
for the refused requests, other keys and addresses unaffected (issue 11, item 6)."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from services.ingest.app import create_app
from shared.environments import EnvironmentKeys, ensure_environment
from shared.rate_limit import RateLimiter
from shared.settings import Settings
from tests.ingest.conftest import inbox_count


def test_token_bucket_admits_its_burst_then_its_rate() -> None:
    limiter = RateLimiter("API key", "authorization", rate=10, burst=20)
    assert [limiter.wait("k", now=100.0) for _ in range(20)] == [0.0] * 20
    assert limiter.wait("k", now=100.0) == pytest.approx(0.1)
    assert limiter.wait("other", now=100.0) == 0.0  # buckets are per name
    assert limiter.wait("k", now=100.15) == 0.0  # 1.5 tokens back, one taken
    assert limiter.wait("k", now=100.15) == pytest.approx(0.05)
    assert RateLimiter("x", "x", rate=0, burst=0).wait("k") == 0.0  # 0: no limit


async def _post(client: AsyncTestClient[Any], key: str, n: int) -> list[int]:
    statuses = []
    for i in range(n):
        resp = await client.post(
            "/v1/identify", json={"userId": f"u{i}"}, headers={"Authorization": f"Bearer {key}"}
        )
        statuses.append(resp.status_code)
        if resp.status_code == 429:
            assert resp.json()["field"] in ("authorization", "address")
            assert int(resp.headers["retry-after"]) >= 1
    return statuses


async def test_a_key_over_its_rate_gets_429s_and_other_keys_do_not(
    ingest_settings: Settings, ingest_db: asyncpg.Pool, ienv: EnvironmentKeys
) -> None:
    async with ingest_db.acquire() as conn:
        other = await ensure_environment(conn, f"{ienv.name}-other")
    limited = msgspec.structs.replace(
        ingest_settings, rate_limit_key_per_second=1, rate_limit_burst_seconds=5
    )
    async with AsyncTestClient(app=create_app(limited)) as client:
        statuses = await _post(client, ienv.writeKey, 8)
        assert statuses[:5] == [200] * 5 and set(statuses[5:]) == {429}
        assert await _post(client, other.writeKey, 3) == [200] * 3
        resp = await client.post(
            "/v1/identify",
            json={"userId": "x"},
            headers={"Authorization": f"Bearer {ienv.writeKey}"},
        )
        assert resp.status_code == 429
        assert "too many requests for this API key" in resp.json()["error"]
    assert await inbox_count(ingest_db, ienv.id) == 5  # the refused ones wrote nothing


async def test_an_address_over_its_rate_gets_429s_whatever_the_key(
    ingest_settings: Settings, ingest_db: asyncpg.Pool, ienv: EnvironmentKeys
) -> None:
    limited = msgspec.structs.replace(
        ingest_settings, rate_limit_address_per_second=1, rate_limit_burst_seconds=3
    )
    async with AsyncTestClient(app=create_app(limited)) as client:
        statuses = await _post(client, ienv.writeKey, 5)
        assert statuses == [200, 200, 200, 429, 429]
        resp = await client.post("/v1/batch", json={"batch": [], "writeKey": "nobody"})
        assert resp.status_code == 429  # before the body is even read
        assert resp.json()["field"] == "address"
