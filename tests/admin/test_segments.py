"""Segment CRUD through the admin API: keys, validation, the built-in segment, recompute jobs."""

from __future__ import annotations

from typing import Any

import asyncpg
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from shared.environments import EnvironmentKeys
from shared.settings import Settings
from tests.admin.conftest import recompute_enqueued, recompute_job_id, secret

Client = AsyncTestClient[Any]
PLAN_PRO = {"attribute": "plan", "op": "is", "value": "pro"}


async def _create(admin: Client, env: EnvironmentKeys, **body: Any) -> dict[str, Any]:
    resp = await admin.post("/v1/segments", json=body, headers=secret(env))
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


async def _keys(admin: Client, env: EnvironmentKeys) -> list[str]:
    resp = await admin.get("/v1/segments", headers=secret(env))
    assert resp.status_code == 200
    return [s["key"] for s in resp.json()["segments"]]


async def test_hello_and_health(admin: Client) -> None:
    assert (await admin.get("/hello")).json() == {"hello": "world"}
    assert (await admin.get("/health")).status_code == 200


async def test_create_manual_segment(admin: Client, env: EnvironmentKeys) -> None:
    seg = await _create(admin, env, name="Beta testers", kind="manual", description="early")
    assert seg["key"] == "beta-testers"
    assert seg["id"].isdigit()
    assert {k: seg[k] for k in ("name", "description", "kind", "conditions", "status")} == {
        "name": "Beta testers",
        "description": "early",
        "kind": "manual",
        "conditions": None,
        "status": "ready",
    }
    assert seg["memberCount"] == 0
    assert seg["createdAt"] and seg["updatedAt"]
    for ref in ("beta-testers", seg["id"]):
        resp = await admin.get(f"/v1/segments/{ref}", headers=secret(env))
        assert resp.json() == seg


async def test_key_derivation_and_duplicates(admin: Client, env: EnvironmentKeys) -> None:
    keys = [(await _create(admin, env, name="Café Owners!", kind="manual"))["key"] for _ in "abc"]
    assert keys == ["cafe-owners", "cafe-owners-2", "cafe-owners-3"]
    assert (await _create(admin, env, name="2024", kind="manual"))["key"] == "segment-2024"
    assert (await _create(admin, env, name="!!!", kind="manual"))["key"] == "segment"
    for key in ("cafe-owners", "all-users"):
        body = {"name": "x", "key": key, "kind": "manual"}
        resp = await admin.post("/v1/segments", json=body, headers=secret(env))
        assert resp.status_code == 409, key
        assert resp.json()["field"] == "key"
    for key in ("12345", "~beta", "has space", ""):
        body = {"name": "x", "key": key, "kind": "manual"}
        resp = await admin.post("/v1/segments", json=body, headers=secret(env))
        assert resp.status_code == 422, key
        assert resp.json()["field"] == "key"


async def test_invalid_bodies_name_the_field_and_save_nothing(
    admin: Client, env: EnvironmentKeys, db: asyncpg.Pool
) -> None:
    h = secret(env)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"kind": "manual"}, "name"),
        ({"name": 5, "kind": "manual"}, "name"),
        ({"name": "   ", "kind": "manual"}, "name"),
        ({"name": "x", "kind": "all"}, "kind"),
        ({"name": "x", "kind": "manual", "colour": "red"}, "colour"),
        ({"name": "x", "kind": "dynamic"}, "conditions"),
        ({"name": "x", "kind": "manual", "conditions": PLAN_PRO}, "conditions"),
        ({"name": "x", "kind": "dynamic", "conditions": {"all": [PLAN_PRO, {"op": "is"}]}}, ""),
        ({"name": "x", "kind": "dynamic", "conditions": {"segment": "nope"}}, "$.segment"),
    ]
    for body, field in cases:
        resp = await admin.post("/v1/segments", json=body, headers=h)
        assert resp.status_code == 422, (body, resp.text)
        err = resp.json()
        if field:
            assert err["field"] == field, err
        else:  # a condition error: field is the JSON path, and the message starts with it
            assert err["field"].startswith("$.all[1]"), err
        assert err["error"].startswith(err["field"]), err
    for raw in (b"", b"{nope", b'{"name": "x"'):
        resp = await admin.post("/v1/segments", content=raw, headers=h)
        assert resp.status_code == 400, raw
    assert await _keys(admin, env) == ["all-users"]
    count = await db.fetchval("SELECT count(*) FROM segments WHERE env_id = $1", env.id)
    assert count == 1


async def test_dynamic_segment_enqueues_recompute(
    admin: Client, env: EnvironmentKeys, redis: aioredis.Redis, settings: Settings
) -> None:
    seg = await _create(admin, env, name="Pro", kind="dynamic", conditions=PLAN_PRO)
    assert seg["status"] == "computing"
    assert seg["version"] == 1
    assert seg["conditions"] == PLAN_PRO
    job = recompute_job_id(settings, env.id, seg["id"], 1)
    found = await recompute_enqueued(settings, redis, job)
    assert found is not None
    if found[1]:  # still queued: its arguments are visible
        assert found == ("recompute_segment", (env.id, int(seg["id"])))

    # Same conditions: nothing to recompute. New conditions: version 2, a new job.
    h = secret(env)
    resp = await admin.patch("/v1/segments/pro", json={"conditions": PLAN_PRO}, headers=h)
    assert resp.json()["version"] == 1
    new = {"any": [PLAN_PRO, {"attribute": "plan", "op": "is", "value": "team"}]}
    resp = await admin.patch("/v1/segments/pro", json={"conditions": new}, headers=h)
    assert resp.status_code == 200, resp.text
    assert (resp.json()["version"], resp.json()["status"]) == (2, "computing")
    assert resp.json()["conditions"] == new
    job2 = recompute_job_id(settings, env.id, seg["id"], 2)
    assert await recompute_enqueued(settings, redis, job2) is not None
    # A PATCH that touches only the name enqueues nothing new.
    resp = await admin.patch("/v1/segments/pro", json={"name": "Pro plans"}, headers=h)
    assert resp.json()["version"] == 2
    job3 = recompute_job_id(settings, env.id, seg["id"], 3)
    assert await recompute_enqueued(settings, redis, job3) is None


async def test_patch_rules(admin: Client, env: EnvironmentKeys) -> None:
    h = secret(env)
    manual = await _create(admin, env, name="Beta", kind="manual")
    await _create(admin, env, name="Gamma", kind="manual")
    resp = await admin.patch(
        f"/v1/segments/{manual['id']}",
        json={"name": "Beta 2", "description": "d", "key": "beta-two"},
        headers=h,
    )
    assert resp.status_code == 200, resp.text
    assert (resp.json()["name"], resp.json()["description"], resp.json()["key"]) == (
        "Beta 2",
        "d",
        "beta-two",
    )
    cases: list[tuple[dict[str, Any], int, str | None]] = [
        ({"kind": "dynamic"}, 422, "kind"),
        ({"conditions": PLAN_PRO}, 422, "conditions"),
        ({"key": "gamma"}, 409, "key"),
        ({"name": ""}, 422, "name"),
        ({"nope": 1}, 422, "nope"),
    ]
    for body, status, field in cases:
        resp = await admin.patch("/v1/segments/beta-two", json=body, headers=h)
        assert (resp.status_code, resp.json()["field"]) == (status, field), body
    resp = await admin.patch("/v1/segments/beta-two", json={"kind": "manual"}, headers=h)
    assert resp.status_code == 200
    assert (await admin.patch("/v1/segments/nope", json={}, headers=h)).status_code == 404


async def test_all_users_is_immutable(admin: Client, env: EnvironmentKeys) -> None:
    h = secret(env)
    for body in ({"name": "Everyone"}, {"description": "x"}, {}):
        resp = await admin.patch("/v1/segments/all-users", json=body, headers=h)
        assert resp.status_code == 409
        assert "All users" in resp.json()["error"]
    resp = await admin.delete("/v1/segments/all-users", headers=h)
    assert resp.status_code == 409
    seg = (await admin.get("/v1/segments/all-users", headers=h)).json()
    assert (seg["kind"], seg["name"]) == ("all", "All users")


async def test_delete(admin: Client, env: EnvironmentKeys, db: asyncpg.Pool) -> None:
    h = secret(env)
    seg = await _create(admin, env, name="Beta", kind="manual")
    pk = await db.fetchval(
        """INSERT INTO users (env_id, user_id, first_seen_at, last_seen_at)
           VALUES ($1, 'u1', now(), now()) RETURNING id""",
        env.id,
    )
    await db.execute(
        "INSERT INTO memberships (env_id, segment_id, user_pk) VALUES ($1, $2, $3)",
        env.id,
        int(seg["id"]),
        pk,
    )
    assert (await admin.delete("/v1/segments/beta", headers=h)).status_code == 204
    assert (await admin.get("/v1/segments/beta", headers=h)).status_code == 404
    assert (await admin.delete("/v1/segments/beta", headers=h)).status_code == 404
    left = await db.fetchval("SELECT count(*) FROM memberships WHERE env_id = $1", env.id)
    assert left == 0


async def test_segment_references(admin: Client, env: EnvironmentKeys) -> None:
    h = secret(env)
    paying = await _create(admin, env, name="Paying", kind="dynamic", conditions=PLAN_PRO)
    both = await _create(
        admin,
        env,
        name="Paying beta",
        kind="dynamic",
        conditions={"all": [{"segment": "paying"}, PLAN_PRO]},
    )
    # paying → paying-beta → paying would be a cycle.
    resp = await admin.patch(
        "/v1/segments/paying", json={"conditions": {"segment": both["id"]}}, headers=h
    )
    assert resp.status_code == 422
    assert "cycle" in resp.json()["error"]
    resp = await admin.patch(
        "/v1/segments/paying", json={"conditions": {"segment": "paying"}}, headers=h
    )
    assert resp.status_code == 422
    assert (await admin.get("/v1/segments/paying", headers=h)).json()["version"] == 1
    # Still referred to: cannot be deleted, nor renamed (by key).
    resp = await admin.delete(f"/v1/segments/{paying['id']}", headers=h)
    assert resp.status_code == 409
    assert "paying-beta" in resp.json()["error"]
    resp = await admin.patch("/v1/segments/paying", json={"key": "payers"}, headers=h)
    assert resp.status_code == 409
    assert (await admin.delete("/v1/segments/paying-beta", headers=h)).status_code == 204
    assert (await admin.delete("/v1/segments/paying", headers=h)).status_code == 204
