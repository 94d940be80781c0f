"""Faults in the middle of a load, on the real processes and private servers: kill -9 of the
worker, of ingest and of query; a Redis restart (its data lost); a PostgreSQL restart. After
each, every acknowledged message is applied exactly once, memberships are those of a
fault-free run, Redis agrees with PostgreSQL and the query service answers accordingly. The
worker, and the services that were not killed, ride out the outages without exiting."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

import asyncpg
import httpx

from shared.settings import Settings
from tests.conftest import ServiceStack
from tests.e2e.conftest import Api, eventually
from tests.faults.load import Load, assert_final_state, create_busy_segment
from tests.faults.servers import PrivateServers

MESSAGES = 2_400


async def _under_load(
    api: Api,
    db: asyncpg.Pool,
    settings: Settings,
    fault: Callable[[Load], Awaitable[None]],
) -> Load:
    """Run the load; once a third is acknowledged, inject ``fault`` while it goes on."""
    busy_id = await create_busy_segment(api)
    load = Load(api, MESSAGES)
    running = asyncio.create_task(load.run())

    async def a_third_in() -> bool:
        return load.acked >= MESSAGES // 3

    await eventually(a_third_in, within=60)
    await fault(load)
    await asyncio.wait_for(running, 120)
    await assert_final_state(api, db, settings, load, busy_id)
    return load


async def _drained(db: asyncpg.Pool, env_id: int) -> bool:
    return bool(await db.fetchval("SELECT count(*) = 0 FROM inbox WHERE env_id = $1", env_id))


async def _processed(db: asyncpg.Pool, env_id: int) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM processed_messages WHERE env_id = $1", env_id
    )
    return count


def _pids(stack: ServiceStack) -> dict[str, int]:
    for name, proc in stack.procs.items():
        assert proc.poll() is None, f"{name} exited with {proc.returncode}"
    return {name: proc.pid for name, proc in stack.procs.items()}


async def _kill_9_and_restart(stack: ServiceStack, service: str) -> None:
    stack.kill(service, signal.SIGKILL)
    await asyncio.sleep(0.3)  # the load meets the dead service
    await asyncio.to_thread(stack.start, service)


async def test_no_fault(
    api: Api, db: asyncpg.Pool, fault_settings: Settings, fault_stack: ServiceStack
) -> None:
    """The control: the same load without a fault ends in the expected state."""

    async def nothing(_: Load) -> None:
        pass

    load = await _under_load(api, db, fault_settings, nothing)
    assert load.retries == 0


async def test_kill_9_of_the_worker(
    api: Api, db: asyncpg.Pool, fault_settings: Settings, fault_stack: ServiceStack
) -> None:
    async def kill_worker(_: Load) -> None:
        await _kill_9_and_restart(fault_stack, "worker")

    await _under_load(api, db, fault_settings, kill_worker)


async def test_kill_9_of_ingest(
    api: Api, db: asyncpg.Pool, fault_settings: Settings, fault_stack: ServiceStack
) -> None:
    async def kill_ingest(_: Load) -> None:
        await _kill_9_and_restart(fault_stack, "ingest")

    load = await _under_load(api, db, fault_settings, kill_ingest)
    assert load.retries > 0  # requests did meet the dead ingest (and were sent again)


async def test_kill_9_of_query(
    api: Api, db: asyncpg.Pool, fault_settings: Settings, fault_stack: ServiceStack
) -> None:
    async def kill_query(load: Load) -> None:
        failed = load.reads_failed
        await _kill_9_and_restart(fault_stack, "query")
        assert load.reads_failed > failed  # readers did meet the dead query service

    await _under_load(api, db, fault_settings, kill_query)


async def test_redis_restart(
    api: Api,
    db: asyncpg.Pool,
    fault_settings: Settings,
    fault_stack: ServiceStack,
    servers: PrivateServers,
) -> None:
    before = _pids(fault_stack)

    async def restart_redis(load: Load) -> None:
        # Redis dies while the worker is idle (no drain job running through the outage):
        # arq has neither jobs nor crons without Redis, yet the worker must go on applying
        load.pause()
        await eventually(lambda: _drained(db, api.env.id), within=30)
        await asyncio.sleep(0.5)  # the drain job ends
        servers.redis.kill()
        load.resume()
        acked, reads = load.acked, load.reads_ok
        processed = await _processed(db, api.env.id)
        async with httpx.AsyncClient(base_url=fault_stack.url("query")) as query:

            async def degraded() -> bool:
                resp = await query.get("/health")
                return resp.status_code == 200 and resp.json()["status"] == "degraded"

            await eventually(degraded, within=10)

        async def still_serving() -> bool:
            # ingest acknowledges, query answers, and the worker applies messages meanwhile
            applied = await _processed(db, api.env.id) - processed
            return load.acked > acked + 200 and load.reads_ok > reads + 5 and applied > 200

        await eventually(still_serving, within=20)
        await asyncio.to_thread(servers.redis.start)

    await _under_load(api, db, fault_settings, restart_redis)
    assert _pids(fault_stack) == before  # nobody exited, the worker least of all


async def test_postgres_restart(
    api: Api,
    db: asyncpg.Pool,
    fault_settings: Settings,
    fault_stack: ServiceStack,
    servers: PrivateServers,
) -> None:
    before = _pids(fault_stack)

    async def restart_postgres(load: Load) -> None:
        await asyncio.to_thread(servers.postgres.stop, "fast")
        retries = load.retries

        async def refused() -> bool:  # ingest answers 503: nothing is acknowledged meanwhile
            return load.retries > retries

        await eventually(refused, within=10)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(servers.postgres.start)

    await _under_load(api, db, fault_settings, restart_postgres)
    assert _pids(fault_stack) == before
    await _ingest_accepts(api)


async def test_the_worker_waits_for_its_servers_at_start(
    api: Api,
    db: asyncpg.Pool,
    fault_settings: Settings,
    fault_stack: ServiceStack,
    servers: PrivateServers,
) -> None:
    """A worker started before PostgreSQL and Redis (a whole machine rebooting) waits for
    them with backoff instead of exiting, then works."""
    await api.identify("early", {"n": 1})  # in the inbox before anything goes down
    fault_stack.kill("worker", signal.SIGKILL)
    servers.redis.kill()
    await asyncio.to_thread(servers.postgres.stop, "fast")
    try:
        fault_stack.start("worker", wait=False)
        await asyncio.sleep(2)
        worker = fault_stack.procs["worker"]
        assert worker.poll() is None, "the worker exited without its servers"
        await asyncio.to_thread(servers.redis.start)
        await asyncio.sleep(1)  # Redis back first: the worker now waits for PostgreSQL
        assert worker.poll() is None
    finally:
        await asyncio.to_thread(servers.postgres.start)
    await asyncio.to_thread(fault_stack.wait_healthy, "worker")

    async def applied() -> bool:
        profile = await api.profile("early")
        return profile is not None and profile["attributes"] == {"n": 1}

    await eventually(applied, within=30)
    assert _pids(fault_stack)["worker"] == worker.pid
    await _ingest_accepts(api)


async def _ingest_accepts(api: Api) -> None:
    """Ingest's first inserts after a PostgreSQL restart may meet a connection the restart
    closed: a 503 (the client retries) that must not last."""

    async def accepted() -> bool:
        resp = await api.ingest.post("/v1/track", json={"userId": "probe", "event": "Probe"})
        return resp.status_code == 200

    await eventually(accepted, within=10, interval=0.1)
