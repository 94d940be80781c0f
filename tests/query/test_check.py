"""POST /v1/check, body validation, and answering from PostgreSQL when Redis is down."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec
from litestar.testing import AsyncTestClient

from shared.environments import EnvironmentKeys
from tests.query.conftest import add_segment, add_user, bearer

Client = AsyncTestClient[Any]


async def test_check_results_and_unknown_segments(
    query: Client, db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    beta = await add_segment(db, env, "beta")
    await add_segment(db, env, "gamma")
    await add_user(db, env, "u1", segments=(beta,))
    body = {"userId": "u1", "segments": ["beta", "gamma", "all-users", str(beta), "gone"]}
    resp = await query.post("/v1/check", json=body, headers=bearer(env.writeKey))
    assert resp.status_code == 200
    assert resp.json() == {
        "results": {
            "beta": True,
            "gamma": False,
            "all-users": True,
            str(beta): True,
            "gone": False,
        },
        "unknownSegments": ["gone"],
    }
    body = {"userId": "stranger", "segments": ["beta", "all-users"]}
    resp = await query.post("/v1/check", json=body, headers=bearer(env.writeKey))
    assert resp.json() == {"results": {"beta": False, "all-users": False}}


async def test_check_rejects_bad_bodies(query: Client, env: EnvironmentKeys) -> None:
    h = {**bearer(env.writeKey), "Content-Type": "application/json"}
    resp = await query.post("/v1/check", content=b"{nope", headers=h)
    assert resp.status_code == 400
    cases = [
        ({"segments": ["a"]}, "userId"),
        ({"userId": 5, "segments": ["a"]}, "userId"),
        ({"userId": "u1", "segments": "a"}, "segments"),
        ({"userId": "", "segments": []}, "userId"),
        ({"userId": "u1", "segments": ["a"] * 1001}, "segments"),
    ]
    for body, field in cases:
        resp = await query.post("/v1/check", content=msgspec.json.encode(body), headers=h)
        assert resp.status_code in (400, 422), body
        assert resp.json()["field"] == field, resp.json()
        assert field in resp.json()["error"]
