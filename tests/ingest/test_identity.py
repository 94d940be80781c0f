"""Identity verification: write-key messages must carry an HS256 token for their userId."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import jwt
import pytest
from litestar.testing import AsyncTestClient

from shared.environments import EnvironmentKeys
from tests.ingest.conftest import inbox_count, inbox_messages

SECRET = "identity-secret-for-tests-0123456789"  # noqa: S105


@pytest.fixture
async def verified(ingest_db: asyncpg.Pool, ienv: EnvironmentKeys) -> EnvironmentKeys:
    """An environment with identity verification on (set before any request caches it)."""
    await ingest_db.execute(
        "UPDATE environments SET identity_verification = true, identity_secret = $2 WHERE id = $1",
        ienv.id,
        SECRET,
    )
    return ienv


def token(sub: str, secret: str = SECRET, **claims: Any) -> str:
    return jwt.encode({"sub": sub, "iat": int(time.time()), **claims}, secret, algorithm="HS256")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_valid_token_is_accepted(
    client: AsyncTestClient[Any], ingest_db: asyncpg.Pool, verified: EnvironmentKeys
) -> None:
    body = {"userId": "u1", "traits": {"a": 1}, "identityToken": token("u1", exp=time.time() + 60)}
    resp = await client.post("/v1/identify", json=body, headers=bearer(verified.writeKey))
    assert resp.status_code == 200, resp.text
    [msg] = await inbox_messages(ingest_db, verified.id)
    assert msg.userId == "u1"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"userId": "u1"}, "needs an identityToken"),
        ({"userId": "u1", "identityToken": token("u2")}, "sub"),
        (
            {
                "userId": "u1",
                "identityToken": token("u1", secret="wrong-secret-0123456789abcdef-0123456789"),  # noqa: S106
            },
            "invalid",
        ),
        ({"userId": "u1", "identityToken": token("u1", exp=time.time() - 60)}, "expired"),
        ({"userId": "u1", "identityToken": "not.a.jwt"}, "invalid"),
        ({"anonymousId": "a1", "identityToken": token("a1")}, "userId"),
    ],
)
async def test_bad_or_missing_token_is_401(
    client: AsyncTestClient[Any],
    ingest_db: asyncpg.Pool,
    verified: EnvironmentKeys,
    body: dict[str, Any],
    words: str,
) -> None:
    resp = await client.post("/v1/identify", json=body, headers=bearer(verified.writeKey))
    assert resp.status_code == 401, resp.text
    assert resp.json()["field"] == "identityToken"
    assert words in resp.json()["error"]
    assert await inbox_count(ingest_db, verified.id) == 0


async def test_secret_key_needs_no_token(
    client: AsyncTestClient[Any], ingest_db: asyncpg.Pool, verified: EnvironmentKeys
) -> None:
    resp = await client.post(
        "/v1/track", json={"userId": "u1", "event": "E"}, headers=bearer(verified.secretKey)
    )
    assert resp.status_code == 200, resp.text
    assert await inbox_count(ingest_db, verified.id) == 1


async def test_batch_rejects_unverified_messages_one_by_one(
    client: AsyncTestClient[Any], ingest_db: asyncpg.Pool, verified: EnvironmentKeys
) -> None:
    batch = [
        {"type": "track", "userId": "u1", "event": "Ok", "identityToken": token("u1")},
        {"type": "track", "userId": "u2", "event": "Forged", "identityToken": token("u1")},
        {"type": "track", "userId": "u3", "event": "Bare"},
    ]
    resp = await client.post("/v1/batch", json={"batch": batch}, headers=bearer(verified.writeKey))
    assert resp.status_code == 200, resp.text
    result = resp.json()
    assert result["accepted"] == 1
    assert [(r["index"], r["field"]) for r in result["rejected"]] == [
        (1, "identityToken"),
        (2, "identityToken"),
    ]
    [msg] = await inbox_messages(ingest_db, verified.id)
    assert msg.event == "Ok"


async def test_verification_off_ignores_tokens(
    client: AsyncTestClient[Any], ingest_db: asyncpg.Pool, ienv: EnvironmentKeys
) -> None:
    body = {"userId": "u1", "event": "E", "identityToken": "garbage"}
    resp = await client.post("/v1/track", json=body, headers=bearer(ienv.writeKey))
    assert resp.status_code == 200, resp.text
    assert await inbox_count(ingest_db, ienv.id) == 1
