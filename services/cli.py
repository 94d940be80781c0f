"""The ``segments`` command: operate a deployment.

segments dev                      start everything locally (the development runner)
segments migrate                  apply database migrations
segments create-env NAME          create an environment and print its keys (once)
segments run SERVICE              run one of ingest, query, admin, worker
segments check SERVICE            exit 0 when that service is healthy (for health checks)
segments console-user add EMAIL   create a console account (password from stdin or prompted)
segments verify-cache [--repair]  compare every Redis membership set with PostgreSQL
segments status                   the five figures to alert on, read from PostgreSQL and Redis
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import urllib.request

import msgspec

from shared.db import create_pool
from shared.environments import ensure_environment
from shared.migrate import migrate
from shared.settings import Settings, env_var, load_settings

SERVICES = ("ingest", "query", "admin", "worker")


def _require_urls(settings: Settings) -> tuple[str, str]:
    missing = [env_var(f) for f in ("database_url", "redis_url") if getattr(settings, f) is None]
    if missing:
        sys.exit(f"set {' and '.join(missing)} (or use `segments dev`, which starts embedded ones)")
    assert settings.database_url is not None and settings.redis_url is not None
    return settings.database_url, settings.redis_url


async def _migrate(dsn: str) -> list[str]:
    pool = await create_pool(dsn, size=1)
    try:
        async with pool.acquire() as conn:
            return await migrate(conn)
    finally:
        await pool.close()


async def _create_env(dsn: str, name: str, write_key: str | None, secret_key: str | None) -> bytes:
    pool = await create_pool(dsn, size=1)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            keys = await ensure_environment(conn, name, write_key=write_key, secret_key=secret_key)
    finally:
        await pool.close()
    return msgspec.json.encode(keys)


async def verify_cache(settings: Settings, *, repair: bool, recheck_after: float = 1.0) -> int:
    """Compare every Redis membership set with PostgreSQL (repairing drift with ``repair``),
    print what was found; returns how many sets disagree."""
    import redis.asyncio as aioredis

    from shared.membership.cache import MembershipCache
    from shared.membership.verify import CacheVerifier

    dsn, redis_url = _require_urls(settings)
    pool = await create_pool(dsn, size=2)
    client = aioredis.Redis.from_url(redis_url)
    try:
        cache = MembershipCache(client, settings.redis_prefix)
        drift = await CacheVerifier(pool, cache).verify_all(
            repair=repair, recheck_after=recheck_after
        )
    finally:
        await client.aclose()
        await pool.close()
    print(
        f"checked {drift.checked} membership sets: {drift.disagreeing} disagree with PostgreSQL"
        + (f", {drift.repaired} repaired" if repair else "")
    )
    for example in drift.examples:
        print(f"  disagrees: environment:user {example}")
    return drift.disagreeing


async def status(settings: Settings) -> int:
    """Print the five figures to alert on (:mod:`shared.backlog`), each with its verdict;
    returns how many are at alert level. Reads PostgreSQL and Redis directly, so it works
    while every service is down (PostgreSQL unreachable is one line at alert level)."""
    import asyncpg
    import redis.asyncio as aioredis

    from shared.backlog import figures, read_backlog

    dsn, redis_url = _require_urls(settings)
    try:
        pool = await asyncio.wait_for(create_pool(dsn, size=1), 10)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        print(f"WARN  postgresql    unreachable, no figure can be read: {exc!r}")
        return 1
    client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=2)
    try:
        found = figures(await read_backlog(pool, client, settings.redis_prefix))
    finally:
        await client.aclose()
        await pool.close()
    width = max(len(f.name) for f in found)
    for f in found:
        print(f"{'WARN' if f.alert else 'ok':<4}  {f.name:<{width}}  {f.text}")
    return sum(f.alert for f in found)


async def _enqueue_rebuild(settings: Settings) -> None:
    from arq.connections import RedisSettings, create_pool

    from shared.redis_keys import queue_name

    assert settings.redis_url is not None
    arq = await create_pool(RedisSettings.from_dsn(settings.redis_url))
    try:
        await arq.enqueue_job("rebuild_cache", _queue_name=queue_name(settings.redis_prefix))
    finally:
        await arq.aclose()


def run_service(service: str, settings: Settings) -> None:
    """Run one service in the foreground until it is stopped."""
    _require_urls(settings)
    from shared.logs import configure_logging

    configure_logging(settings, service)
    if service == "worker":
        from services.worker.main import run_worker

        run_worker(settings)
        return
    import importlib

    from services.http_server import serve

    # import only the app being run, so one service starts without the others' modules
    create_app = importlib.import_module(f"services.{service}.app").create_app
    ports = {
        "ingest": settings.ingest_port,
        "query": settings.query_port,
        "admin": settings.admin_port,
    }
    serve(create_app(settings), settings, ports[service])


def check_service(service: str, settings: Settings) -> bool:
    """Health check: HTTP services answer /health; the worker's arq health key is fresh."""
    if service == "worker":
        from services.worker.main import worker_healthy

        return bool(asyncio.run(worker_healthy(settings)))
    port = {
        "ingest": settings.ingest_port,
        "query": settings.query_port,
        "admin": settings.admin_port,
    }[service]
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host  # noqa: S104
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=3) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="segments", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dev", help="start everything locally (embedded PostgreSQL/Redis if no URLs)")
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser("setup", help="migrate and create/reuse the development environment")
    create = sub.add_parser("create-env", help="create an environment; prints its keys once")
    create.add_argument("name")
    create.add_argument("--write-key")
    create.add_argument("--secret-key")
    sub.add_parser("rebuild-cache", help="ask the worker to refill Redis from PostgreSQL")
    verify = sub.add_parser(
        "verify-cache", help="compare every Redis membership set with PostgreSQL"
    )
    verify.add_argument("--repair", action="store_true", help="overwrite the sets that disagree")
    sub.add_parser(
        "status",
        help="the five figures to alert on (worker lag, dead letters, recomputes, webhooks, "
        "cache), read from PostgreSQL and Redis; exit 1 when one is at alert level",
    )
    run = sub.add_parser("run", help="run one service")
    run.add_argument("service", choices=SERVICES)
    check = sub.add_parser("check", help="exit 0 when a service is healthy")
    check.add_argument("service", choices=SERVICES)
    users = sub.add_parser("console-user", help="console accounts").add_subparsers(
        dest="action", required=True
    )
    add_user = users.add_parser(
        "add", help="create an account or set its password (read from stdin or prompted)"
    )
    add_user.add_argument("email")
    add_user.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME",
        help="an environment it may see (repeatable; default: every environment)",
    )
    args = parser.parse_args(argv)

    settings = load_settings()
    if args.command == "dev":
        from services.devrun import run_dev

        sys.exit(run_dev(settings))
    if args.command == "migrate":
        dsn, _ = _require_urls(settings)
        applied = asyncio.run(_migrate(dsn))
        print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    elif args.command == "setup":
        _require_urls(settings)
        from services.devrun import prepare, secret_key_line

        prepared = prepare(settings)
        secret = secret_key_line(prepared, settings, terminal=sys.stdout.isatty())
        print(
            f"environment {prepared.keys.name!r}: write key {prepared.keys.writeKey}, "
            f"secret key {secret}"
        )
    elif args.command == "create-env":
        dsn, _ = _require_urls(settings)
        print(asyncio.run(_create_env(dsn, args.name, args.write_key, args.secret_key)).decode())
    elif args.command == "rebuild-cache":
        _require_urls(settings)
        asyncio.run(_enqueue_rebuild(settings))
        print("rebuild enqueued; the worker logs when it is done")
    elif args.command == "verify-cache":
        wrong = asyncio.run(verify_cache(settings, repair=args.repair))
        sys.exit(1 if wrong and not args.repair else 0)
    elif args.command == "status":
        sys.exit(1 if asyncio.run(status(settings)) else 0)
    elif args.command == "run":
        run_service(args.service, settings)
    elif args.command == "check":
        sys.exit(0 if check_service(args.service, settings) else 1)
    elif args.command == "console-user":
        from services.admin.console.cli import console_user_add

        dsn, _ = _require_urls(settings)
        console_user_add(dsn, args.email, args.env)


if __name__ == "__main__":
    main()
