"""GET /v1/users?filter=&limit=&cursor=: keyset pages of users, filtered by a condition."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from shared.environments import EnvironmentKeys
from tests.admin.conftest import secret
from tests.admin.test_preview import add_user

Client = AsyncTestClient[Any]


async def _all_pages(admin: Client, env: EnvironmentKeys, **params: Any) -> list[list[str | None]]:
    pages = []
    cursor = None
    while True:
        query = dict(params)
        if cursor is not None:
            query["cursor"] = cursor
        resp = await admin.get("/v1/users", params=query, headers=secret(env))
        assert resp.status_code == 200, resp.text
        body = resp.json()
        pages.append([u["userId"] for u in body["users"]])
        cursor = body["nextCursor"]
        if cursor is None:
            return pages


async def test_list_and_filter_with_pagination(
    admin: Client, db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    for i in range(7):
        await add_user(db, env.id, f"u{i}", {"n": i})
    await add_user(db, env.id, None, {"n": 100})  # anonymous
    everyone = await _all_pages(admin, env, limit=3)
    assert everyone == [["u0", "u1", "u2"], ["u3", "u4", "u5"], ["u6", None]]
    odd = {
        "any": [
            {"attribute": "n", "op": "in", "value": [1, 3, 5]},
            {"attribute": "n", "op": "gt", "value": 50},
        ]
    }
    pages = await _all_pages(admin, env, limit=2, filter=json.dumps(odd))
    assert pages == [["u1", "u3"], ["u5", None]]
    pages = await _all_pages(
        admin, env, limit=10, filter=json.dumps({"attribute": "n", "op": "lt", "value": 0})
    )
    assert pages == [[]]
    resp = await admin.get("/v1/users", params={"limit": 1}, headers=secret(env))
    user = resp.json()["users"][0]
    assert user["attributes"] == {"n": 0} and "firstSeenAt" in user and "lastSeenAt" in user


async def test_list_errors(admin: Client, env: EnvironmentKeys) -> None:
    h = secret(env)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"filter": "{not json"}, 400, "filter"),
        ({"filter": json.dumps({"segment": "nope"})}, 422, "filter"),
        ({"filter": json.dumps({"attribute": "a", "op": "between", "value": [1]})}, 422, "filter"),
        ({"limit": 0}, 400, "limit"),
        ({"limit": 1001}, 400, "limit"),
        ({"cursor": "abc"}, 400, "cursor"),
    ]
    for params, status, field in cases:
        resp = await admin.get("/v1/users", params=params, headers=h)
        assert (resp.status_code, resp.json()["field"]) == (status, field), params
    resp = await admin.get(
        "/v1/users", params={"filter": json.dumps({"all": [{"segment": "nope"}]})}, headers=h
    )
    assert "$.all[0].segment" in resp.json()["error"]
