"""Keys: Bearer, HTTP Basic and writeKey in the body; write and secret keys; 401s."""

from __future__ import annotations

import base64
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from shared.environments import EnvironmentKeys
from tests.ingest.conftest import inbox_count

MESSAGE = {"userId": "u1", "event": "E"}


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


@pytest.mark.parametrize("kind", ["writeKey", "secretKey"])
@pytest.mark.parametrize("how", ["bearer", "basic", "body"])
async def test_key_is_accepted(
    client: AsyncTestClient[Any],
    ingest_db: asyncpg.Pool,
    ienv: EnvironmentKeys,
    kind: str,
    how: str,
) -> None:
    key = getattr(ienv, kind)
    if how == "bearer":
        resp = await client.post(
            "/v1/track", json=MESSAGE, headers={"Authorization": f"Bearer {key}"}
        )
    elif how == "basic":
        resp = await client.post("/v1/track", json=MESSAGE, headers=basic(key))
    else:
        resp = await client.post("/v1/track", json={**MESSAGE, "writeKey": key})
    assert resp.status_code == 200, resp.text
    assert await inbox_count(ingest_db, ienv.id) == 1


async def test_batch_write_key_in_body(
    client: AsyncTestClient[Any], ingest_db: asyncpg.Pool, ienv: EnvironmentKeys
) -> None:
    resp = await client.post(
        "/v1/batch", json={"writeKey": ienv.writeKey, "batch": [{**MESSAGE, "type": "track"}]}
    )
    assert resp.status_code == 200, resp.text
    assert await inbox_count(ingest_db, ienv.id) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wk_not-a-real-key"},
        {"Authorization": "Bearer sk_not-a-real-key"},
        {"Authorization": "Basic !!!not-base64"},
    ],
)
async def test_missing_or_unknown_key_is_401(
    client: AsyncTestClient[Any],
    ingest_db: asyncpg.Pool,
    ienv: EnvironmentKeys,
    headers: dict[str, str],
) -> None:
    for path, body in (("/v1/track", MESSAGE), ("/v1/batch", {"batch": [MESSAGE]})):
        resp = await client.post(path, json=body, headers=headers)
        assert resp.status_code == 401, resp.text
        assert resp.json()["field"] == "authorization"
        assert "key" in resp.json()["error"]
    assert await inbox_count(ingest_db, ienv.id) == 0


async def test_unknown_write_key_in_body_is_401(
    client: AsyncTestClient[Any], ingest_db: asyncpg.Pool, ienv: EnvironmentKeys
) -> None:
    resp = await client.post("/v1/track", json={**MESSAGE, "writeKey": ienv.writeKey + "x"})
    assert resp.status_code == 401
    assert await inbox_count(ingest_db, ienv.id) == 0


async def test_a_key_writes_only_to_its_own_environment(
    client: AsyncTestClient[Any], ingest_db: asyncpg.Pool, ienv: EnvironmentKeys
) -> None:
    from shared.environments import ensure_environment

    async with ingest_db.acquire() as conn:
        other = await ensure_environment(conn, ienv.name + "-other")
    # the header key wins over a writeKey of another environment in the body
    resp = await client.post(
        "/v1/track",
        json={**MESSAGE, "writeKey": ienv.writeKey},
        headers={"Authorization": f"Bearer {other.secretKey}"},
    )
    assert resp.status_code == 200, resp.text
    assert await inbox_count(ingest_db, other.id) == 1
    assert await inbox_count(ingest_db, ienv.id) == 0


async def test_rotated_key_stops_working(
    client: AsyncTestClient[Any],
    ingest_db: asyncpg.Pool,
    ienv: EnvironmentKeys,
) -> None:
    """A key that no longer belongs to the environment is refused once the cache expires."""
    import asyncio

    from shared.environments import ensure_environment

    async with ingest_db.acquire() as conn:
        await ensure_environment(conn, ienv.name)  # new keys for the same environment
    await asyncio.sleep(0.3)  # longer than the tests' cache_seconds
    resp = await client.post("/v1/track", json=MESSAGE, headers=basic(ienv.writeKey))
    assert resp.status_code == 401
    assert await inbox_count(ingest_db, ienv.id) == 0
