"""Test fixtures: a fresh PostgreSQL database and a private Redis key prefix per test session,
on the machine's local servers when reachable (embedded ones otherwise), and the real services
started as processes for end-to-end tests.

Isolation between tests is by environment: every test that writes data makes its own
environment (``env`` fixture), exactly as tenants are isolated in production.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
import redis.asyncio as aioredis

from services.embedded import free_port, reachable, start_postgres, start_redis
from shared.db import create_pool
from shared.environments import EnvironmentKeys, ensure_environment
from shared.migrate import migrate
from shared.settings import Settings, to_environ

ROOT = Path(__file__).resolve().parent.parent
TEST_DATA = ROOT / ".data" / "test"


def _server_dsns() -> tuple[str, str]:
    """(admin DSN, DSN template with {db}) of the PostgreSQL the tests use."""
    if reachable("127.0.0.1", 5432):
        return (
            "postgresql://postgres@127.0.0.1:5432/postgres",
            "postgresql://postgres@127.0.0.1:5432/{db}",
        )
    base = start_postgres(TEST_DATA)  # postgresql://postgres:@/postgres?host=...
    return base, base.replace("/postgres?", "/{db}?")


@contextmanager
def private_database(base: Settings | None, label: str) -> Iterator[Settings]:
    """Settings with a freshly created and migrated database of their own (dropped on exit)
    and their own Redis prefix: for tests that must not share data with a running worker."""
    admin_dsn, template = _server_dsns()
    db_name = f"segments_{label}_{os.getpid()}_{secrets.token_hex(3)}"

    async def create() -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{db_name}"')
        finally:
            await conn.close()
        pool = await create_pool(template.format(db=db_name), size=1)
        async with pool.acquire() as c:
            await migrate(c)
        await pool.close()

    async def drop() -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(create())
    if base is None:
        redis_url = (
            "redis://127.0.0.1:6379/0" if reachable("127.0.0.1", 6379) else start_redis(TEST_DATA)
        )
        base = Settings(
            redis_url=redis_url,
            data_dir=str(TEST_DATA),
            sweep_seconds=1,
            cache_seconds=0.2,
            webhook_allow_private=True,  # the tests' webhook receivers listen on 127.0.0.1
            worker_metrics_port=0,  # a stack's worker gets a free port (ServiceStack)
        )
    try:
        yield msgspec.structs.replace(
            base,
            database_url=template.format(db=db_name),
            redis_prefix=f"segtest{os.getpid()}{label}",
        )
    finally:
        asyncio.run(drop())


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    """Settings pointing at this session's own database and Redis prefix."""
    with private_database(None, "test") as session_settings:
        yield session_settings


@asynccontextmanager
async def pool_for(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A connection pool on ``settings``' database."""
    assert settings.database_url is not None
    pool = await create_pool(settings.database_url, size=5)
    try:
        yield pool
    finally:
        await pool.close()


@asynccontextmanager
async def redis_for(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    """A Redis client; every key under ``settings``' prefix is deleted on exit."""
    assert settings.redis_url is not None
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        yield client
    finally:
        keys = [k async for k in client.scan_iter(match=f"{settings.redis_prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def private_package_fixtures(label: str) -> tuple[Any, Any, Any]:
    """``settings``, ``db`` and ``redis`` fixtures of package scope on a database and Redis
    prefix of their own, for a package whose tests must not share data with the session's
    end-to-end stack (its worker drains the shared inbox). In the package's conftest:
    ``settings, db, redis = private_package_fixtures("label")``."""

    @pytest.fixture(scope="package", name="settings")
    def settings_() -> Iterator[Settings]:
        with private_database(None, label) as private:
            yield private

    @pytest.fixture(scope="package", name="db")
    async def db_(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
        async with pool_for(settings) as pool:
            yield pool

    @pytest.fixture(scope="package", name="redis")
    async def redis_(settings: Settings) -> AsyncIterator[aioredis.Redis]:
        async with redis_for(settings) as client:
            yield client

    return settings_, db_, redis_


@pytest.fixture(scope="session")
async def db(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    async with pool_for(settings) as pool:
        yield pool


@pytest.fixture(scope="session")
async def redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    async with redis_for(settings) as client:
        yield client


@pytest.fixture
async def env(db: asyncpg.Pool) -> EnvironmentKeys:
    """A new environment (with its own keys and All-users segment) for one test."""
    async with db.acquire() as conn:
        return await ensure_environment(conn, f"test-{secrets.token_hex(6)}")


class ServiceStack:
    """The four real services as child processes on free ports, for end-to-end tests."""

    def __init__(self, settings: Settings, logs: Path | None = None) -> None:
        self.settings = msgspec.structs.replace(
            settings,
            ingest_port=free_port(),
            query_port=free_port(),
            admin_port=free_port(),
            worker_metrics_port=free_port(),
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = logs or TEST_DATA / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def url(self, service: str) -> str:
        port = getattr(self.settings, f"{service}_port")
        return f"http://127.0.0.1:{port}"

    def start(self, service: str, *, wait: bool = True, **overrides: object) -> None:
        """Start ``service`` (and wait until it is healthy unless not ``wait``); ``overrides``
        replace settings fields for this process only."""
        settings = msgspec.structs.replace(self.settings, **overrides)
        env = {**os.environ, **to_environ(settings)}
        log = open(self.logs / f"{service}.log", "ab")
        self.procs[service] = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run", service],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            self.wait_healthy(service)

    def wait_healthy(self, service: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[service]
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{service} exited with {proc.returncode}; see {self.logs / service}.log"
                )
            if service == "worker":
                if self._worker_ready():
                    return
            else:
                try:
                    if httpx.get(self.url(service) + "/health", timeout=1).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"{service} not healthy after {timeout}s")

    def _worker_ready(self) -> bool:
        """The worker's arq health key exists (sync client: callers may be inside a loop)."""
        import redis as sync_redis

        from shared.redis_keys import queue_name

        assert self.settings.redis_url is not None
        with sync_redis.Redis.from_url(self.settings.redis_url) as client:
            return bool(client.exists(queue_name(self.settings.redis_prefix) + ":health-check"))

    def kill(self, service: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(service)
        proc.send_signal(sig)
        proc.wait(timeout=15)

    def stop_all(self) -> None:
        for service in list(self.procs):
            proc = self.procs[service]
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()


@contextmanager
def running_stack(settings: Settings, logs: Path | None = None) -> Iterator[ServiceStack]:
    """ingest, query, admin and worker running on ``settings``, stopped on exit."""
    services = ServiceStack(settings, logs)
    try:
        for name in ("ingest", "query", "admin", "worker"):
            services.start(name)
        yield services
    finally:
        services.stop_all()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[ServiceStack]:
    """ingest, query, admin and worker running against this session's database and Redis."""
    with running_stack(settings) as services:
        yield services
