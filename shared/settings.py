"""Configuration, read from the environment once into typed objects.

Nothing else in the code base reads ``os.environ``: processes call :func:`load_settings` at
start-up and pass the result inwards.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

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
    #: SEGMENTS_DRAIN_LANES: inbox drain rounds one worker process runs at once; two keep
    #: PostgreSQL busy while the worker evaluates the next batch. Rows about an identity
    #: another round holds wait for it (services.worker.drain.InFlight).
    drain_lanes: int = 2
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
    #: SEGMENTS_RATE_LIMIT_KEY_PER_SECOND: requests per second one API key may make to ingest
    #: or query, per process (0: no limit). Above what one process serves (about 11,000
    #: identifies/s on 2 cores), so only a key flooding several processes' share is held back.
    rate_limit_key_per_second: float = 10_000.0
    #: SEGMENTS_RATE_LIMIT_ADDRESS_PER_SECOND: requests per second from one client address,
    #: per process (0: no limit). A browser sends at most one batch per 50 ms while busy, a
    #: server SDK a batch every few seconds: 2,000/s is an office of thousands behind one NAT.
    rate_limit_address_per_second: float = 2_000.0
    #: SEGMENTS_RATE_LIMIT_BURST_SECONDS: a bucket holds this many seconds of its rate.
    rate_limit_burst_seconds: float = 2.0
    #: SEGMENTS_TRUSTED_PROXIES: addresses whose X-Forwarded-For names the client (comma
    #: separated, "*" for any): set it to your load balancer's, or every client shares its
    #: address limit.
    trusted_proxies: str = "127.0.0.1"
    #: SEGMENTS_HTTP_MAX_HEADER_BYTES: request line and headers larger than this get a 431.
    http_max_header_bytes: int = 16 * 1024
    #: SEGMENTS_HTTP_HEADER_TIMEOUT_SECONDS: a request whose headers are not complete this long
    #: after its first byte (or after the connection opened) gets a 408 and is closed.
    http_header_timeout_seconds: float = 10.0
    #: SEGMENTS_HTTP_MAX_CONCURRENCY: connections and requests one HTTP process serves at once;
    #: beyond, new requests get a 503 at once.
    http_max_concurrency: int = 2000
    #: SEGMENTS_RECOMPUTE_CONCURRENCY: bulk recomputes one worker process runs at once (its
    #: recompute lane; the inbox drain runs beside them, never behind them).
    recompute_concurrency: int = 2
    #: SEGMENTS_RECOMPUTE_STATEMENT_SECONDS: statement timeout of a bulk recompute's statements
    #: (each covers a few thousand users); a recompute that times out three times is 'failed'.
    recompute_statement_seconds: float = 30.0
    #: SEGMENTS_IDENTITY_TOKEN_MAX_AGE_SECONDS: an identity token without ``exp`` is refused
    #: once its ``iat`` is older than this (a day: a page's token is minted at sign-in).
    identity_token_max_age_seconds: float = 24 * 3600.0
    #: SEGMENTS_CONSOLE_SECURE_COOKIE: mark the console's cookies ``Secure``. Unset: when the
    #: request came over https, which includes a TLS-terminating proxy listed in
    #: SEGMENTS_TRUSTED_PROXIES that sends ``X-Forwarded-Proto: https``; true: always (a proxy
    #: that does not send it); false: never.
    console_secure_cookie: bool | None = None
    #: SEGMENTS_METRICS_TOKEN: a bearer token that may read ``/metrics`` (a scrape credential
    #: that is no environment's key). Unset: only secret keys may.
    metrics_token: str | None = None
    #: SEGMENTS_WORKER_METRICS_PORT: where the worker serves its ``/metrics`` (0: nowhere).
    worker_metrics_port: int = 8004
    #: SEGMENTS_LOG_FORMAT: ``text`` (default) or ``json`` (one JSON object a line, with the
    #: request id of the request being served).
    log_format: Literal["text", "json"] = "text"
    #: SEGMENTS_ACCESS_LOG: one log line per HTTP request (method, route, status, duration,
    #: request id). Off by default: at 10,000 requests/s it is most of the log.
    access_log: bool = False
    #: SEGMENTS_HTTP_METRICS: count and time HTTP requests, and give each a request id
    #: (``X-Request-Id``). On by default (its cost: ``bench.http_metrics``).
    http_metrics: bool = True
    #: SEGMENTS_RETENTION_PROCESSED_DAYS: days a messageId is remembered (the dedup window:
    #: a message repeated within it applies once); whole weekly partitions are dropped after.
    retention_processed_days: int = 7
    #: SEGMENTS_RETENTION_CHANGES_DAYS: days the membership change log (change feeds, a
    #: profile's history) is kept; whole weekly partitions are dropped after.
    retention_changes_days: int = 90
    #: SEGMENTS_RETENTION_DELIVERIES_DAYS: days the webhook delivery log is kept (pending
    #: deliveries are kept until sent or given up); whole weekly partitions are dropped after.
    retention_deliveries_days: int = 30


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
    "drain_lanes": "SEGMENTS_DRAIN_LANES",
    "sweep_seconds": "SEGMENTS_SWEEP_SECONDS",
    "ingest_batch_rows": "SEGMENTS_INGEST_BATCH_ROWS",
    "time_recheck_seconds": "SEGMENTS_TIME_RECHECK_SECONDS",
    "cache_seconds": "SEGMENTS_CACHE_SECONDS",
    "webhook_allow_private": "SEGMENTS_WEBHOOK_ALLOW_PRIVATE",
    "import_max_bytes": "SEGMENTS_IMPORT_MAX_BYTES",
    "admin_query_timeout_seconds": "SEGMENTS_ADMIN_QUERY_TIMEOUT_SECONDS",
    "rate_limit_key_per_second": "SEGMENTS_RATE_LIMIT_KEY_PER_SECOND",
    "rate_limit_address_per_second": "SEGMENTS_RATE_LIMIT_ADDRESS_PER_SECOND",
    "rate_limit_burst_seconds": "SEGMENTS_RATE_LIMIT_BURST_SECONDS",
    "trusted_proxies": "SEGMENTS_TRUSTED_PROXIES",
    "http_max_header_bytes": "SEGMENTS_HTTP_MAX_HEADER_BYTES",
    "http_header_timeout_seconds": "SEGMENTS_HTTP_HEADER_TIMEOUT_SECONDS",
    "http_max_concurrency": "SEGMENTS_HTTP_MAX_CONCURRENCY",
    "recompute_concurrency": "SEGMENTS_RECOMPUTE_CONCURRENCY",
    "recompute_statement_seconds": "SEGMENTS_RECOMPUTE_STATEMENT_SECONDS",
    "identity_token_max_age_seconds": "SEGMENTS_IDENTITY_TOKEN_MAX_AGE_SECONDS",
    "console_secure_cookie": "SEGMENTS_CONSOLE_SECURE_COOKIE",
    "metrics_token": "SEGMENTS_METRICS_TOKEN",
    "worker_metrics_port": "SEGMENTS_WORKER_METRICS_PORT",
    "log_format": "SEGMENTS_LOG_FORMAT",
    "access_log": "SEGMENTS_ACCESS_LOG",
    "http_metrics": "SEGMENTS_HTTP_METRICS",
    "retention_processed_days": "SEGMENTS_RETENTION_PROCESSED_DAYS",
    "retention_changes_days": "SEGMENTS_RETENTION_CHANGES_DAYS",
    "retention_deliveries_days": "SEGMENTS_RETENTION_DELIVERIES_DAYS",
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
