"""What a benchmark runs against: its own database, its own Redis prefix, the four real services.

The database (``segments_bench_<pid>``) is created on the local PostgreSQL and dropped at the
end; every Redis key is under a prefix of this run and deleted at the end. When no local
PostgreSQL or Redis answers, the embedded ones of the development runner are used.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

import asyncpg
import msgspec
import redis.asyncio as aioredis

from services.cli import check_service
from services.embedded import free_port, reachable, start_postgres, start_redis
from shared.db import create_pool
from shared.environments import EnvironmentKeys, ensure_environment
from shared.migrate import migrate
from shared.settings import Settings, to_environ

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data" / "bench"
#: rate limits (per second) that a bench's load stays far below
UNREACHED_LIMIT = 10_000_000.0


def one_client_settings(dsn: str, redis: str, prefix: str, **extra: object) -> Settings:
    """Settings of services driven by a load generator: every request comes from one address
    with one key, so the rate limits stay on (their cost is measured) but out of reach (the
    defaults would answer 429s, fast, and the figures would count them)."""
    return msgspec.convert(
        {
            "database_url": dsn,
            "redis_url": redis,
            "redis_prefix": prefix,
            "data_dir": str(DATA),
            "rate_limit_address_per_second": UNREACHED_LIMIT,
            "rate_limit_key_per_second": UNREACHED_LIMIT,
            **extra,
        },
        Settings,
    )


SERVICES = ("ingest", "query", "admin", "worker")


def server_dsns(admin_dsn: str | None) -> tuple[str, str]:
    """(maintenance DSN, DSN template with ``{db}``) of the PostgreSQL to use."""
    if admin_dsn is None:
        if not reachable("127.0.0.1", 5432):
            base = start_postgres(DATA)
            return base, base.replace("/postgres?", "/{db}?")
        admin_dsn = "postgresql://postgres@127.0.0.1:5432/postgres"
    head, _, tail = admin_dsn.rpartition("/")
    query = tail.partition("?")[2]
    return admin_dsn, f"{head}/{{db}}" + (f"?{query}" if query else "")


def redis_url(url: str | None) -> str:
    if url is not None:
        return url
    return "redis://127.0.0.1:6379/0" if reachable("127.0.0.1", 6379) else start_redis(DATA)


class BenchDatabase:
    """A fresh, migrated database for one run, dropped on exit."""

    def __init__(self, admin_dsn: str | None) -> None:
        self.admin_dsn, template = server_dsns(admin_dsn)
        self.name = f"segments_bench_{os.getpid()}"
        self.dsn = template.format(db=self.name)

    async def __aenter__(self) -> BenchDatabase:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await conn.close()
        pool = await create_pool(self.dsn, size=1)
        try:
            async with pool.acquire() as c:
                await migrate(c)
        finally:
            await pool.close()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await conn.close()

    async def environment(self, name: str) -> EnvironmentKeys:
        conn = await asyncpg.connect(self.dsn)
        try:
            return await ensure_environment(conn, name)
        finally:
            await conn.close()


async def drop_redis_keys(url: str, prefix: str) -> int:
    """Delete this run's keys: ours are under ``prefix:``; arq's job keys embed the prefix."""
    client = aioredis.Redis.from_url(url)
    try:
        deleted = 0
        for pattern in (f"{prefix}:*", f"arq:*{prefix}:*"):
            keys = [k async for k in client.scan_iter(match=pattern, count=1000)]
            for i in range(0, len(keys), 1000):
                deleted += int(await client.delete(*keys[i : i + 1000]))
        return deleted
    finally:
        await client.aclose()


class Services:
    """The four services as child processes (``python -m services.cli run <service>``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = msgspec.structs.replace(
            settings,
            ingest_port=free_port(),
            query_port=free_port(),
            admin_port=free_port(),
            webhook_allow_private=True,  # benchmark receivers listen on 127.0.0.1
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = DATA / f"logs-{os.getpid()}"
        self.logs.mkdir(parents=True, exist_ok=True)

    def port(self, service: str) -> int:
        port: int = getattr(self.settings, f"{service}_port")
        return port

    def pid(self, service: str) -> int:
        return self.procs[service].pid

    def start(self, service: str, timeout: float = 30) -> None:
        """Start ``service`` (a further process of one is named with a number: ``worker2``)."""
        env = {**os.environ, **to_environ(self.settings)}
        log = open(self.logs / f"{service}.log", "ab")
        self.procs[service] = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run", service.rstrip("0123456789")],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[service].poll() is not None:
                raise RuntimeError(f"{service} exited; see {self.logs / service}.log")
            if self._healthy(service):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{service} not healthy after {timeout}s; see {self.logs}")

    def _healthy(self, service: str) -> bool:
        if service.startswith("worker"):
            return check_service("worker", self.settings)
        url = f"http://127.0.0.1:{self.port(service)}/health"
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def check_alive(self) -> None:
        """Raise, naming the service and its exit status, when one has died."""
        for service, proc in self.procs.items():
            if proc.poll() is not None:
                log = (self.logs / f"{service}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{service} exited with {proc.returncode}; log tail:\n{log}")

    def stop(self, service: str) -> None:
        """Stop gracefully (SIGTERM), killing it if it lingers."""
        proc = self.procs.pop(service)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        for service in list(self.procs):
            self.stop(service)

    async def start_async(self, service: str) -> None:
        await asyncio.to_thread(self.start, service)

    async def stop_async(self, service: str) -> None:
        await asyncio.to_thread(self.stop, service)
