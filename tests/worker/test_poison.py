"""A row the worker cannot apply is isolated by bisection inside the claimed batch: every other
row applies exactly once, the bad one lands in dead_letters with its error, and it takes a
few savepoints (about 2 log2 n), never a round per row.

The poison is a trigger that refuses profiles carrying a ``poison`` attribute: a failure the
worker's code knows nothing about, raised by PostgreSQL in the middle of a batch's writes,
like a NUL in text or a value out of range."""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator

import pytest

from shared.environments import EnvironmentKeys
from tests.worker.conftest import Worker


@pytest.fixture
async def poison_trigger(worker: Worker) -> AsyncIterator[None]:
    await worker.pool.execute(
        """CREATE OR REPLACE FUNCTION test_refuse_poison() RETURNS trigger AS $$
           BEGIN RAISE EXCEPTION 'poisoned profile %', NEW.user_id; END $$ LANGUAGE plpgsql;
           CREATE TRIGGER test_refuse_poison BEFORE INSERT OR UPDATE ON users FOR EACH ROW
           WHEN (NEW.attributes ? 'poison') EXECUTE FUNCTION test_refuse_poison();"""
    )
    yield
    await worker.pool.execute(
        """DROP TRIGGER test_refuse_poison ON users;
           DROP FUNCTION test_refuse_poison();"""
    )


def _clean(i: int) -> dict[str, object]:
    return {
        "type": "identify",
        "userId": f"u{i}",
        "messageId": f"m{i}",
        "traits": {"n": {"add": 1}},
    }


def _poison(i: int) -> dict[str, object]:
    return {"type": "identify", "userId": f"p{i}", "messageId": f"p{i}", "traits": {"poison": 1}}


async def _counts(worker: Worker, env_id: int) -> dict[str, int]:
    rows = await worker.pool.fetch(
        "SELECT user_id, (attributes->>'n')::int AS n FROM users WHERE env_id = $1", env_id
    )
    return {r["user_id"]: r["n"] for r in rows}


@pytest.mark.parametrize("position", [0, 137, 499])
async def test_one_poison_row_is_isolated_in_a_few_savepoints(
    worker: Worker, env: EnvironmentKeys, poison_trigger: None, position: int
) -> None:
    rows = 500
    messages = [_clean(i) for i in range(rows - 1)]
    messages.insert(position, _poison(position))
    await worker.send(env.id, *messages)
    before = worker.stats.attempts
    assert await worker.drain(batch=1000) == rows
    attempts = worker.stats.attempts - before
    assert attempts <= 2 * math.ceil(math.log2(rows)) + 1, attempts

    assert await _counts(worker, env.id) == {f"u{i}": 1 for i in range(rows - 1)}
    dead = await worker.pool.fetch(
        "SELECT inbox_id, error FROM dead_letters WHERE env_id = $1", env.id
    )
    assert len(dead) == 1 and f"poisoned profile p{position}" in dead[0]["error"]
    assert await worker.pool.fetchval("SELECT count(*) FROM inbox WHERE env_id = $1", env.id) == 0
    processed = await worker.pool.fetchval(
        "SELECT count(*) FROM processed_messages WHERE env_id = $1", env.id
    )
    assert processed == rows - 1  # the poison's messageId is not recorded: it never applied


async def test_several_poison_rows_and_duplicates(
    worker: Worker, env: EnvironmentKeys, poison_trigger: None
) -> None:
    messages = [_clean(i) for i in range(300)]
    for position in (3, 150, 151, 299):
        messages.insert(position, _poison(position))
    messages += [_clean(i) for i in range(0, 300, 7)]  # repeated messageIds apply once
    await worker.send(env.id, *messages)
    await worker.drain(batch=1000)
    assert await _counts(worker, env.id) == {f"u{i}": 1 for i in range(300)}
    dead = await worker.pool.fetch("SELECT error FROM dead_letters WHERE env_id = $1", env.id)
    assert sorted(re.findall(r"poisoned profile (p\d+)", d["error"])[0] for d in dead) == [
        "p150",
        "p151",
        "p299",
        "p3",
    ]
