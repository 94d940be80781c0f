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
        ({"userId": True, "segments": ["a"]}, "userId"),
        ({"userId": "a\x00b", "segments": ["a"]}, "userId"),
        ({"userId": "u1", "segments": "a"}, "segments"),
        ({"userId": "", "segments": []}, "userId"),
        ({"userId": "u1", "segments": ["a"] * 1001}, "segments"),
    ]
    for body, field in cases:
        resp = await query.post("/v1/check", content=msgspec.json.encode(body), headers=h)
        assert resp.status_code == 422, body
        assert resp.json()["field"] == field, resp.json()
        assert field in resp.json()["error"]


async def test_check_takes_a_numeric_user_id_as_ingest_does(
    query: Client, db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    beta = await add_segment(db, env, "beta")
    await add_user(db, env, "42", segments=(beta,))
    for user_id in (42, 42.0, "42"):
        body = {"userId": user_id, "segments": ["beta"]}
        resp = await query.post("/v1/check", json=body, headers=bearer(env.writeKey))
        assert resp.status_code == 200, resp.text
        assert resp.json()["results"] == {"beta": True}


async def test_unknown_segment_names_cost_one_catalog_load_not_one_each(
    query: Client, env: EnvironmentKeys
) -> None:
    catalog = query.app.state.query.catalog
    names = [f"nope-{i}" for i in range(1000)]
    before = catalog.unknown_loads
    body = {"userId": "u1", "segments": names}
    resp = await query.post("/v1/check", json=body, headers=bearer(env.writeKey))
    assert resp.status_code == 200, resp.text
    assert resp.json()["unknownSegments"] == names
    assert catalog.unknown_loads - before == 1
    # the same unknown names again at once: no load for them (only the catalog's periodic
    # reloads, which happen whatever the request names)
    before = catalog.unknown_loads
    resp = await query.post("/v1/check", json=body, headers=bearer(env.writeKey))
    assert resp.status_code == 200 and catalog.unknown_loads == before
