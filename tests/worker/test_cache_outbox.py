"""The cache outbox: a writer that died between its commit and its Redis step is finished by
the sweeper, from PostgreSQL, once its grace has passed; a writer that finished clears its
row."""

from __future__ import annotations

from shared.environments import EnvironmentKeys
from shared.membership import outbox
from shared.redis_keys import anonymous
from tests.worker.conftest import Worker
from tests.worker.test_segments import _segment


async def test_the_sweeper_finishes_a_dead_writers_redis_step(
    worker: Worker, env: EnvironmentKeys
) -> None:
    seg = await _segment(worker, env.id, "pro", {"attribute": "plan", "op": "is", "value": "pro"})
    await worker.send(
        env.id, {"type": "identify", "userId": "ob", "anonymousId": "ob-anon", "traits": {}}
    )
    await worker.drain()
    assert not await worker.pool.fetchval(
        "SELECT count(*) FROM cache_outbox WHERE env_id = $1", env.id
    )  # the drain wrote Redis and cleared its row
    stale = await worker.cache.get(env.id, "ob")
    assert stale is not None and seg not in stale

    # a writer commits a change and dies before writing Redis
    pk = await worker.pool.fetchval(
        "SELECT id FROM users WHERE env_id = $1 AND user_id = 'ob'", env.id
    )
    async with worker.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO memberships (env_id, segment_id, user_pk) VALUES ($1, $2, $3)",
            env.id,
            seg,
            pk,
        )
        await conn.execute(
            "UPDATE users SET membership_version = membership_version + 1 WHERE id = $1", pk
        )
        await outbox.record(conn, env.id, [pk])
    assert await outbox.sweep(worker.pool, worker.cache) == 0  # within its grace: not yet
    assert await outbox.sweep(worker.pool, worker.cache, grace=0) == 1
    for key in ("ob", anonymous("ob-anon")):
        fresh = await worker.cache.get(env.id, key)
        assert fresh is not None and seg in fresh, key
    assert not await worker.pool.fetchval(
        "SELECT count(*) FROM cache_outbox WHERE env_id = $1", env.id
    )


async def test_an_erase_whose_caller_died_still_gets_its_holds(
    worker: Worker, env: EnvironmentKeys
) -> None:
    await worker.send(env.id, {"type": "identify", "userId": "gone", "anonymousId": "gone-a"})
    await worker.drain()
    assert await worker.cache.get(env.id, "gone") is not None
    async with worker.pool.acquire() as conn, conn.transaction():
        await outbox.record(
            conn, env.id, [], erased_keys=["gone", anonymous("gone-a")], hold_version=99
        )
    assert await outbox.sweep(worker.pool, worker.cache, grace=0) == 1
    for key in ("gone", anonymous("gone-a")):
        assert await worker.cache.get(env.id, key) is None  # holds: a read asks PostgreSQL
        await worker.cache.write(env.id, key, 98, [1])  # an older write is turned away
        assert await worker.cache.get(env.id, key) is None
