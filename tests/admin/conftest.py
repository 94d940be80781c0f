"""Fixtures and helpers for the admin service tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis
from arq.connections import ArqRedis
from arq.jobs import Job
from litestar.testing import AsyncTestClient

from services.admin.app import create_app
from shared.environments import EnvironmentKeys
from shared.redis_keys import queue_name
from shared.settings import Settings


@pytest.fixture
async def admin(settings: Settings) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    """A client of a fresh admin app, lifespan run."""
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


@pytest.fixture(scope="session")
def quiet_settings(settings: Settings) -> Settings:
    """``settings`` with a Redis prefix no worker listens on: jobs the admin enqueues stay
    queued (to be inspected) even while the end-to-end stack runs in the same session."""
    return msgspec.structs.replace(settings, redis_prefix=f"{settings.redis_prefix}:quiet")


@pytest.fixture
async def quiet_admin(quiet_settings: Settings) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    """An admin app on :func:`quiet_settings`."""
    async with AsyncTestClient(app=create_app(quiet_settings)) as client:
        yield client


def secret(env: EnvironmentKeys) -> dict[str, str]:
    return {"Authorization": f"Bearer {env.secretKey}"}


async def get_ok(
    admin: AsyncTestClient,  # type: ignore[type-arg]
    env: EnvironmentKeys,
    path: str,
    **params: str,
) -> dict[str, Any]:
    """GET ``path`` with the environment's secret key; asserts a 200 and returns the body."""
    resp = await admin.get(path, params=params, headers=secret(env))
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def create_manual(admin: AsyncTestClient, env: EnvironmentKeys, key: str) -> str:  # type: ignore[type-arg]
    """Create manual segment ``key`` through the API; returns its id."""
    resp = await admin.post(
        "/v1/segments",
        json={"name": key.title(), "key": key, "kind": "manual"},
        headers=secret(env),
    )
    assert resp.status_code == 201, resp.text
    seg_id: str = resp.json()["id"]
    return seg_id


async def change_members(
    admin: AsyncTestClient,  # type: ignore[type-arg]
    env: EnvironmentKeys,
    seg: str,
    users: list[str],
    add: bool,
) -> None:
    """Add (or remove) users of manual segment ``seg`` by userId through the API."""
    resp = await admin.request(
        "POST" if add else "DELETE",
        f"/v1/segments/{seg}/members",
        json={"userIds": users},
        headers=secret(env),
    )
    assert resp.status_code == 200, resp.text


def recompute_job_id(settings: Settings, env_id: int, segment_id: str, version: int) -> str:
    return f"{settings.redis_prefix}:recompute:{env_id}:{segment_id}:{version}"


async def recompute_enqueued(
    settings: Settings, redis: aioredis.Redis, job_id: str
) -> tuple[str, tuple[Any, ...]] | None:
    """(function, args) of job ``job_id`` when it is queued on this deployment's arq queue (or
    already taken by a running worker), else None."""
    queue = queue_name(settings.redis_prefix)
    in_queue = await redis.zscore(queue, job_id) is not None
    if not in_queue:
        taken = await redis.exists(f"arq:in-progress:{job_id}", f"arq:result:{job_id}")
        return ("recompute_segment", ()) if taken else None
    assert settings.redis_url is not None
    arq = ArqRedis.from_url(settings.redis_url)
    try:
        info = await Job(job_id, arq, _queue_name=queue).info()
    finally:
        await arq.aclose()
    if info is None:  # taken (and done) between the two looks
        return ("recompute_segment", ())
    return info.function, tuple(info.args)


async def make_user(
    db: asyncpg.Pool,
    env: EnvironmentKeys,
    user_id: str | None,
    attributes: dict[str, Any] | None = None,
    anonymous_ids: tuple[str, ...] = (),
) -> int:
    """Insert a profile directly (version 1); returns its primary key."""
    async with db.acquire() as conn, conn.transaction():
        pk: int = await conn.fetchval(
            """INSERT INTO users (env_id, user_id, attributes, first_seen_at, last_seen_at,
                                  membership_version)
               VALUES ($1, $2, $3, now(), now(), 1) RETURNING id""",
            env.id,
            user_id,
            attributes or {},
        )
        for anon in anonymous_ids:
            await conn.execute(
                "INSERT INTO identities (env_id, anonymous_id, user_pk) VALUES ($1, $2, $3)",
                env.id,
                anon,
                pk,
            )
    return pk


async def queued_recomputes(
    settings: Settings, redis: aioredis.Redis, env_id: int, segment_id: int | str
) -> list[str]:
    """Ids of the recompute jobs of one segment waiting on this deployment's arq queue."""
    prefix = f"{settings.redis_prefix}:recompute:{env_id}:{segment_id}:"
    queue = queue_name(settings.redis_prefix)
    return [
        job
        for job in await redis.zrange(queue, 0, -1)
        if (job.decode() if isinstance(job, bytes) else job).startswith(prefix)
    ]


class Received(msgspec.Struct):
    path: str
    headers: dict[str, str]
    body: bytes
    #: the status answered (0 while not answered)
    status: int = 0


class Receiver:
    """A real HTTP/1.1 server on a free local port that records every request and answers
    ``statuses`` in turn (then 200), or never answers when ``hang`` is set."""

    def __init__(self, statuses: list[int] | None = None, hang: bool = False) -> None:
        self.statuses = list(statuses or [])
        self.hang = hang
        self.requests: list[Received] = []
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/segments"

    async def start(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in self._writers:
                writer.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            while True:
                line = await reader.readline()
                if not line.strip():
                    return
                _method, path, _version = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = header.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                received = Received(path, headers, body)
                self.requests.append(received)
                if self.hang:
                    await asyncio.sleep(3600)
                status = self.statuses.pop(0) if self.statuses else 200
                received.status = status
                answer = b"nope" if status >= 300 else b"ok"
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-length: {len(answer)}\r\n\r\n".encode()
                    + answer
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            writer.close()
