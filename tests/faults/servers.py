"""A PostgreSQL and a Redis of the fault tests' own, on free ports, that the tests may stop,
kill and start again: never the machine's shared servers.

PostgreSQL uses pgserver's binaries (a dependency of the development runner) with a data
folder made by ``initdb`` in a temporary directory; as root it runs as pgserver's system user,
as pgserver itself does. Durability settings are off: these servers hold test data only, and a
fast shutdown (what the tests do) still writes everything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from services.embedded import free_port, reachable, redis_server_command


class RedisProcess:
    """redis-server as a child process on a fixed free port, without persistence."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = open(self.folder / "redis.log", "ab")
        self.proc = subprocess.Popen(
            redis_server_command(self.port, self.folder),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        _wait_for(lambda: reachable("127.0.0.1", self.port), f"redis on :{self.port}")

    def kill(self) -> None:
        """SIGKILL: everything in it is lost, as in a crash or a restart without persistence."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


class PostgresProcess:
    """A PostgreSQL cluster in a temporary folder, listening on 127.0.0.1:<free port>."""

    def __init__(self, folder: Path) -> None:
        import pgserver

        self.folder = folder
        self.data = folder / "pgdata"
        self.port = free_port()
        self.bin = Path(pgserver.__file__).parent / "pginstall" / "bin"
        self.user: str | None = None

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            import stat

            from pgserver.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            self.user = "pgserver"
            entry = ensure_user_exists(self.user)
            assert entry is not None
            ensure_prefix_permissions(self.folder)
            ensure_prefix_permissions(self.bin)
            readable = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
            ensure_folder_permissions(self.bin, readable)
            ensure_folder_permissions(self.bin.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 100\nshared_buffers = 32MB\n"
            )

    def start(self) -> None:
        log = str(self.folder / "postgres.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-w", "-t", "60", "start")
        _wait_for(lambda: reachable("127.0.0.1", self.port), f"postgres on :{self.port}")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: clients are disconnected, transactions rolled back (a restart, a
        failover); ``immediate``: as if it crashed."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-m", mode, "stop")

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(
            [str(self.bin / program), *args],
            check=True,
            capture_output=True,
            user=self.user,
            cwd=self.folder,
            timeout=120,
        )


class PrivateServers:
    """One private Redis and one private PostgreSQL, removed with their folder at the end."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="segfaults-"))
        self.redis = RedisProcess(self.folder)
        self.postgres = PostgresProcess(self.folder)

    def start(self) -> PrivateServers:
        self.postgres.init()
        self.postgres.start()
        self.redis.start()
        return self

    def close(self) -> None:
        self.redis.kill()
        try:
            self.postgres.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # not running
        shutil.rmtree(self.folder, ignore_errors=True)


def _wait_for(check: object, what: str, timeout: float = 30) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up in {timeout}s")
        time.sleep(0.05)
