"""/v1/attributes: list types with warning counts, declare / correct a type (recomputing the
segments that use it, refusing a type that would invalidate one), page warnings."""

from __future__ import annotations

from typing import Any

import asyncpg
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from shared.attribute_types import record_inferred
from shared.environments import EnvironmentKeys
from shared.settings import Settings
from tests.admin.conftest import recompute_enqueued, recompute_job_id, secret

Client = AsyncTestClient[Any]


async def _segment(db: asyncpg.Pool, env_id: int, key: str, conditions: Any) -> int:
    seg_id: int = await db.fetchval(
        """INSERT INTO segments (env_id, key, name, kind, conditions, status)
           VALUES ($1, $2, $2, 'dynamic', $3, 'ready') RETURNING id""",
        env_id,
        key,
        conditions,
    )
    return seg_id


async def _warn(db: asyncpg.Pool, env_id: int, attribute: str, n: int) -> None:
    for i in range(n):
        await db.execute(
            """INSERT INTO ingest_warnings (env_id, message_id, user_id, attribute, warning)
               VALUES ($1, $2, 'u', $3, $4)""",
            env_id,
            f"m{i}",
            attribute,
            f"warning {i}",
        )


async def test_list_attributes_with_warnings(
    admin: Client, db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    async with db.acquire() as conn:
        await record_inferred(conn, env.id, "user", {"plan": "pro", "seats": 3})
        await record_inferred(conn, env.id, "company", {"plan": True})
    await _warn(db, env.id, "seats", 2)
    await _warn(db, env.id, "company:plan", 1)
    resp = await admin.get("/v1/attributes", headers=secret(env))
    assert resp.status_code == 200
    assert resp.json()["attributes"] == [
        {"name": "plan", "scope": "company", "type": "boolean", "declared": False, "warnings": 1},
        {"name": "plan", "scope": "user", "type": "string", "declared": False, "warnings": 0},
        {"name": "seats", "scope": "user", "type": "number", "declared": False, "warnings": 2},
    ]


async def test_declare_type_recomputes_segments_using_it(
    admin: Client,
    db: asyncpg.Pool,
    env: EnvironmentKeys,
    settings: Settings,
    redis: aioredis.Redis,
) -> None:
    uses = await _segment(db, env.id, "zip-1234", {"attribute": "zip", "op": "is", "value": 1234})
    nested = await _segment(db, env.id, "nested", {"none": [{"attribute": "zip", "op": "is_set"}]})
    company = await _segment(
        db, env.id, "company-zip", {"attribute": "zip", "scope": "company", "op": "is_set"}
    )
    other = await _segment(db, env.id, "other", {"attribute": "plan", "op": "is", "value": "x"})
    h = secret(env)
    resp = await admin.put("/v1/attributes/user/zip", json={"type": "string"}, headers=h)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["attribute"] == {
        "name": "zip",
        "scope": "user",
        "type": "string",
        "declared": True,
        "warnings": 0,
    }
    assert body["recomputing"] == ["zip-1234", "nested"]
    rows = await db.fetch(
        "SELECT id, version, status FROM segments WHERE env_id = $1 AND id = ANY($2)",
        env.id,
        [uses, nested, company, other],
    )
    state = {r["id"]: (r["version"], r["status"]) for r in rows}
    assert state == {
        uses: (2, "computing"),
        nested: (2, "computing"),
        company: (1, "ready"),
        other: (1, "ready"),
    }
    for seg_id in (uses, nested):
        job = recompute_job_id(settings, env.id, str(seg_id), 2)
        assert await recompute_enqueued(settings, redis, job) == (
            "recompute_segment",
            (env.id, seg_id),
        )
    assert (
        await recompute_enqueued(settings, redis, recompute_job_id(settings, env.id, str(other), 2))
        is None
    )
    # the same type again: declared already, nothing to recompute
    resp = await admin.put("/v1/attributes/user/zip", json={"type": "string"}, headers=h)
    assert resp.json()["recomputing"] == []
    # a company type recomputes the company-scope segment only
    resp = await admin.put("/v1/attributes/company/zip", json={"type": "number"}, headers=h)
    assert resp.json()["recomputing"] == ["company-zip"]
    # membership attributes are not in the condition language: typed, nothing recomputed
    resp = await admin.put("/v1/attributes/membership/zip", json={"type": "number"}, headers=h)
    assert resp.status_code == 200 and resp.json()["recomputing"] == []


async def test_a_type_that_would_invalidate_a_segment_is_refused(
    admin: Client, db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    seg = await _segment(db, env.id, "pro", {"attribute": "plan", "op": "contains", "value": "pro"})
    resp = await admin.put("/v1/attributes/user/plan", json={"type": "number"}, headers=secret(env))
    assert resp.status_code == 422
    body = resp.json()
    assert body["field"] == "type" and "'pro'" in body["error"] and "$.op" in body["error"]
    # nothing saved: no type, no new version
    assert await db.fetchval("SELECT count(*) FROM attribute_types WHERE env_id = $1", env.id) == 0
    assert await db.fetchval("SELECT version FROM segments WHERE id = $1", seg) == 1


async def test_bad_requests(admin: Client, env: EnvironmentKeys) -> None:
    h = secret(env)
    for path, body, status, field in [
        ("/v1/attributes/planet/x", {"type": "string"}, 400, "scope"),
        ("/v1/attributes/user/x", {"type": "text"}, 422, "type"),
        ("/v1/attributes/user/x", {"type": "string", "extra": 1}, 422, "extra"),
        ("/v1/attributes/user/" + "n" * 256, {"type": "string"}, 400, "name"),
    ]:
        resp = await admin.put(path, json=body, headers=h)
        assert (resp.status_code, resp.json()["field"]) == (status, field), path
    resp = await admin.put("/v1/attributes/user/x", json={"type": "string"})
    assert resp.status_code == 401


async def test_warnings_pages(admin: Client, db: asyncpg.Pool, env: EnvironmentKeys) -> None:
    await _warn(db, env.id, "seats", 5)
    await _warn(db, env.id, "company:seats", 1)
    h = secret(env)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        resp = await admin.get("/v1/attributes/user/seats/warnings", params=params, headers=h)
        body = resp.json()
        seen.extend(w["warning"] for w in body["warnings"])
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert seen == [f"warning {i}" for i in reversed(range(5))]
    resp = await admin.get("/v1/attributes/company/seats/warnings", headers=h)
    first = resp.json()["warnings"][0]
    assert first["messageId"] == "m0" and first["userId"] == "u" and first["at"]
    resp = await admin.get("/v1/attributes/user/seats/warnings?cursor=x", headers=h)
    assert resp.status_code == 400
