"""Tags through the admin API: create, list, rename, delete, attach, detach, auto-segments,
and the recomputes of the segments that use them."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from shared.environments import EnvironmentKeys
from shared.settings import Settings
from tests.admin.conftest import make_user, queued_recomputes, secret

Client = AsyncTestClient[Any]


@pytest.fixture
def admin(quiet_admin: Client) -> Client:
    return quiet_admin


async def _tag(admin: Client, env: EnvironmentKeys, **body: Any) -> dict[str, Any]:
    resp = await admin.post("/v1/tags", json=body, headers=secret(env))
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


async def _users(
    admin: Client, env: EnvironmentKeys, tag: str, body: Any, attach: bool = True
) -> dict[str, Any]:
    resp = await admin.request(
        "POST" if attach else "DELETE", f"/v1/tags/{tag}/users", json=body, headers=secret(env)
    )
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    return out


async def _segment(admin: Client, env: EnvironmentKeys, key: str, cond: Any) -> dict[str, Any]:
    resp = await admin.post(
        "/v1/segments",
        json={"name": key, "key": key, "kind": "dynamic", "conditions": cond},
        headers=secret(env),
    )
    assert resp.status_code == 201, resp.text
    out: dict[str, Any] = resp.json()
    return out


async def _get(admin: Client, env: EnvironmentKeys, path: str) -> Any:
    resp = await admin.get(path, headers=secret(env))
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_create_list_read(admin: Client, env: EnvironmentKeys) -> None:
    sales = await _tag(admin, env, key=" Department ", value="Sales")
    assert {k: sales[k] for k in ("key", "value", "userCount", "segmentId", "segmentKey")} == {
        "key": "Department",
        "value": "Sales",
        "userCount": 0,
        "segmentId": None,
        "segmentKey": None,
    }
    await _tag(admin, env, key="Region", value="Europe")
    await _tag(admin, env, key="Department", value="IT")
    listed = await _get(admin, env, "/v1/tags")
    assert [(t["key"], t["value"]) for t in listed["tags"]] == [
        ("Department", "IT"),
        ("Department", "Sales"),
        ("Region", "Europe"),
    ]
    resp = await admin.get("/v1/tags", params={"key": "Region"}, headers=secret(env))
    assert [t["value"] for t in resp.json()["tags"]] == ["Europe"]
    assert await _get(admin, env, f"/v1/tags/{sales['id']}") == sales

    resp = await admin.post(
        "/v1/tags", json={"key": "Department", "value": "Sales"}, headers=secret(env)
    )
    assert resp.status_code == 409
    for body, field in (
        ({"key": "Department"}, "value"),
        ({"key": "  ", "value": "x"}, "key"),
        ({"key": "k", "value": "x" * 256}, "value"),
        ({"key": "k", "value": "v", "autoSegment": "yes"}, "autoSegment"),
    ):
        resp = await admin.post("/v1/tags", json=body, headers=secret(env))
        assert resp.status_code == 422, body
        assert resp.json()["field"] == field
    for ref in ("999999999", "abc"):
        assert (await admin.get(f"/v1/tags/{ref}", headers=secret(env))).status_code == 404


async def test_auto_segment(
    admin: Client, env: EnvironmentKeys, redis: aioredis.Redis, quiet_settings: Settings
) -> None:
    tag = await _tag(admin, env, key="Department", value="Sales", autoSegment=True)
    assert tag["segmentKey"] == "department-sales"
    seg = await _get(admin, env, "/v1/segments/department-sales")
    assert seg["id"] == tag["segmentId"]
    assert (seg["name"], seg["kind"], seg["status"]) == (
        "Department: Sales",
        "dynamic",
        "computing",
    )
    assert seg["conditions"] == {"tag": {"key": "Department", "value": "Sales"}}
    assert len(await queued_recomputes(quiet_settings, redis, env.id, seg["id"])) == 1

    # an existing tag (say, created by identify) gets one later through PATCH
    it = await _tag(admin, env, key="Department", value="IT")
    resp = await admin.patch(
        f"/v1/tags/{it['id']}", json={"autoSegment": True}, headers=secret(env)
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["segmentKey"] == "department-it"
    again = await admin.patch(
        f"/v1/tags/{it['id']}", json={"autoSegment": True}, headers=secret(env)
    )
    assert again.json()["segmentId"] == resp.json()["segmentId"]


async def test_attach_detach(
    admin: Client,
    env: EnvironmentKeys,
    db: asyncpg.Pool,
    redis: aioredis.Redis,
    quiet_settings: Settings,
) -> None:
    sales = await _tag(admin, env, key="Department", value="Sales")
    dallas = await _tag(admin, env, key="Location", value="Dallas")
    await make_user(db, env, "ann", {"email": "ann@corp.io"})
    await make_user(db, env, "bob")
    await make_user(db, env, None, anonymous_ids=("anon-1",))
    by_key = await _segment(admin, env, "any-department", {"tag": {"key": "Department"}})
    exact = await _segment(
        admin,
        env,
        "dallas-sales",
        {
            "all": [
                {"tag": {"key": "Department", "value": "Sales"}},
                {"tag": {"key": "Location", "value": "Dallas"}},
            ]
        },
    )
    refers = await _segment(admin, env, "not-dallas-sales", {"none": [{"segment": "dallas-sales"}]})
    other = await _segment(admin, env, "pro", {"attribute": "plan", "op": "is", "value": "pro"})
    segs = (by_key, exact, refers, other)

    async def queued() -> dict[str, int]:
        return {
            s["key"]: len(await queued_recomputes(quiet_settings, redis, env.id, s["id"]))
            for s in segs
        }

    before = await queued()
    out = await _users(
        admin,
        env,
        sales["id"],
        {"userIds": ["bob", "anon-1", "newcomer"], "emails": ["ANN@corp.io", "x@y.z"]},
    )
    assert out == {
        "attached": 4,
        "detached": 0,
        "created": ["newcomer"],
        "unknownUserIds": [],
        "unknownEmails": ["x@y.z"],
    }
    after = await queued()
    assert {k: after[k] - before[k] for k in after} == {
        "any-department": 1,
        "dallas-sales": 1,
        "not-dallas-sales": 0,  # the worker's recompute of dallas-sales continues to it
        "pro": 0,
    }
    # a Location tag does not concern segments on Department only
    await _users(admin, env, dallas["id"], {"userIds": ["ann"]})
    later = await queued()
    assert {k: later[k] - after[k] for k in after} == {
        "any-department": 0,
        "dallas-sales": 1,
        "not-dallas-sales": 0,
        "pro": 0,
    }
    # nothing changed: nothing recomputed
    assert (await _users(admin, env, dallas["id"], {"userIds": ["ann"]}))["attached"] == 0
    assert await queued() == later

    assert (await _get(admin, env, f"/v1/tags/{sales['id']}"))["userCount"] == 4
    profile = await _get(admin, env, "/v1/users/ann")
    assert [(t["key"], t["value"]) for t in profile["tags"]] == [
        ("Department", "Sales"),
        ("Location", "Dallas"),
    ]
    pages: list[str] = []
    cursor = None
    while True:
        params = {"limit": "3"} | ({"cursor": cursor} if cursor else {})
        resp = await admin.get(f"/v1/tags/{sales['id']}/users", params=params, headers=secret(env))
        pages += resp.json()["userIds"]
        cursor = resp.json()["nextCursor"]
        if cursor is None:
            break
    assert sorted(pages) == ["ann", "anon-1", "bob", "newcomer"]

    out = await _users(admin, env, sales["id"], {"userIds": ["bob", "ghost"]}, attach=False)
    assert out == {
        "attached": 0,
        "detached": 1,
        "created": [],
        "unknownUserIds": ["ghost"],
        "unknownEmails": [],
    }
    assert (await _get(admin, env, f"/v1/tags/{sales['id']}"))["userCount"] == 3
    resp = await admin.post("/v1/tags/424242/users", json={"userIds": ["a"]}, headers=secret(env))
    assert resp.status_code == 404
    resp = await admin.post(f"/v1/tags/{sales['id']}/users", json={}, headers=secret(env))
    assert resp.status_code == 422
    await db.execute("DELETE FROM inbox WHERE env_id = $1", env.id)


async def test_rename_follows_into_segments(
    admin: Client, env: EnvironmentKeys, redis: aioredis.Redis, quiet_settings: Settings
) -> None:
    sales = await _tag(admin, env, key="Department", value="Sales", autoSegment=True)
    await _tag(admin, env, key="Department", value="IT")
    exact = await _segment(
        admin,
        env,
        "sales-or-it",
        {
            "any": [
                {"tag": {"key": "Department", "value": "Sales"}},
                {"tag": {"key": "Department", "value": "IT"}},
            ]
        },
    )
    by_key = await _segment(admin, env, "any-department", {"tag": {"key": "Department"}})

    resp = await admin.patch(
        f"/v1/tags/{sales['id']}", json={"key": "Team", "value": "Revenue"}, headers=secret(env)
    )
    assert resp.status_code == 200, resp.text
    assert (resp.json()["key"], resp.json()["value"]) == ("Team", "Revenue")
    auto = await _get(admin, env, f"/v1/segments/{sales['segmentId']}")
    assert auto["name"] == "Team: Revenue"
    assert auto["conditions"] == {"tag": {"key": "Team", "value": "Revenue"}}
    assert auto["version"] == 2
    assert (await _get(admin, env, "/v1/segments/sales-or-it"))["conditions"] == {
        "any": [
            {"tag": {"key": "Team", "value": "Revenue"}},
            {"tag": {"key": "Department", "value": "IT"}},
        ]
    }
    key_only = await _get(admin, env, "/v1/segments/any-department")
    assert key_only["conditions"] == {"tag": {"key": "Department"}}
    assert key_only["version"] == 1
    # the key-only segment loses the renamed tag's users: recomputed too
    assert len(await queued_recomputes(quiet_settings, redis, env.id, by_key["id"])) == 2
    assert len(await queued_recomputes(quiet_settings, redis, env.id, exact["id"])) == 2

    # a customised auto-segment name is kept
    await admin.patch(
        f"/v1/segments/{sales['segmentId']}", json={"name": "Revenue team"}, headers=secret(env)
    )
    await admin.patch(f"/v1/tags/{sales['id']}", json={"value": "Sales"}, headers=secret(env))
    auto = await _get(admin, env, f"/v1/segments/{sales['segmentId']}")
    assert auto["name"] == "Revenue team"
    assert auto["conditions"] == {"tag": {"key": "Team", "value": "Sales"}}

    resp = await admin.patch(
        f"/v1/tags/{sales['id']}", json={"key": "Department", "value": "IT"}, headers=secret(env)
    )
    assert resp.status_code == 409
    assert (await _get(admin, env, f"/v1/tags/{sales['id']}"))["key"] == "Team"


async def test_delete(admin: Client, env: EnvironmentKeys, db: asyncpg.Pool) -> None:
    sales = await _tag(admin, env, key="Department", value="Sales", autoSegment=True)
    await make_user(db, env, "ann")
    await _users(admin, env, sales["id"], {"userIds": ["ann"]})
    await _segment(admin, env, "uses-auto", {"segment": sales["segmentKey"]})

    resp = await admin.delete(f"/v1/tags/{sales['id']}", headers=secret(env))
    assert resp.status_code == 409
    assert "uses-auto" in resp.json()["error"]
    assert (await _get(admin, env, f"/v1/tags/{sales['id']}"))["userCount"] == 1

    await admin.delete("/v1/segments/uses-auto", headers=secret(env))
    resp = await admin.delete(f"/v1/tags/{sales['id']}", headers=secret(env))
    assert resp.status_code == 204
    assert (await admin.get(f"/v1/tags/{sales['id']}", headers=secret(env))).status_code == 404
    assert (
        await admin.get(f"/v1/segments/{sales['segmentKey']}", headers=secret(env))
    ).status_code == 404
    assert await db.fetchval("SELECT count(*) FROM user_tags WHERE env_id = $1", env.id) == 0
    assert (await _get(admin, env, "/v1/users/ann"))["tags"] == []
    assert (await admin.delete(f"/v1/tags/{sales['id']}", headers=secret(env))).status_code == 404

    # a tag whose auto-segment was deleted by hand deletes fine
    it = await _tag(admin, env, key="Department", value="IT", autoSegment=True)
    await admin.delete(f"/v1/segments/{it['segmentKey']}", headers=secret(env))
    assert (await _get(admin, env, f"/v1/tags/{it['id']}"))["segmentId"] is None
    assert (await admin.delete(f"/v1/tags/{it['id']}", headers=secret(env))).status_code == 204


async def test_delete_refuses_a_tag_that_segments_use_in_their_conditions(
    admin: Client, env: EnvironmentKeys
) -> None:
    sales = await _tag(admin, env, key="Team", value="Sales")
    ops = await _tag(admin, env, key="Team", value="Ops")
    await _segment(admin, env, "sales-team", {"tag": {"key": "Team", "value": "Sales"}})
    await _segment(admin, env, "any-team", {"tag": {"key": "Team"}})

    resp = await admin.delete(f"/v1/tags/{sales['id']}", headers=secret(env))
    assert resp.status_code == 409
    assert resp.json()["field"] == "tag"
    assert "sales-team" in resp.json()["error"] and "any-team" not in resp.json()["error"]
    # another Team tag remains: "any Team" still means something without Ops
    assert (await admin.delete(f"/v1/tags/{ops['id']}", headers=secret(env))).status_code == 204
    await admin.delete("/v1/segments/sales-team", headers=secret(env))
    # now the last Team tag: "any Team" would match nobody
    resp = await admin.delete(f"/v1/tags/{sales['id']}", headers=secret(env))
    assert resp.status_code == 409 and "any-team" in resp.json()["error"]
    await admin.delete("/v1/segments/any-team", headers=secret(env))
    assert (await admin.delete(f"/v1/tags/{sales['id']}", headers=secret(env))).status_code == 204
