"""Batches: invalid messages are rejected one by one, the valid ones kept."""

from __future__ import annotations

from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from shared.environments import EnvironmentKeys
from shared.messages import MAX_MESSAGE_BYTES
from tests.ingest.conftest import inbox_count, inbox_messages


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_invalid_messages_are_rejected_individually(
    client: AsyncTestClient[Any], ingest_db: asyncpg.Pool, ienv: EnvironmentKeys
) -> None:
    batch = [
        {"type": "track", "userId": "u1", "event": "Kept", "messageId": "k1"},
        {"type": "track", "userId": "u1"},  # no event
        {"type": "identify", "userId": "guest"},  # a "no id" value
        {"type": "identify", "userId": "u2", "traits": "not an object"},
        {"type": "teleport", "userId": "u1"},
        {
            "type": "track",
            "userId": "u1",
            "event": "Big",
            "properties": {"p": "x" * MAX_MESSAGE_BYTES},
        },
        42,
        {"type": "identify", "anonymousId": 7, "traits": {"a": {"b": 1}}, "messageId": "k2"},
    ]
    resp = await client.post("/v1/batch", json={"batch": batch}, headers=bearer(ienv.writeKey))
    assert resp.status_code == 200, resp.text
    result = resp.json()
    assert result["success"] is True
    assert result["accepted"] == 2
    rejected = {r["index"]: r for r in result["rejected"]}
    assert sorted(rejected) == [1, 2, 3, 4, 5, 6]
    assert rejected[1]["field"] == "event"
    assert rejected[2]["field"] == "userId"
    assert rejected[3]["field"] == "traits"
    assert rejected[4]["field"] == "type"
    assert "32 KB" in rejected[5]["error"]
    assert "object" in rejected[6]["error"]
    assert all(r["error"] for r in result["rejected"])
    kept = await inbox_messages(ingest_db, ienv.id)
    assert [m.messageId for m in kept] == ["k1", "k2"]
    assert kept[1].anonymousId == "7"


async def test_batch_with_no_valid_message_is_422_and_writes_nothing(
    client: AsyncTestClient[Any], ingest_db: asyncpg.Pool, ienv: EnvironmentKeys
) -> None:
    batch = [{"type": "track", "userId": "u1"}, {"type": "identify"}]
    resp = await client.post("/v1/batch", json={"batch": batch}, headers=bearer(ienv.writeKey))
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["field"] == "batch[0].event"
    assert "event" in body["error"]
    assert [r["index"] for r in body["rejected"]] == [0, 1]
    assert body["rejected"][1]["field"] == "userId"
    assert await inbox_count(ingest_db, ienv.id) == 0
