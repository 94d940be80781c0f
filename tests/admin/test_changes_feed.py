"""A segment's change feed: paged by cursor, followable, scoped to segment and environment."""

from __future__ import annotations

from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from shared.environments import EnvironmentKeys
from tests.admin.conftest import change_members, get_ok, make_user, secret

Client = AsyncTestClient[Any]


async def _page(admin: Client, env: EnvironmentKeys, seg: str, **params: str) -> dict[str, Any]:
    return await get_ok(admin, env, f"/v1/segments/{seg}/changes", **params)


async def test_feed_pages_and_follows(
    quiet_admin: Client, env: EnvironmentKeys, db: asyncpg.Pool
) -> None:
    admin = quiet_admin
    for key in ("beta", "other"):
        resp = await admin.post(
            "/v1/segments", json={"name": key, "kind": "manual"}, headers=secret(env)
        )
        assert resp.status_code == 201
    for u in ("u1", "u2", "u3"):
        await make_user(db, env, u)
    await make_user(db, env, None, anonymous_ids=("anon-1",))

    assert await _page(admin, env, "beta") == {"changes": [], "nextCursor": None, "hasMore": False}
    await change_members(admin, env, "beta", ["u1", "u2"], add=True)
    await change_members(admin, env, "other", ["u3"], add=True)
    await change_members(admin, env, "beta", ["u1"], add=False)
    await change_members(admin, env, "beta", ["anon-1"], add=True)

    seen: list[tuple[str | None, bool, str]] = []
    ids: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await _page(admin, env, "beta", limit="3", **({"cursor": cursor} if cursor else {}))
        pages += 1
        seen += [(c["userId"], c["entered"], c["cause"]) for c in page["changes"]]
        ids += [int(c["id"]) for c in page["changes"]]
        assert all(c["at"] for c in page["changes"])
        cursor = page["nextCursor"]
        if not page["hasMore"]:
            break
    assert pages == 2
    assert ids == sorted(ids)
    assert sorted(seen[:2]) == [("u1", True, "admin"), ("u2", True, "admin")]
    assert seen[2:] == [("u1", False, "admin"), ("anon-1", True, "admin")]

    # following: the last cursor yields nothing now, and exactly the new changes later
    assert cursor is not None
    idle = await _page(admin, env, "beta", cursor=cursor)
    assert idle == {"changes": [], "nextCursor": cursor, "hasMore": False}
    await change_members(admin, env, "beta", ["u3"], add=True)
    later = await _page(admin, env, "beta", cursor=cursor)
    assert [(c["userId"], c["entered"]) for c in later["changes"]] == [("u3", True)]
    assert int(later["nextCursor"]) > int(cursor)

    # by id as well as by key; the other segment has its own feed
    seg_id = (await admin.get("/v1/segments/other", headers=secret(env))).json()["id"]
    other = await _page(admin, env, seg_id)
    assert [(c["userId"], c["entered"]) for c in other["changes"]] == [("u3", True)]


async def test_feed_refusals(quiet_admin: Client, env: EnvironmentKeys) -> None:
    admin = quiet_admin
    resp = await admin.get("/v1/segments/nope/changes", headers=secret(env))
    assert resp.status_code == 404
    for params in ({"limit": "0"}, {"limit": "1001"}, {"cursor": "x1"}, {"cursor": "-1"}):
        resp = await admin.get("/v1/segments/all-users/changes", params=params, headers=secret(env))
        assert resp.status_code == 400, params
    resp = await admin.get("/v1/segments/all-users/changes")
    assert resp.status_code == 401
