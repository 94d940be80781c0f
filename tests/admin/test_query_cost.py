"""A condition PostgreSQL cannot bear is refused, and previews and the users list run under a
statement_timeout that ends as a clear 422 (issue 11, item 3)."""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg
import msgspec
from litestar.testing import AsyncTestClient

from services.admin.app import create_app
from shared.environments import EnvironmentKeys
from shared.settings import Settings
from tests.admin.conftest import secret
from tests.admin.test_preview import add_user

Client = AsyncTestClient[Any]
HOSTILE = "(.*.*.*.*.*.*.*.*.*.*){100}x"


async def test_a_regex_too_costly_for_postgresql_is_refused_naming_the_node(
    admin: Client, env: EnvironmentKeys
) -> None:
    leaf = {"attribute": "name", "op": "regex", "value": HOSTILE}
    for path, body in (
        (
            "/v1/segments/preview",
            {"conditions": {"all": [{"attribute": "a", "op": "is_set"}, leaf]}},
        ),
        ("/v1/segments", {"name": "r", "kind": "dynamic", "conditions": {"any": [leaf]}}),
    ):
        resp = await admin.post(path, json=body, headers=secret(env))
        assert resp.status_code == 422, resp.text
        error = resp.json()
        assert "too costly for PostgreSQL" in error["error"]
        node = "all[1].value" if "preview" in path else "any[0].value"
        assert node in error["error"] and error["field"] in ("conditions", f"$.{node}"), error
    resp = await admin.get(
        "/v1/users", params={"filter": msgspec.json.encode(leaf).decode()}, headers=secret(env)
    )
    assert (resp.status_code, resp.json()["field"]) == (422, "filter")


async def test_previews_and_the_users_list_stop_at_the_statement_timeout(
    settings: Settings, db: asyncpg.Pool, env: EnvironmentKeys
) -> None:
    for i in range(3):
        await add_user(db, env.id, f"u{i}", {"name": "abcdefghij" * 3})
    # the dearest pattern accepted compiles in about half a second in PostgreSQL, far beyond
    # the 1 ms allowed here; a fresh literal each run so no backend has it compiled already
    costly = f"(.*.{{0,10}}){{100}}{secrets.token_hex(4)}"
    leaf = {"attribute": "name", "op": "regex", "value": costly}
    hurried = msgspec.structs.replace(settings, admin_query_timeout_seconds=0.001)
    async with AsyncTestClient(app=create_app(hurried)) as admin:
        resp = await admin.post(
            "/v1/segments/preview", json={"conditions": leaf}, headers=secret(env)
        )
        assert resp.status_code == 422, resp.text
        assert resp.json()["field"] == "conditions"
        assert "took longer than" in resp.json()["error"]
        leaf["value"] = f"(.*.{{0,10}}){{100}}{secrets.token_hex(4)}"
        resp = await admin.get(
            "/v1/users", params={"filter": msgspec.json.encode(leaf).decode()}, headers=secret(env)
        )
        assert (resp.status_code, resp.json()["field"]) == (422, "filter"), resp.text
