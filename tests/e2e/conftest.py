"""End-to-end helpers: HTTP clients for the real running services, with one environment's keys."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest

from shared.environments import EnvironmentKeys
from tests.conftest import ServiceStack

T = TypeVar("T")


class Api:
    """The three HTTP services as one environment's client sees them."""

    def __init__(self, stack: ServiceStack, env: EnvironmentKeys) -> None:
        self.env = env
        self.stack = stack
        self.ingest = httpx.AsyncClient(
            base_url=stack.url("ingest"), auth=(env.writeKey, ""), timeout=30
        )
        self.query = httpx.AsyncClient(
            base_url=stack.url("query"),
            headers={"Authorization": f"Bearer {env.writeKey}"},
            timeout=30,
        )
        self.admin = httpx.AsyncClient(
            base_url=stack.url("admin"),
            headers={"Authorization": f"Bearer {env.secretKey}"},
            timeout=30,
        )

    async def close(self) -> None:
        for client in (self.ingest, self.query, self.admin):
            await client.aclose()

    async def identify(self, user_id: str, traits: dict[str, Any], **extra: Any) -> None:
        resp = await self.ingest.post(
            "/v1/identify", json={"userId": user_id, "traits": traits, **extra}
        )
        assert resp.status_code == 200, resp.text

    async def member(self, user_id: str, segment: str) -> bool:
        resp = await self.query.get(f"/v1/users/{user_id}/segments/{segment}")
        assert resp.status_code == 200, resp.text
        return bool(resp.json()["member"])

    async def create_segment(self, key: str, conditions: Any) -> dict[str, Any]:
        resp = await self.admin.post(
            "/v1/segments",
            json={"name": key, "key": key, "kind": "dynamic", "conditions": conditions},
        )
        assert resp.status_code == 201, resp.text
        await eventually(lambda: self._ready(key))
        body: dict[str, Any] = resp.json()
        return body

    async def _ready(self, key: str) -> bool:
        resp = await self.admin.get(f"/v1/segments/{key}")
        return bool(resp.json()["status"] == "ready")

    async def profile(self, user_id: str) -> dict[str, Any] | None:
        resp = await self.admin.get(f"/v1/users/{user_id}")
        if resp.status_code == 404:
            return None
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body


async def eventually(
    check: Callable[[], Awaitable[T | None]], within: float = 15.0, interval: float = 0.02
) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``within`` seconds
    (a generous bound for a loaded CI machine, not a performance assertion)."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s (last: {result!r})")
        await asyncio.sleep(interval)


@pytest.fixture
async def api(stack: ServiceStack, env: EnvironmentKeys) -> AsyncIterator[Api]:
    client = Api(stack, env)
    yield client
    await client.close()
