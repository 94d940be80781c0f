"""Ingest over real HTTP: the service as its own process (uvicorn), and within the full stack."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import msgspec
import pytest

from services.embedded import free_port
from shared.environments import EnvironmentKeys
from shared.settings import Settings, to_environ
from tests.conftest import ROOT, TEST_DATA, ServiceStack
from tests.ingest.conftest import inbox_count
from tests.ingest.test_limits import big_batch


@pytest.fixture(scope="module")
def ingest_url(ingest_settings: Settings) -> Iterator[str]:
    """``python -m services.ingest`` on a free port, against the ingest tests' database."""
    settings = msgspec.structs.replace(ingest_settings, ingest_port=free_port())
    TEST_DATA.mkdir(parents=True, exist_ok=True)
    with open(TEST_DATA / "ingest-alone.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.ingest"],
            env={**os.environ, **to_environ(settings)},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{settings.ingest_port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, "ingest exited; see .data/test/ingest-alone.log"
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "ingest did not become healthy"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.fixture
async def http(ingest_url: str) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=ingest_url, limits=limits, timeout=30) as client:
        yield client


async def _post_burst(url: str, key: str, n: int) -> list[int]:
    """POST ``n`` identify requests on ``n`` open connections at the same instant (an httpx
    client is too slow to produce a real burst); the status codes, in order."""
    host, port = url.removeprefix("http://").split(":")
    conns = await asyncio.gather(*(asyncio.open_connection(host, int(port)) for _ in range(n)))
    for i, (_, writer) in enumerate(conns):
        body = msgspec.json.encode({"userId": f"u{i}", "traits": {"i": i}})
        writer.write(
            b"POST /v1/identify HTTP/1.1\r\nHost: ingest\r\nConnection: close\r\n"
            + f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
    statuses = []
    for reader, writer in conns:
        response = await reader.read()
        statuses.append(int(response.split(b" ", 2)[1]))
        writer.close()
    return statuses


async def test_concurrent_requests_share_inserts(
    ingest_url: str, ingest_db: asyncpg.Pool, ienv: EnvironmentKeys
) -> None:
    assert await _post_burst(ingest_url, ienv.writeKey, 1) == [200]  # warms the key cache
    assert await _post_burst(ingest_url, ienv.writeKey, 100) == [200] * 100
    assert await inbox_count(ingest_db, ienv.id) == 101
    # rows committed by one INSERT share their transaction id
    inserts = await ingest_db.fetchval(
        "SELECT count(DISTINCT xmin::text) FROM inbox WHERE env_id = $1", ienv.id
    )
    assert inserts < 50


async def test_basic_auth_batch_over_http(
    http: httpx.AsyncClient, ingest_db: asyncpg.Pool, ienv: EnvironmentKeys
) -> None:
    batch = {"batch": [{"type": "track", "userId": "u", "event": "E"}] * 3}
    resp = await http.post("/v1/batch", json=batch, auth=(ienv.writeKey, ""))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"success": True, "accepted": 3, "rejected": []}
    assert await inbox_count(ingest_db, ienv.id) == 3


async def test_chunked_request_over_500kb_is_413(
    http: httpx.AsyncClient, ingest_db: asyncpg.Pool, ienv: EnvironmentKeys
) -> None:
    body = msgspec.json.encode(big_batch())

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 16 * 1024):
            yield body[start : start + 16 * 1024]

    resp = await http.post(
        "/v1/batch", content=chunks(), headers={"Authorization": f"Bearer {ienv.writeKey}"}
    )
    assert "content-length" not in resp.request.headers
    assert resp.status_code == 413, resp.text
    assert "500 KB" in resp.json()["error"]
    assert await inbox_count(ingest_db, ienv.id) == 0


async def test_hello_and_health_over_http(http: httpx.AsyncClient) -> None:
    assert (await http.get("/hello")).json() == {"hello": "world"}
    assert (await http.get("/health")).json() == {"status": "ok"}


async def test_ingest_in_the_full_stack(
    stack: ServiceStack, db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    """Through `segments run ingest` with the worker running: committed, then applied."""
    message_id = f"stack-{secrets.token_hex(4)}"
    async with httpx.AsyncClient(base_url=stack.url("ingest"), timeout=10) as client:
        resp = await client.post(
            "/v1/identify",
            json={"userId": "stack-user", "traits": {"plan": "pro"}, "messageId": message_id},
            headers={"Authorization": f"Bearer {env.writeKey}"},
        )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"success": True}
    # acknowledged means committed: the message is in the inbox, or the worker already applied it
    found = await db.fetchval(
        """SELECT EXISTS (SELECT 1 FROM inbox WHERE env_id = $1)
               OR EXISTS (SELECT 1 FROM processed_messages
                          WHERE env_id = $1 AND message_id = $2)""",
        env.id,
        message_id,
    )
    assert found
