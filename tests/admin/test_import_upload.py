"""Import uploads past the configured size limit: a clear 413, nothing kept."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from services.admin.app import create_app
from shared.environments import EnvironmentKeys
from shared.settings import Settings
from tests.admin.conftest import secret

Client = AsyncTestClient[Any]


@pytest.fixture
async def small_admin(settings: Settings) -> AsyncIterator[Client]:
    limited = msgspec.structs.replace(settings, import_max_bytes=1000)
    async with AsyncTestClient(app=create_app(limited)) as client:
        yield client


async def test_an_upload_over_the_limit_is_a_413_naming_the_setting(
    small_admin: Client, env: EnvironmentKeys, db: asyncpg.Pool
) -> None:
    body = b"userId\n" + b"".join(b"user-%d\n" % i for i in range(300))
    resp = await small_admin.post(
        "/v1/imports", content=body, headers={**secret(env), "Content-Type": "text/csv"}
    )
    assert resp.status_code == 413
    assert resp.json()["field"] == "file"
    assert "SEGMENTS_IMPORT_MAX_BYTES" in resp.json()["error"]

    # multipart: the Content-Length allows for the framing, the file's bytes are counted
    resp = await small_admin.post(
        "/v1/imports", files={"file": ("big.csv", body, "text/csv")}, headers=secret(env)
    )
    assert resp.status_code == 413
    assert "SEGMENTS_IMPORT_MAX_BYTES" in resp.json()["error"]
    assert await db.fetchval("SELECT count(*) FROM imports WHERE env_id = $1", env.id) == 0
    small = await small_admin.post(
        "/v1/imports", content=b"userId\nu1\n", headers={**secret(env), "Content-Type": "text/csv"}
    )
    assert small.status_code == 201
