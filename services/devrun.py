"""The development runner: everything on one machine with one command.

Starts embedded PostgreSQL and Redis when no URLs are configured, applies migrations, creates
(or reuses) the development environment, runs ingest, query, admin and worker as child
processes, prints the URLs and keys, and stops them all on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from services.cli import SERVICES, check_service
from services.embedded import start_postgres, start_redis, stop_redis
from shared.db import create_pool
from shared.environments import EnvironmentKeys, ensure_environment
from shared.migrate import migrate
from shared.settings import Settings, to_environ

DEV_ENV_NAME = "development"


class DevKeys(msgspec.Struct):
    writeKey: str
    secretKey: str


async def _prepare(settings: Settings, keys_file: Path) -> EnvironmentKeys:
    """Migrate and make sure the development environment exists with known keys."""
    assert settings.database_url is not None
    write_key, secret_key = settings.dev_write_key, settings.dev_secret_key
    if keys_file.exists() and not (write_key and secret_key):
        saved = msgspec.json.decode(keys_file.read_bytes(), type=DevKeys)
        write_key = write_key or saved.writeKey
        secret_key = secret_key or saved.secretKey
    pool = await create_pool(settings.database_url, size=1)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            keys = await ensure_environment(
                conn, DEV_ENV_NAME, write_key=write_key, secret_key=secret_key
            )
    finally:
        await pool.close()
    keys_file.write_bytes(msgspec.json.encode(DevKeys(keys.writeKey, keys.secretKey)))
    keys_file.chmod(0o600)
    return keys


def prepare(settings: Settings) -> EnvironmentKeys:
    """Migrate and create (or reuse) the development environment; the keys come from
    SEGMENTS_DEV_WRITE_KEY / SEGMENTS_DEV_SECRET_KEY, else from the data folder, else new."""
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_prepare(settings, data_dir / "dev-keys.json"))


def run_dev(settings: Settings) -> int:
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    embedded_redis: str | None = None
    if settings.database_url is None:
        print("starting embedded PostgreSQL ...", flush=True)
        dsn = start_postgres(data_dir, stop_at_exit=True)  # stopped when this runner exits
        settings = msgspec.structs.replace(settings, database_url=dsn)
    if settings.redis_url is None:
        print("starting embedded Redis ...", flush=True)
        embedded_redis = start_redis(data_dir)
        settings = msgspec.structs.replace(settings, redis_url=embedded_redis)
    keys = prepare(settings)
    if settings.webhook_allow_private is None:  # everything is local here, receivers too
        settings = msgspec.structs.replace(settings, webhook_allow_private=True)

    child_env = {**os.environ, **to_environ(settings)}
    children = {
        name: subprocess.Popen([sys.executable, "-m", "services.cli", "run", name], env=child_env)
        for name in SERVICES
    }
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    deadline = time.monotonic() + 30
    while not stopping and time.monotonic() < deadline:
        if all(check_service(name, settings) for name in SERVICES):
            break
        if any(p.poll() is not None for p in children.values()):
            break
        time.sleep(0.2)
    code = 0
    if not stopping and all(p.poll() is None for p in children.values()):
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host  # noqa: S104
        print(
            "\nsegments is running (Ctrl-C stops it)\n"
            f"  ingest  http://{host}:{settings.ingest_port}\n"
            f"  query   http://{host}:{settings.query_port}\n"
            f"  admin   http://{host}:{settings.admin_port}\n"
            f"  environment {keys.name!r}\n"
            f"    write key   {keys.writeKey}\n"
            f"    secret key  {keys.secretKey}\n"
            f"  PostgreSQL  {settings.database_url}\n"
            f"  Redis       {settings.redis_url}\n",
            flush=True,
        )
        while not stopping:
            dead = [n for n, p in children.items() if p.poll() is not None]
            if dead:
                print(f"service stopped unexpectedly: {', '.join(dead)}", file=sys.stderr)
                code = 1
                break
            time.sleep(0.2)
    else:
        code = 0 if stopping else 1
        if code:
            print("services did not become healthy", file=sys.stderr)
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in children.values():
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    if embedded_redis is not None:
        stop_redis(embedded_redis)
    print("stopped.")
    return code
