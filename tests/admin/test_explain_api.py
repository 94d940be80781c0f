"""GET /v1/segments/{segment}/explain/{userId}: the annotated tree, 404s, manual segments."""

from __future__ import annotations

from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from shared.environments import EnvironmentKeys
from tests.admin.conftest import secret
from tests.admin.test_preview import add_user

Client = AsyncTestClient[Any]


async def _segment(db: asyncpg.Pool, env_id: int, key: str, kind: str, conditions: Any) -> int:
    seg_id: int = await db.fetchval(
        """INSERT INTO segments (env_id, key, name, kind, conditions)
           VALUES ($1, $2, $2, $3, $4) RETURNING id""",
        env_id,
        key,
        kind,
        conditions,
    )
    return seg_id


async def test_explain_dynamic_segment(
    admin: Client, db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    beta = await _segment(db, env.id, "beta", "manual", None)
    conditions = {
        "all": [
            {"attribute": "plan", "op": "in", "value": ["pro", "enterprise"]},
            {"any": [{"segment": "beta"}, {"tag": {"key": "Region", "value": "Europe"}}]},
        ]
    }
    seg = await _segment(db, env.id, "paying", "dynamic", conditions)
    pk = await add_user(db, env.id, "ada", {"plan": "pro"}, segments=[beta])
    await db.execute(
        "INSERT INTO identities (env_id, anonymous_id, user_pk) VALUES ($1, 'anon-1', $2)",
        env.id,
        pk,
    )
    await add_user(db, env.id, "bob", {"plan": 5})
    resp = await admin.get("/v1/segments/paying/explain/ada", headers=secret(env))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["segment"] == {"id": str(seg), "key": "paying", "kind": "dynamic"}
    assert (body["userId"], body["member"], body["result"]) == ("ada", False, True)
    tree = body["explanation"]
    assert tree["result"] is True
    plan, group = tree["all"]
    assert plan == {
        "attribute": "plan",
        "op": "in",
        "value": ["pro", "enterprise"],
        "result": True,
        "type": "string",
        "actual": "pro",
    }
    assert group["any"][0] == {"segment": "beta", "result": True}
    assert group["any"][1] == {
        "tag": {"key": "Region", "value": "Europe"},
        "result": False,
        "actual": [],
    }
    # by id and by anonymous id
    resp = await admin.get(f"/v1/segments/{seg}/explain/anon-1", headers=secret(env))
    assert resp.json()["result"] is True
    resp = await admin.get("/v1/segments/paying/explain/bob", headers=secret(env))
    body = resp.json()
    assert body["result"] is False
    assert body["explanation"]["all"][0]["actual"] == "5"  # coerced to the leaf's type


async def test_explain_manual_and_all_and_404(
    admin: Client, db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    beta = await _segment(db, env.id, "beta", "manual", None)
    await add_user(db, env.id, "ada", {}, segments=[beta])
    resp = await admin.get("/v1/segments/beta/explain/ada", headers=secret(env))
    body = resp.json()
    assert (body["member"], body["explanation"]) == (True, None)
    assert "manual" in body["reason"]
    resp = await admin.get("/v1/segments/all-users/explain/ada", headers=secret(env))
    assert resp.status_code == 200 and resp.json()["explanation"] is None
    resp = await admin.get("/v1/segments/nope/explain/ada", headers=secret(env))
    assert (resp.status_code, resp.json()["field"]) == (404, "segment")
    resp = await admin.get("/v1/segments/beta/explain/nobody", headers=secret(env))
    assert (resp.status_code, resp.json()["field"]) == (404, "userId")
    resp = await admin.get("/v1/segments/beta/explain/ada")
    assert resp.status_code == 401
