"""Member counts and pages, user profiles, and who may call the admin API."""

from __future__ import annotations

from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from shared.environments import EnvironmentKeys, ensure_environment
from tests.admin.conftest import secret

Client = AsyncTestClient[Any]


async def _user(db: asyncpg.Pool, env: EnvironmentKeys, user_id: str | None, *segs: int) -> int:
    async with db.acquire() as conn, conn.transaction():
        pk: int = await conn.fetchval(
            """INSERT INTO users (env_id, user_id, attributes, first_seen_at, last_seen_at,
                                  membership_version)
               VALUES ($1, $2, $3, '2024-01-02T03:04:05Z', '2024-02-03T04:05:06Z', 1)
               RETURNING id""",
            env.id,
            user_id,
            {"plan": "pro", "seats": 3},
        )
        for seg in segs:
            await conn.execute(
                "INSERT INTO memberships (env_id, segment_id, user_pk) VALUES ($1, $2, $3)",
                env.id,
                seg,
                pk,
            )
    return pk


async def _segment_id(admin: Client, env: EnvironmentKeys, name: str) -> int:
    resp = await admin.post(
        "/v1/segments", json={"name": name, "kind": "manual"}, headers=secret(env)
    )
    assert resp.status_code == 201
    return int(resp.json()["id"])


async def test_member_counts_and_pages(
    admin: Client, env: EnvironmentKeys, db: asyncpg.Pool
) -> None:
    beta = await _segment_id(admin, env, "Beta")
    await _segment_id(admin, env, "Empty")
    for i in range(5):
        await _user(db, env, f"u{i}", beta)
    anon = await _user(db, env, None, beta)
    await db.execute(
        "INSERT INTO identities (env_id, anonymous_id, user_pk) VALUES ($1, 'anon-9', $2)",
        env.id,
        anon,
    )
    resp = await admin.get("/v1/segments", headers=secret(env))
    counts = {s["key"]: s["memberCount"] for s in resp.json()["segments"]}
    assert counts == {"all-users": 0, "beta": 6, "empty": 0}

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "4"} | ({"cursor": cursor} if cursor else {})
        resp = await admin.get("/v1/segments/beta/members", params=params, headers=secret(env))
        assert resp.status_code == 200, resp.text
        seen += resp.json()["userIds"]
        cursor = resp.json()["nextCursor"]
        pages += 1
        if cursor is None:
            break
    assert pages == 2
    assert seen == ["u0", "u1", "u2", "u3", "u4", "anon-9"]
    resp = await admin.get("/v1/segments/empty/members", headers=secret(env))
    assert resp.json() == {"userIds": [], "nextCursor": None}
    for params in ({"limit": "0"}, {"limit": "5000"}, {"cursor": "abc"}):
        resp = await admin.get("/v1/segments/beta/members", params=params, headers=secret(env))
        assert resp.status_code == 400, params
    assert (await admin.get("/v1/segments/nope/members", headers=secret(env))).status_code == 404


async def test_user_profile(admin: Client, env: EnvironmentKeys, db: asyncpg.Pool) -> None:
    beta = await _segment_id(admin, env, "Beta")
    pk = await _user(db, env, "u1", beta)
    await db.execute(
        "INSERT INTO identities (env_id, anonymous_id, user_pk) VALUES ($1, 'anon-1', $2)",
        env.id,
        pk,
    )
    company = await db.fetchval(
        """INSERT INTO companies (env_id, company_id, attributes) VALUES ($1, 'acme', $2)
           RETURNING id""",
        env.id,
        {"seats": 50},
    )
    await db.execute(
        """INSERT INTO company_members (env_id, user_pk, company_pk, attributes)
           VALUES ($1, $2, $3, $4)""",
        env.id,
        pk,
        company,
        {"role": "admin"},
    )
    for ident in ("u1", "anon-1"):
        resp = await admin.get(f"/v1/users/{ident}", headers=secret(env))
        assert resp.status_code == 200
        body = resp.json()
        since = body["segments"][0].pop("since")
        assert since.endswith("Z")  # when the user entered
        assert body == {
            "userId": "u1",
            "anonymousIds": ["anon-1"],
            "attributes": {"plan": "pro", "seats": 3},
            "firstSeenAt": "2024-01-02T03:04:05Z",
            "lastSeenAt": "2024-02-03T04:05:06Z",
            "segments": [{"id": str(beta), "key": "beta", "name": "Beta"}],
            "companies": [
                {"companyId": "acme", "attributes": {"seats": 50}, "membership": {"role": "admin"}}
            ],
            "tags": [],
            "attributeTimes": {},  # the rows above were written without timestamps
        }
    resp = await admin.get("/v1/users/nobody", headers=secret(env))
    assert resp.status_code == 404


async def test_secret_key_only(admin: Client, env: EnvironmentKeys, db: asyncpg.Pool) -> None:
    calls = [
        ("GET", "/v1/segments", None),
        ("POST", "/v1/segments", {"name": "x", "kind": "manual"}),
        ("GET", "/v1/segments/all-users", None),
        ("PATCH", "/v1/segments/all-users", {"name": "x"}),
        ("DELETE", "/v1/segments/all-users", None),
        ("GET", "/v1/segments/all-users/members", None),
        ("GET", "/v1/users/u1", None),
    ]
    for method, path, body in calls:
        for headers, status in (
            ({"Authorization": f"Bearer {env.writeKey}"}, 403),
            ({}, 401),
            ({"Authorization": "Bearer sk_unknown"}, 401),
        ):
            resp = await admin.request(method, path, json=body, headers=headers)
            assert resp.status_code == status, (method, path, headers)
    # Another environment's secret key sees only its own environment.
    async with db.acquire() as conn:
        other = await ensure_environment(conn, env.name + "-other")
    await _segment_id(admin, env, "Beta")
    assert (await admin.get("/v1/segments/beta", headers=secret(other))).status_code == 404
    resp = await admin.get("/v1/segments", headers=secret(other))
    assert [s["key"] for s in resp.json()["segments"]] == ["all-users"]
    count = await db.fetchval("SELECT count(*) FROM segments WHERE env_id = $1", env.id)
    assert count == 2  # the refused POSTs above saved nothing
