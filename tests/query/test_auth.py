"""Query authentication: write or secret key, environments isolated, identity verification."""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any

import asyncpg
import jwt
from litestar.testing import AsyncTestClient

from services.query.app import create_app
from shared.environments import EnvironmentKeys
from shared.settings import Settings
from tests.query.conftest import add_segment, add_user, bearer

Client = AsyncTestClient[Any]
SECRET = secrets.token_urlsafe(32)


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


async def test_keys_bearer_basic_missing_unknown(
    query: Client, db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    beta = await add_segment(db, env, "beta")
    await add_user(db, env, "u1", segments=(beta,))
    path = "/v1/users/u1/segments/beta"
    for headers in (bearer(env.writeKey), bearer(env.secretKey), basic(env.writeKey)):
        resp = await query.get(path, headers=headers)
        assert resp.json() == {"member": True}, headers
    resp = await query.get(path)
    assert resp.status_code == 401
    assert resp.json()["field"] == "authorization"
    for headers in (bearer("wk_nope"), bearer("sk_nope"), {"Authorization": "Token x"}):
        assert (await query.get(path, headers=headers)).status_code == 401
    resp = await query.post("/v1/check", json={"userId": "u1", "segments": ["beta"]})
    assert resp.status_code == 401


async def test_other_environment_key_reads_nothing(
    query: Client, db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    from shared.environments import ensure_environment

    async with db.acquire() as conn:
        other = await ensure_environment(conn, env.name + "-other")
    beta = await add_segment(db, env, "beta")
    await add_user(db, env, "u1", segments=(beta,))
    h = bearer(other.writeKey)
    resp = await query.get("/v1/users/u1/segments", headers=h)
    assert resp.json() == {"userId": "u1", "segments": []}
    assert (await query.get("/v1/users/u1/segments/beta", headers=h)).status_code == 404
    assert (await query.get(f"/v1/users/u1/segments/{beta}", headers=h)).status_code == 404
    resp = await query.post("/v1/check", json={"userId": "u1", "segments": ["beta"]}, headers=h)
    assert resp.json()["results"] == {"beta": False}


async def _enable_identity_verification(db: asyncpg.Pool, env: EnvironmentKeys) -> None:
    await db.execute(
        "UPDATE environments SET identity_verification = true, identity_secret = $2 WHERE id = $1",
        env.id,
        SECRET,
    )


def token(sub: str, secret: str = SECRET, **claims: Any) -> str:
    return jwt.encode({"sub": sub, "iat": int(time.time()), **claims}, secret, algorithm="HS256")


async def test_identity_verification(
    settings: Settings, db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    beta = await add_segment(db, env, "beta")
    await add_user(db, env, "u1", segments=(beta,))
    await _enable_identity_verification(db, env)
    path = "/v1/users/u1/segments/beta"
    wk = bearer(env.writeKey)
    async with AsyncTestClient(app=create_app(settings)) as query:
        resp = await query.get(path, headers=wk)
        assert resp.status_code == 401
        assert resp.json()["field"] == "X-Identity-Token"
        bad = [
            token("u2"),
            token("u1", secret=secrets.token_urlsafe(32)),
            token("u1", exp=int(time.time()) - 60),
            jwt.encode({"user": "u1"}, SECRET, algorithm="HS256"),
            "not-a-jwt",
        ]
        for t in bad:
            resp = await query.get(path, headers={**wk, "X-Identity-Token": t})
            assert resp.status_code == 401, t
        good = {**wk, "X-Identity-Token": token("u1", exp=int(time.time()) + 60)}
        assert (await query.get(path, headers=good)).json() == {"member": True}
        resp = await query.get("/v1/users/u1/segments", headers=good)
        assert resp.status_code == 200
        # The token is for u1: it does not open u2's memberships.
        assert (await query.get("/v1/users/u2/segments", headers=good)).status_code == 401
        body = {"userId": "u1", "segments": ["beta"]}
        assert (await query.post("/v1/check", json=body, headers=wk)).status_code == 401
        resp = await query.post("/v1/check", json=body, headers=good)
        assert resp.json()["results"] == {"beta": True}
        # The secret key needs no token.
        assert (await query.get(path, headers=bearer(env.secretKey))).json() == {"member": True}
