"""The pipelined SMEMBERS reader: many concurrent callers on one connection get their own
answers, a database other than 0 is selected, and failures (an unreachable or a silent server)
surface as redis errors."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.embedded import free_port
from services.query.redis_reader import PipelinedReader
from shared.settings import Settings


async def test_concurrent_reads_get_their_own_answers(
    redis: aioredis.Redis, settings: Settings
) -> None:
    assert settings.redis_url is not None
    keys = [f"{settings.redis_prefix}:reader:{i}" for i in range(300)]
    for i, key in enumerate(keys):
        await redis.sadd(key, f"_{i}", *(str(i * 10 + j) for j in range(i % 4)))  # type: ignore[misc]
    reader = PipelinedReader(settings.redis_url)
    try:
        answers = await asyncio.gather(*(reader.smembers(k) for k in keys))
        for i, answer in enumerate(answers):
            assert set(answer) == {f"_{i}", *(str(i * 10 + j) for j in range(i % 4))}
        assert await reader.smembers(f"{settings.redis_prefix}:reader:absent") == []
    finally:
        await reader.aclose()
        await redis.delete(*keys)


async def test_selects_the_database_of_the_url(settings: Settings) -> None:
    assert settings.redis_url is not None
    base = settings.redis_url.rsplit("/", 1)[0]
    other = aioredis.Redis.from_url(base + "/1", decode_responses=True)
    key = f"{settings.redis_prefix}:reader:db1"
    await other.sadd(key, "_1", "7")  # type: ignore[misc]
    reader = PipelinedReader(base + "/1")
    try:
        assert set(await reader.smembers(key)) == {"_1", "7"}
    finally:
        await reader.aclose()
        await other.delete(key)
        await other.aclose()


async def test_unreachable_redis_raises_a_redis_error() -> None:
    reader = PipelinedReader(f"redis://127.0.0.1:{free_port()}/0", timeout=1)
    with pytest.raises(RedisError):
        await reader.smembers("x")


async def test_a_silent_redis_times_out_every_caller_then_reconnects() -> None:
    """A server that accepts and never answers: every waiting caller gets a TimeoutError
    after about ``timeout``, and the next read opens a new connection."""
    connections: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        await reader.read(1 << 16)  # swallow the commands, never reply

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader = PipelinedReader(f"redis://127.0.0.1:{port}/0", timeout=0.3)
    try:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(reader.smembers(f"k{i}") for i in range(20)), return_exceptions=True
        )
        took = time.perf_counter() - started
        assert all(isinstance(r, RedisTimeoutError) for r in results), results
        assert 0.25 < took < 2.0
        with pytest.raises(RedisTimeoutError):
            await reader.smembers("again")
        assert len(connections) == 2  # the silent connection was dropped, a new one opened
    finally:
        await reader.aclose()
        server.close()
        for writer in connections:
            writer.close()
