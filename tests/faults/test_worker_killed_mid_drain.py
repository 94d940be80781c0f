"""Nothing acknowledged is ever lost: kill -9 the worker in the middle of draining a backlog
(accepted while no worker ran, so that the kill surely lands inside a drain)."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter

import asyncpg
from arq.connections import RedisSettings, create_pool
from arq.constants import in_progress_key_prefix, job_key_prefix

from shared.redis_keys import drain_job_id, queue_name
from tests.conftest import ServiceStack
from tests.e2e.conftest import Api, eventually

USERS = 100
MESSAGES = 6_000
PER_REQUEST = 2_000


async def test_kill_the_worker_mid_drain_and_every_acknowledged_message_applies_once(
    api: Api, fault_stack: ServiceStack, db: asyncpg.Pool
) -> None:
    stack = fault_stack
    env_id = api.env.id
    stack.kill("worker", signal.SIGTERM)  # accept everything first, with no worker running
    sent: Counter[str] = Counter()
    for start in range(0, MESSAGES, PER_REQUEST):
        batch = []
        for i in range(start, start + PER_REQUEST):
            user = f"k{i % USERS}"
            sent[user] += 1
            batch.append(
                {
                    "type": "identify",
                    "userId": user,
                    "messageId": f"kill-{i}",
                    "traits": {"n": {"add": 1}},
                }
            )
        resp = await api.ingest.post("/v1/batch", json={"batch": batch})
        assert resp.status_code == 200, resp.text
    inbox = "SELECT count(*) FROM inbox WHERE env_id = $1"
    assert await db.fetchval(inbox, env_id) == MESSAGES  # acknowledged = committed

    # a worker with small batches, killed with SIGKILL once it is part-way through
    stack.start("worker", worker_batch=100)

    async def part_way() -> bool:
        return bool(await db.fetchval(inbox, env_id) <= MESSAGES - 600)

    await eventually(part_way, interval=0.005)
    stack.kill("worker", signal.SIGKILL)
    remaining = await db.fetchval(inbox, env_id)
    assert 0 < remaining < MESSAGES, "the kill must land mid-way for this test to mean anything"

    stack.start("worker")

    async def drained() -> bool:
        return bool(await db.fetchval(inbox, env_id) == 0)

    await eventually(drained, within=60)
    rows = await db.fetch(
        "SELECT user_id, (attributes->>'n')::int AS n FROM users WHERE env_id = $1", env_id
    )
    assert {r["user_id"]: r["n"] for r in rows} == dict(sent)
    assert (
        await db.fetchval("SELECT count(*) FROM processed_messages WHERE env_id = $1", env_id)
        == MESSAGES
    )


async def test_a_drain_job_left_running_by_a_killed_worker_runs_again_at_start(
    fault_stack: ServiceStack,
) -> None:
    """A worker killed in the drain job leaves arq's in-progress mark for the longest job
    timeout (an hour): until then ingest's enqueues are deduplicated into the dead job and
    only the sweep drains. A starting worker drops the mark, so the job runs at once."""
    stack = fault_stack
    settings = stack.settings
    assert settings.redis_url is not None
    stack.kill("worker", signal.SIGKILL)
    job_id = drain_job_id(settings.redis_prefix)
    arq = await create_pool(RedisSettings.from_dsn(settings.redis_url))
    try:
        await arq.delete(job_key_prefix + job_id)
        await arq.enqueue_job(
            "drain", _job_id=job_id, _queue_name=queue_name(settings.redis_prefix)
        )
        await arq.psetex(in_progress_key_prefix + job_id, 3_600_000, b"1")  # as the kill left it
        await asyncio.to_thread(stack.start, "worker")

        async def ran() -> bool:
            return not await arq.exists(job_key_prefix + job_id)

        await eventually(ran, within=10)
    finally:
        await arq.aclose()
