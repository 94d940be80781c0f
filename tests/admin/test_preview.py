"""POST /v1/segments/preview: count and sample of an unsaved condition, typed by the
environment's attribute types, with segment, tag, company and event leaves; 422 with paths."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from services.admin.queries import service
from shared.environments import EnvironmentKeys
from tests.admin.conftest import secret
from tests.conditions.conftest import write_related

Client = AsyncTestClient[Any]
SEEN = datetime(2024, 1, 1, tzinfo=UTC)


async def add_user(
    db: asyncpg.Pool, env_id: int, user_id: str | None, attributes: dict[str, Any], **related: Any
) -> int:
    """A user row (and its tags, companies, memberships, event counts)."""
    async with db.acquire() as conn, conn.transaction():
        pk: int = await conn.fetchval(
            """INSERT INTO users (env_id, user_id, attributes, first_seen_at, last_seen_at)
               VALUES ($1, $2, $3, $4, $4) RETURNING id""",
            env_id,
            user_id,
            attributes,
            SEEN,
        )
        await write_related(
            conn,
            env_id,
            pk,
            related.get("tags", frozenset()),
            related.get("companies", []),
            related.get("segments", []),
            related.get("events", {}),
        )
    return pk


async def _preview(admin: Client, env: EnvironmentKeys, conditions: Any) -> Any:
    resp = await admin.post(
        "/v1/segments/preview", json={"conditions": conditions}, headers=secret(env)
    )
    return resp.status_code, resp.json()


async def test_preview_counts_and_samples(
    admin: Client, db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    for i in range(30):
        await add_user(db, env.id, f"u{i:02d}", {"plan": "pro" if i % 3 == 0 else "free", "n": i})
    status, body = await _preview(admin, env, {"attribute": "plan", "op": "is", "value": "pro"})
    assert status == 200
    assert body["count"] == 10
    assert [u["userId"] for u in body["sample"]] == [f"u{i:02d}" for i in range(0, 30, 3)]
    assert body["sample"][0]["attributes"] == {"plan": "pro", "n": 0}
    assert body["sample"][0]["firstSeenAt"].startswith("2024-01-01")
    status, body = await _preview(admin, env, {"attribute": "n", "op": "gte", "value": 0})
    assert body["count"] == 30 and len(body["sample"]) == 20
    status, body = await _preview(admin, env, {"any": []})
    assert (status, body["count"], body["sample"]) == (200, 0, [])


async def test_preview_uses_declared_types(
    admin: Client, db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    await add_user(db, env.id, "zip5", {"zip": 1234})
    await add_user(db, env.id, "zip0", {"zip": "01234"})
    condition = {"attribute": "zip", "op": "is", "value": 1234}
    assert (await _preview(admin, env, condition))[1]["count"] == 2  # untyped: numbers
    await db.execute(
        """INSERT INTO attribute_types (env_id, scope, name, type)
           VALUES ($1, 'user', 'zip', 'string')""",
        env.id,
    )
    status, body = await _preview(admin, env, condition)
    assert [u["userId"] for u in body["sample"]] == ["zip5"]  # as text: "1234" only
    status, body = await _preview(admin, env, {"attribute": "zip", "op": "gt", "value": 5})
    assert status == 422
    assert body["field"] == "conditions"
    assert '$.op: operator "gt" does not apply to attribute "zip" (string)' in body["error"]


async def test_preview_other_leaves(admin: Client, db: asyncpg.Pool, env: EnvironmentKeys) -> None:
    seg = await db.fetchval(
        """INSERT INTO segments (env_id, key, name, kind)
           VALUES ($1, 'vip', 'VIP', 'manual') RETURNING id""",
        env.id,
    )
    today = datetime.now(UTC).date()
    await add_user(db, env.id, "a", {}, tags=frozenset({("Department", "Sales")}), segments=[seg])
    await add_user(db, env.id, "b", {}, companies=[("acme", {"seats": 80})])
    await add_user(db, env.id, "c", {}, events={"Clicked Upgrade": {today: 3}})
    await add_user(db, env.id, "d", {})
    cases: list[tuple[Any, list[str]]] = [
        ({"tag": {"key": "Department", "value": "Sales"}}, ["a"]),
        ({"segment": "vip"}, ["a"]),
        ({"segment": seg}, ["a"]),
        ({"attribute": "seats", "scope": "company", "op": "gte", "value": 50}, ["b"]),
        ({"event": "Clicked Upgrade", "op": "gte", "value": 3, "withinDays": 30}, ["c"]),
        ({"event": "Clicked Upgrade", "op": "is", "value": 0, "withinDays": 30}, ["a", "b", "d"]),
    ]
    for condition, expected in cases:
        status, body = await _preview(admin, env, condition)
        assert status == 200, body
        assert [u["userId"] for u in body["sample"]] == expected, condition
        assert body["count"] == len(expected)


async def test_preview_validation_errors(admin: Client, env: EnvironmentKeys) -> None:
    cases: list[tuple[Any, str]] = [
        ({"all": [{"segment": "nope"}]}, "$.all[0].segment: no segment with key or id 'nope'"),
        ({"attribute": "x", "op": "regex", "value": "(a"}, "$.value: regex"),
        ({"any": [{"attribute": "x", "op": "is"}]}, '$.any[0].value: operator "is" needs a value'),
        ({"event": "e", "op": "gte", "value": 1, "withinDays": 0}, "$.withinDays"),
    ]
    for condition, message in cases:
        status, body = await _preview(admin, env, condition)
        assert status == 422, condition
        assert message in body["error"] and body["field"] == "conditions"
    resp = await admin.post("/v1/segments/preview", json={"conditons": {}}, headers=secret(env))
    assert resp.status_code == 422
    resp = await admin.post("/v1/segments/preview", content=b"{", headers=secret(env))
    assert resp.status_code == 400


async def test_preview_matches_tag_keys_and_values_literally(
    admin: Client, db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    hostile = "x' OR '1'='1"
    await add_user(db, env.id, "exact", {}, tags=frozenset({(hostile, hostile), ("%", "_")}))
    await add_user(db, env.id, "other", {}, tags=frozenset({("x", "y"), ("a", "b")}))
    for tag, expected in [
        ({"key": hostile, "value": hostile}, ["exact"]),
        ({"key": hostile}, ["exact"]),
        ({"key": "%"}, ["exact"]),
        ({"key": "%", "value": "%"}, []),
        ({"key": "_", "value": "_"}, []),
        ({"key": "'); DELETE FROM users; --"}, []),
    ]:
        status, body = await _preview(admin, env, {"tag": tag})
        assert status == 200
        assert [u["userId"] for u in body["sample"]] == expected
    assert await db.fetchval("SELECT count(*) FROM users WHERE env_id = $1", env.id) == 2


async def test_preview_needs_the_secret_key(admin: Client, env: EnvironmentKeys) -> None:
    body: dict[str, Any] = {"conditions": {"all": []}}
    resp = await admin.post("/v1/segments/preview", json=body)
    assert resp.status_code == 401
    headers = {"Authorization": f"Bearer {env.writeKey}"}
    resp = await admin.post("/v1/segments/preview", json=body, headers=headers)
    assert resp.status_code == 403


async def _all_users(db: asyncpg.Pool, env_id: int, pks: list[int]) -> None:
    """The All users memberships the worker would have written (the environment's size)."""
    await db.execute(
        """INSERT INTO memberships (env_id, segment_id, user_pk)
           SELECT $1, s.id, unnest($2::bigint[]) FROM segments s
           WHERE s.env_id = $1 AND s.kind = 'all'""",
        env_id,
        pks,
    )


async def test_a_large_environment_gets_an_estimated_count_and_the_exact_sample(
    db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    pks = [
        await add_user(db, env.id, f"e{i:03d}", {"plan": "pro" if i % 2 else "free"})
        for i in range(400)
    ]
    await _all_users(db, env.id, pks)
    pro = {"attribute": "plan", "op": "is", "value": "pro"}
    async with db.acquire() as conn:
        exact = await service.preview(conn, env.id, pro, 10)
        # a sample as large as the environment: the estimate is the count
        whole = await service.preview(conn, env.id, pro, 10, exact_up_to=100, sample_users=400)
        # half of the pages: twice what they hold
        half = await service.preview(conn, env.id, pro, 10, exact_up_to=100, sample_users=200)
    assert (exact.count, exact.estimated) == (200, False)
    assert (whole.count, whole.estimated) == (200, True)
    assert half.estimated and half.count % 2 == 0 and 20 <= half.count <= 400
    expected = [f"e{i:03d}" for i in range(1, 40, 2)]
    for preview in (exact, whole, half):
        assert [u.userId for u in preview.sample] == expected
