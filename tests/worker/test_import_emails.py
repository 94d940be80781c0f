"""Users found by email through an index (migration 046): ``email_lower`` follows every write
of the attributes, and the import's email look-up reads it by the index."""

from __future__ import annotations

from services.worker.import_rows import _BY_EMAIL
from shared.environments import EnvironmentKeys
from tests.worker.conftest import Worker


async def _email_lower(worker: Worker, env_id: int, user_id: str) -> str | None:
    value: str | None = await worker.pool.fetchval(
        "SELECT email_lower FROM users WHERE env_id = $1 AND user_id = $2", env_id, user_id
    )
    return value


async def test_email_lower_follows_the_email_through_every_write(
    worker: Worker, env: EnvironmentKeys
) -> None:
    await worker.send(env.id, {"type": "identify", "userId": "e1", "traits": {"plan": "pro"}})
    await worker.drain()
    assert await _email_lower(worker, env.id, "e1") is None
    await worker.send(
        env.id, {"type": "identify", "userId": "e1", "traits": {"email": "Ada@Example.COM"}}
    )
    await worker.drain()
    assert await _email_lower(worker, env.id, "e1") == "ada@example.com"
    await worker.send(env.id, {"type": "identify", "userId": "e1", "traits": {"plan": "free"}})
    await worker.drain()
    assert await _email_lower(worker, env.id, "e1") == "ada@example.com"
    await worker.send(env.id, {"type": "identify", "userId": "e1", "traits": {"email": None}})
    await worker.drain()
    assert await _email_lower(worker, env.id, "e1") is None


async def test_the_email_look_up_can_use_the_index(worker: Worker, env: EnvironmentKeys) -> None:
    async with worker.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        rows = await conn.fetch("EXPLAIN " + _BY_EMAIL, env.id, ["ada@example.com"])
    assert "Index Scan using users_email on users" in "\n".join(r[0] for r in rows)
