"""Configuration, read from the environment once into typed objects.

Nothing else in the code base reads ``os.environ``: processes call :func:`load_settings` at
start-up and pass the result inwards.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every knob of the four services, with its environment variable and default."""

    #: DATABASE_URL: PostgreSQL DSN. None means "start the embedded one" (development runner only).
    database_url: str | None = None
    #: REDIS_URL: Redis URL. None means "start the embedded one" (development runner only).
    redis_url: str | None = None
    #: SEGMENTS_DATA_DIR: where the development runner keeps embedded data and dev keys.
    data_dir: str = ".data"
    #: SEGMENTS_HOST: the address the HTTP services bind.
    host: str = "127.0.0.1"
    #: SEGMENTS_INGEST_PORT / SEGMENTS_QUERY_PORT / SEGMENTS_ADMIN_PORT
    ingest_port: int = 8001
    query_port: int = 8002
    admin_port: int = 8003
    #: SEGMENTS_DEV_WRITE_KEY / SEGMENTS_DEV_SECRET_KEY: keys of the development environment.
    dev_write_key: str | None = None
    dev_secret_key: str | None = None
    #: SEGMENTS_DEV_CONSOLE_EMAIL / SEGMENTS_DEV_CONSOLE_PASSWORD: the console account the
    #: development runner creates (default email dev@segments.local; password generated once
    #: and kept in the data folder).
    dev_console_email: str | None = None
    dev_console_password: str | None = None
    #: SEGMENTS_REDIS_PREFIX: prefix of every Redis key we own (lets test runs share a server).
    redis_prefix: str = "seg"
    #: SEGMENTS_DB_POOL_SIZE: connections per process.
    db_pool_size: int = 10
    #: SEGMENTS_WORKER_BATCH: inbox rows one worker transaction claims.
    worker_batch: int = 1000
    #: SEGMENTS_SWEEP_SECONDS: how often the worker's cron sweep looks for unclaimed inbox rows.
    sweep_seconds: int = 2
    #: SEGMENTS_TIME_RECHECK_SECONDS: how often time-dependent segments are re-evaluated.
    time_recheck_seconds: int = 60
    #: SEGMENTS_INGEST_BATCH_ROWS: most messages one ingest INSERT carries.
    ingest_batch_rows: int = 5000
    #: SEGMENTS_CACHE_SECONDS: how long query/ingest keep environments and segment lists in memory.
    cache_seconds: float = 1.0
    #: SEGMENTS_WEBHOOK_ALLOW_PRIVATE: let webhooks call loopback, private, link-local and other
    #: non-public addresses. Unset means no (the admin API refuses such URLs and the worker
    #: refuses to connect to them: SSRF), except under the development runner, which allows them.
    webhook_allow_private: bool | None = None
    #: SEGMENTS_IMPORT_MAX_BYTES: largest CSV file an import accepts (a bigger upload is a 413).
    import_max_bytes: int = 200 * 1000 * 1000
    #: SEGMENTS_ADMIN_QUERY_TIMEOUT_SECONDS: longest a segment preview or a page of the users
    #: list may run in PostgreSQL (statement_timeout) before it is a 422 asking for a simpler
    #: condition. Previews over 100,000 users take 0.1-0.3 s.
    admin_query_timeout_seconds: float = 10.0


_ENV_NAMES: dict[str, str] = {
    "database_url": "DATABASE_URL",
    "redis_url": "REDIS_URL",
    "data_dir": "SEGMENTS_DATA_DIR",
    "host": "SEGMENTS_HOST",
    "ingest_port": "SEGMENTS_INGEST_PORT",
    "query_port": "SEGMENTS_QUERY_PORT",
    "admin_port": "SEGMENTS_ADMIN_PORT",
    "dev_write_key": "SEGMENTS_DEV_WRITE_KEY",
    "dev_secret_key": "SEGMENTS_DEV_SECRET_KEY",
    "dev_console_email": "SEGMENTS_DEV_CONSOLE_EMAIL",
    "dev_console_password": "SEGMENTS_DEV_CONSOLE_PASSWORD",
    "redis_prefix": "SEGMENTS_REDIS_PREFIX",
    "db_pool_size": "SEGMENTS_DB_POOL_SIZE",
    "worker_batch": "SEGMENTS_WORKER_BATCH",
    "sweep_seconds": "SEGMENTS_SWEEP_SECONDS",
    "ingest_batch_rows": "SEGMENTS_INGEST_BATCH_ROWS",
    "time_recheck_seconds": "SEGMENTS_TIME_RECHECK_SECONDS",
    "cache_seconds": "SEGMENTS_CACHE_SECONDS",
    "webhook_allow_private": "SEGMENTS_WEBHOOK_ALLOW_PRIVATE",
    "import_max_bytes": "SEGMENTS_IMPORT_MAX_BYTES",
    "admin_query_timeout_seconds": "SEGMENTS_ADMIN_QUERY_TIMEOUT_SECONDS",
}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read :class:`Settings` from ``environ`` (default: the process environment).

    Empty variables count as unset. A malformed number raises ``ValueError`` naming the variable.
    """
    env = os.environ if environ is None else environ
    raw = {field: env[var] for field, var in _ENV_NAMES.items() if env.get(var, "") != ""}
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(f"bad configuration: {exc}") from exc


def env_var(field: str) -> str:
    """The environment variable behind a settings field (for messages and child processes)."""
    return _ENV_NAMES[field]


def to_environ(settings: Settings) -> dict[str, str]:
    """The environment variables that reproduce ``settings`` in a child process."""
    out: dict[str, str] = {}
    for field, var in _ENV_NAMES.items():
        value = getattr(settings, field)
        if value is not None:
            out[var] = str(value)
    return out
