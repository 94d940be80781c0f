"""GET /v1/users?sort=: the orders and their keyset cursors (ties on last_seen_at broken by
the profile key, so paging never skips or repeats a user)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from services.admin.queries.user_order import parse_sort
from shared.environments import EnvironmentKeys
from tests.admin.conftest import secret
from tests.admin.test_preview import add_user
from tests.admin.test_users_list import _all_pages

Client = AsyncTestClient[Any]
BASE = datetime(2026, 3, 1, tzinfo=UTC)


async def _pages(admin: Client, env: EnvironmentKeys, **params: Any) -> list[str | None]:
    """Every page of the list, two users at a time, flattened."""
    return [u for page in await _all_pages(admin, env, limit=2, **params) for u in page]


async def test_each_order_pages_every_user_once(
    admin: Client, db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    # u0..u4 created in order; last seen: u0 +3 min, u1 +1, u2 +3 (tie with u0), u3 +0, u4 +2
    for i, minutes in enumerate((3, 1, 3, 0, 2)):
        pk = await add_user(db, env.id, f"u{i}", {"plan": "pro" if i != 4 else "free"})
        await db.execute(
            "UPDATE users SET last_seen_at = $3 WHERE env_id = $1 AND id = $2",
            env.id,
            pk,
            BASE + timedelta(minutes=minutes, microseconds=7),
        )
    assert await _pages(admin, env) == ["u0", "u1", "u2", "u3", "u4"]
    assert await _pages(admin, env, sort="-created") == ["u4", "u3", "u2", "u1", "u0"]
    assert await _pages(admin, env, sort="lastSeenAt") == ["u3", "u1", "u4", "u0", "u2"]
    assert await _pages(admin, env, sort="-lastSeenAt") == ["u2", "u0", "u4", "u1", "u3"]
    pro = '{"attribute": "plan", "op": "is", "value": "pro"}'
    assert await _pages(admin, env, sort="-lastSeenAt", filter=pro) == ["u2", "u0", "u1", "u3"]


async def test_a_bad_sort_or_cursor_is_a_400_naming_it(admin: Client, env: EnvironmentKeys) -> None:
    for params, field in (
        ({"sort": "plan"}, "sort"),
        ({"sort": "lastSeenAt", "cursor": "12"}, "cursor"),
        ({"sort": "lastSeenAt", "cursor": "x.1"}, "cursor"),
        ({"sort": "lastSeenAt", "cursor": "9999999999999999999.1"}, "cursor"),
        ({"cursor": "1.2"}, "cursor"),
    ):
        resp = await admin.get("/v1/users", params=params, headers=secret(env))
        assert resp.status_code == 400, (params, resp.text)
        assert resp.json()["field"] == field


async def test_pages_by_last_seen_read_the_day_index(
    db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    """Sorting by lastSeenAt must not sort every user of the environment for each page: the
    order leads with the indexed last_seen_day (migration 085), the cursor bounds it too."""
    for way in ("lastSeenAt", "-lastSeenAt"):
        order = parse_sort(way)
        for cursor in (None, order.cursor_of(BASE, 7)):
            after, params = order.after(cursor, 3)
            async with db.acquire() as conn, conn.transaction():
                await conn.execute("SET LOCAL enable_seqscan = off")
                plan = "\n".join(
                    r[0]
                    for r in await conn.fetch(
                        f"""EXPLAIN SELECT u.id FROM users u WHERE u.env_id = $1 AND {after}
                            ORDER BY {order.order_by} LIMIT $2""",
                        env.id,
                        51,
                        *params,
                    )
                )
            assert "users_last_seen_day" in plan, plan
