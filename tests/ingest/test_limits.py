"""Bad input: 400 (not JSON) / 422 (a rule broken) / 413 naming the field, and nothing
written."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from shared.environments import EnvironmentKeys
from shared.messages import MAX_BATCH_MESSAGES, MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES
from tests.ingest.conftest import inbox_count


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("path", "body", "field", "words"),
    [
        ("/v1/identify", b'{"userId": "u1", "traits": {', "body", "malformed JSON"),
        ("/v1/identify", b"[1, 2]", "body", "object"),
        ("/v1/identify", b'{"userId": "u1", "traits": 3}', "traits", "traits"),
        ("/v1/identify", b'{"userId": "u1", "segments": [1]}', "segments[0]", "segments"),
        ("/v1/track", b'{"userId": "u1", "event": 5}', "event", "event"),
        ("/v1/track", b'{"userId": "u1", "timestamp": "yesterday"}', "timestamp", "timestamp"),
        ("/v1/identify", b'{"traits": {"a": 1}}', "userId", "userId"),
        ("/v1/identify", b'{"userId": "undefined"}', "userId", "usable id"),
        ("/v1/identify", b'{"userId": true}', "userId", "boolean"),
        ("/v1/identify", b'{"userId": "u", "traits": {"n": {"add": "x"}}}', "traits.n", "number"),
        ("/v1/track", b'{"userId": "u1"}', "event", "event"),
        ("/v1/group", b'{"userId": "u1"}', "groupId", "groupId"),
        ("/v1/group", b'{"anonymousId": "a1", "groupId": "g"}', "userId", "userId"),
        ("/v1/alias", b'{"userId": "u1"}', "previousId", "previousId"),
        ("/v1/batch", b'{"batch": {"type": "track"}}', "batch", "batch"),
        ("/v1/batch", b'{"messages": []}', "batch", "batch"),
        ("/v1/batch", b'{"batch": []}', "batch", "batch"),
        ("/v1/batch", b'{"batch": [', "body", "malformed JSON"),
        # what PostgreSQL, msgpack or Python's recursion cannot take: refused, never acknowledged
        ("/v1/identify", b'{"userId": "u\\u0000"}', "userId", "NUL"),
        ("/v1/identify", b'{"userId": "u", "traits": {"a\\u0000": 1}}', "traits.a\\u0000", "NUL"),
        ("/v1/identify", b'{"userId": "u", "traits": {"a": ["\\u0000"]}}', "traits.a[0]", "NUL"),
        ("/v1/track", b'{"userId": "u", "event": "e\\u0000"}', "event", "NUL"),
        ("/v1/identify", b'{"userId": "u", "tags": ["a:\\u0000"]}', "tags[0]", "NUL"),
        (
            "/v1/identify",
            b'{"userId": "u", "traits": {"n": 18446744073709551616}}',
            "traits.n",
            "64",
        ),
        (
            "/v1/identify",
            b'{"userId": "u", "traits": {"n": {"add": -9223372036854775809}}}',
            "traits.n.add",
            "64",
        ),
        (
            "/v1/identify",
            b'{"userId": "u", "traits": {"a": ' + b"[" * 65 + b"]" * 65 + b"}}",
            "traits.a" + "[0]" * 62,
            "nested",
        ),
        (
            "/v1/identify",
            b'{"userId": "u", "traits": ' + b'{"a":' * 3000 + b"1" + b"}" * 3001,
            "body",
            "nested",
        ),
        (
            "/v1/identify",
            b'{"userId": "u", "timestamp": "0001-01-01T00:00:00Z",'
            b' "sentAt": "9999-12-31T00:00:00Z"}',
            "timestamp",
            "clock-skew",
        ),
    ],
)
async def test_bad_input_is_4xx_naming_the_field(
    client: AsyncTestClient[Any],
    ingest_db: asyncpg.Pool,
    ienv: EnvironmentKeys,
    path: str,
    body: bytes,
    field: str,
    words: str,
) -> None:
    resp = await client.post(path, content=body, headers=bearer(ienv.writeKey))
    assert resp.status_code == (400 if words == "malformed JSON" else 422), resp.text
    error = resp.json()
    assert error["field"] == field
    assert words in error["error"]
    assert await inbox_count(ingest_db, ienv.id) == 0


async def test_message_over_32kb_is_413(
    client: AsyncTestClient[Any], ingest_db: asyncpg.Pool, ienv: EnvironmentKeys
) -> None:
    big = {"userId": "u1", "traits": {"blob": "x" * MAX_MESSAGE_BYTES}}
    resp = await client.post("/v1/identify", json=big, headers=bearer(ienv.writeKey))
    assert resp.status_code == 413, resp.text
    assert "32 KB" in resp.json()["error"]
    assert await inbox_count(ingest_db, ienv.id) == 0


def big_batch() -> dict[str, Any]:
    # 20 messages of ~30 KB each: every message is under its limit, the request is not
    message = {"type": "track", "userId": "u1", "event": "E", "properties": {"p": "x" * 30_000}}
    batch = {"batch": [message] * 20}
    assert len(str(batch)) > MAX_REQUEST_BYTES
    return batch


async def test_request_over_500kb_is_413(
    client: AsyncTestClient[Any], ingest_db: asyncpg.Pool, ienv: EnvironmentKeys
) -> None:
    resp = await client.post("/v1/batch", json=big_batch(), headers=bearer(ienv.writeKey))
    assert resp.status_code == 413, resp.text
    assert "500 KB" in resp.json()["error"]
    assert await inbox_count(ingest_db, ienv.id) == 0


async def test_batch_over_2500_messages_is_400(
    client: AsyncTestClient[Any], ingest_db: asyncpg.Pool, ienv: EnvironmentKeys
) -> None:
    batch = {"batch": [{"type": "page", "userId": "u"}] * (MAX_BATCH_MESSAGES + 1)}
    resp = await client.post("/v1/batch", json=batch, headers=bearer(ienv.writeKey))
    assert resp.status_code == 400, resp.text
    assert resp.json()["field"] == "batch"
    assert "2500" in resp.json()["error"]
    assert await inbox_count(ingest_db, ienv.id) == 0


async def test_batch_of_2500_messages_is_accepted(
    client: AsyncTestClient[Any], ingest_db: asyncpg.Pool, ienv: EnvironmentKeys
) -> None:
    batch = {"batch": [{"type": "page", "userId": "u"}] * MAX_BATCH_MESSAGES}
    resp = await client.post("/v1/batch", json=batch, headers=bearer(ienv.writeKey))
    assert resp.status_code == 200, resp.text
    assert resp.json()["accepted"] == MAX_BATCH_MESSAGES
    assert await inbox_count(ingest_db, ienv.id) == MAX_BATCH_MESSAGES


async def test_bad_content_length_is_400(
    client: AsyncTestClient[Any], ingest_db: asyncpg.Pool, ienv: EnvironmentKeys
) -> None:
    resp = await client.post(
        "/v1/identify",
        content=b'{"userId": "u"}',
        headers={**bearer(ienv.writeKey), "Content-Length": "lots"},
    )
    assert resp.status_code == 400
    assert await inbox_count(ingest_db, ienv.id) == 0
