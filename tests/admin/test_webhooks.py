"""Webhook subscriptions through the admin API: validation (non-public targets refused unless
allowed), secrets, changes, the delivery log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from services.admin.app import create_app
from services.admin.webhooks.resync import ResyncResult, resync_webhook
from shared.environments import EnvironmentKeys
from shared.settings import Settings
from tests.admin.conftest import create_manual, make_user, secret

Client = AsyncTestClient[Any]
URL = "http://127.0.0.1:9/hook"


async def test_create_list_read_update_delete(
    quiet_admin: Client, env: EnvironmentKeys, db: asyncpg.Pool
) -> None:
    admin = quiet_admin
    beta = await create_manual(admin, env, "beta")
    gamma = await create_manual(admin, env, "gamma")
    resp = await admin.post(
        "/v1/webhooks",
        json={"url": "https://lms.example.com/sync", "segments": ["beta", int(gamma), "beta"]},
        headers=secret(env),
    )
    assert resp.status_code == 201, resp.text
    hook = resp.json()
    assert hook["secret"].startswith("whsec_") and len(hook["secret"]) > 40
    assert hook["segments"] == [
        {"id": beta, "key": "beta", "name": "Beta"},
        {"id": gamma, "key": "gamma", "name": "Gamma"},
    ]
    assert (hook["events"], hook["active"], hook["url"]) == (
        ["entered", "exited"],
        True,
        "https://lms.example.com/sync",
    )
    assert (
        await db.fetchval(
            "SELECT secret FROM webhooks WHERE env_id = $1 AND id = $2", env.id, int(hook["id"])
        )
        == hook["secret"]
    )

    shown = {k: v for k, v in hook.items() if k != "secret"}
    resp = await admin.get(f"/v1/webhooks/{hook['id']}", headers=secret(env))
    assert resp.json() == shown  # the secret is not shown again
    resp = await admin.get("/v1/webhooks", headers=secret(env))
    assert resp.json() == {"webhooks": [shown]}

    resp = await admin.patch(
        f"/v1/webhooks/{hook['id']}",
        json={"segments": None, "events": ["exited"], "active": False, "url": URL},
        headers=secret(env),
    )
    assert resp.status_code == 200, resp.text
    assert {k: resp.json()[k] for k in ("segments", "events", "active", "url")} == {
        "segments": None,
        "events": ["exited"],
        "active": False,
        "url": URL,
    }
    resp = await admin.patch(
        f"/v1/webhooks/{hook['id']}", json={"segments": ["gamma"]}, headers=secret(env)
    )
    assert [s["key"] for s in resp.json()["segments"]] == ["gamma"]
    assert resp.json()["events"] == ["exited"]  # untouched
    # a deleted segment drops out of the list
    await admin.delete("/v1/segments/gamma", headers=secret(env))
    assert (await admin.get(f"/v1/webhooks/{hook['id']}", headers=secret(env))).json()[
        "segments"
    ] == []

    assert (
        await admin.delete(f"/v1/webhooks/{hook['id']}", headers=secret(env))
    ).status_code == 204
    for call in (admin.get, admin.delete):
        resp = await call(f"/v1/webhooks/{hook['id']}", headers=secret(env))
        assert resp.status_code == 404
    assert (await admin.get("/v1/webhooks/abc", headers=secret(env))).status_code == 404


async def test_validation(quiet_admin: Client, env: EnvironmentKeys) -> None:
    admin = quiet_admin
    await create_manual(admin, env, "beta")
    cases: list[tuple[Any, str]] = [
        ({}, "url"),
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "javascript:alert(1)"}, "url"),
        ({"url": "file:///etc/passwd"}, "url"),
        ({"url": "http://"}, "url"),
        ({"url": "http:///path"}, "url"),
        ({"url": "https://exa mple.com/"}, "url"),
        ({"url": "https://example.com:99999/"}, "url"),
        ({"url": "https://example.com/#frag"}, "url"),
        ({"url": "example.com/hook"}, "url"),
        ({"url": "https://x.io/" + "a" * 2000}, "url"),
        ({"url": URL, "segments": ["beta", "nope"]}, "segments[1]"),
        ({"url": URL, "segments": []}, "segments"),
        ({"url": URL, "events": []}, "events"),
        ({"url": URL, "events": ["joined"]}, "events[0]"),
        ({"url": URL, "secret": "mine"}, "secret"),
    ]
    for body, field in cases:
        resp = await admin.post("/v1/webhooks", json=body, headers=secret(env))
        assert resp.status_code == 422, (body, resp.text)
        assert resp.json()["field"] == field, (body, resp.json())
    resp = await admin.get("/v1/webhooks", headers=secret(env))
    assert resp.json() == {"webhooks": []}
    resp = await admin.post("/v1/webhooks", json={"url": URL}, headers=secret(env))
    hook = resp.json()
    resp = await admin.patch(
        f"/v1/webhooks/{hook['id']}", json={"url": "gopher://x"}, headers=secret(env)
    )
    assert resp.status_code == 422
    resp = await admin.get("/v1/webhooks", headers={"Authorization": f"Bearer {env.writeKey}"})
    assert resp.status_code == 403


async def test_delivery_log_pages_newest_first(
    quiet_admin: Client, env: EnvironmentKeys, db: asyncpg.Pool
) -> None:
    admin = quiet_admin
    await create_manual(admin, env, "beta")
    users = [f"u{i}" for i in range(5)]
    for u in users:
        await make_user(db, env, u)
    hook = (await admin.post("/v1/webhooks", json={"url": URL}, headers=secret(env))).json()
    for u in users:
        resp = await admin.post(
            "/v1/segments/beta/members", json={"userIds": [u]}, headers=secret(env)
        )
        assert resp.status_code == 200
    # a successful delivery, written as the worker's would be (last_error cleared): the
    # session's end-to-end worker scans this database and may have failed an attempt already
    await db.execute(
        """UPDATE webhook_deliveries SET status = 'delivered', attempts = 1, last_status = 200,
                  last_error = NULL, delivered_at = now()
           WHERE webhook_id = $1 AND payload ->> 'userId' = 'u0'""",
        int(hook["id"]),
    )
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        resp = await admin.get(
            f"/v1/webhooks/{hook['id']}/deliveries", params=params, headers=secret(env)
        )
        assert resp.status_code == 200, resp.text
        seen += resp.json()["deliveries"]
        cursor = resp.json()["nextCursor"]
        if cursor is None:
            break
    assert [d["payload"]["userId"] for d in seen] == ["u4", "u3", "u2", "u1", "u0"]
    assert seen[0]["status"] == "pending" and seen[0]["nextAttemptAt"] is not None
    assert {k: seen[-1][k] for k in ("status", "attempts", "lastStatus", "lastError")} == {
        "status": "delivered",
        "attempts": 1,
        "lastStatus": 200,
        "lastError": None,
    }
    assert seen[-1]["deliveredAt"] is not None and seen[-1]["nextAttemptAt"] is None
    assert all(d["payload"]["type"] == "segment.entered" for d in seen)
    resp = await admin.get(
        f"/v1/webhooks/{hook['id']}/deliveries",
        params={"status": "delivered"},
        headers=secret(env),
    )
    assert [d["payload"]["userId"] for d in resp.json()["deliveries"]] == ["u0"]
    for params in ({"status": "lost"}, {"cursor": "x"}, {"limit": "0"}):
        resp = await admin.get(
            f"/v1/webhooks/{hook['id']}/deliveries", params=params, headers=secret(env)
        )
        assert resp.status_code == 400, params
    resp = await admin.post(
        f"/v1/webhooks/{hook['id']}/deliveries/999999999/retry", headers=secret(env)
    )
    assert resp.status_code == 404
    # deleting the webhook deletes its log
    await admin.delete(f"/v1/webhooks/{hook['id']}", headers=secret(env))
    assert (
        await db.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = $1", int(hook["id"])
        )
        == 0
    )


# (url, what the error names): a literal address or name of each kind webhooks may not call
BLOCKED_URLS = [
    ("http://127.0.0.1:5432/", "127.0.0.1 is a loopback address"),
    ("http://10.0.0.5/hook", "10.0.0.5 is a private address"),
    ("http://172.16.3.4/hook", "172.16.3.4 is a private address"),
    ("http://192.168.1.10/hook", "192.168.1.10 is a private address"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("http://[::1]:8080/hook", "::1 is a loopback address"),
    ("http://[fe80::1]/hook", "fe80::1 is a link-local address"),
    ("http://[fd00::5]/hook", "fd00::5 is a private address"),
    ("http://[::ffff:127.0.0.1]/hook", "::ffff:127.0.0.1 is a loopback address"),
    ("http://[::ffff:a9fe:a9fe]/", "::ffff:a9fe:a9fe (169.254.169.254) is a link-local address"),
    ("http://[64:ff9b::a00:5]/", "64:ff9b::a00:5 (10.0.0.5) is a private address"),
    ("http://0.0.0.0:8003/hook", "0.0.0.0 is an unspecified address"),
    ("http://100.64.0.1/hook", "100.64.0.1 is a shared (CGNAT) address"),
    ("http://224.0.0.251/hook", "224.0.0.251 is a multicast address"),
    ("http://240.0.0.1/hook", "240.0.0.1 is a reserved address"),
    ("http://192.0.2.7/hook", "192.0.2.7 is a non-public address"),
    ("http://localhost:8003/hook", "localhost is this machine"),
    ("https://api.LOCALHOST./hook", "api.localhost. is this machine"),
    # numeric forms the resolver reads as addresses
    ("http://127.1/hook", "127.1 resolves to 127.0.0.1, a loopback address"),
    ("http://2130706433/hook", "2130706433 resolves to 127.0.0.1, a loopback address"),
    ("http://0xa9.0xfe.0xa9.0xfe/", "resolves to 169.254.169.254, a link-local address"),
]


@pytest.fixture
async def guarded_admin(quiet_settings: Settings) -> AsyncIterator[Client]:
    """An admin app with SEGMENTS_WEBHOOK_ALLOW_PRIVATE unset, as in production."""
    blocked = msgspec.structs.replace(quiet_settings, webhook_allow_private=None)
    async with AsyncTestClient(app=create_app(blocked)) as client:
        yield client


@pytest.mark.parametrize(("url", "named"), BLOCKED_URLS, ids=[u for u, _ in BLOCKED_URLS])
async def test_non_public_targets_refused_and_nothing_saved(
    guarded_admin: Client, env: EnvironmentKeys, db: asyncpg.Pool, url: str, named: str
) -> None:
    admin = guarded_admin
    resp = await admin.post("/v1/webhooks", json={"url": url}, headers=secret(env))
    assert resp.status_code == 422, resp.text
    error = resp.json()
    assert error["field"] == "url"
    assert named in error["error"] and "public addresses" in error["error"], error
    assert await db.fetchval("SELECT count(*) FROM webhooks WHERE env_id = $1", env.id) == 0

    # a name that does not resolve now is accepted (the worker checks at each delivery) ...
    resp = await admin.post(
        "/v1/webhooks", json={"url": "https://hooks.example.invalid/x"}, headers=secret(env)
    )
    assert resp.status_code == 201, resp.text
    hook = resp.json()
    # ... and cannot be changed to a blocked target either
    resp = await admin.patch(
        f"/v1/webhooks/{hook['id']}", json={"url": url, "active": False}, headers=secret(env)
    )
    assert resp.status_code == 422, resp.text
    assert resp.json()["field"] == "url"
    assert [
        tuple(r)
        for r in await db.fetch("SELECT url, active FROM webhooks WHERE env_id = $1", env.id)
    ] == [("https://hooks.example.invalid/x", True)]


async def test_non_public_targets_accepted_when_allowed(
    quiet_admin: Client, env: EnvironmentKeys, db: asyncpg.Pool
) -> None:
    """The test settings set SEGMENTS_WEBHOOK_ALLOW_PRIVATE, as the development runner does."""
    for url, _named in BLOCKED_URLS:
        resp = await quiet_admin.post("/v1/webhooks", json={"url": url}, headers=secret(env))
        assert resp.status_code == 201, (url, resp.text)
        assert resp.json()["url"] == url
    saved = await db.fetch("SELECT url FROM webhooks WHERE env_id = $1 ORDER BY id", env.id)
    assert [r["url"] for r in saved] == [url for url, _named in BLOCKED_URLS]


async def test_scheme_checked_before_the_address(
    guarded_admin: Client, env: EnvironmentKeys
) -> None:
    for url in ("ftp://127.0.0.1/x", "gopher://169.254.169.254:70/", "file://localhost/etc"):
        resp = await guarded_admin.post("/v1/webhooks", json={"url": url}, headers=secret(env))
        assert resp.status_code == 422
        assert resp.json()["error"] == "url: only http and https URLs can receive webhooks"


async def test_public_targets_accepted_when_blocking(
    guarded_admin: Client, env: EnvironmentKeys
) -> None:
    for url in (
        "https://93.184.215.14/hook",
        "https://[2606:4700:4700::1111]:8443/hook",
        "http://[::ffff:8.8.8.8]/hook",
        "https://hooks.example.invalid/later",  # does not resolve now: the worker checks
    ):
        resp = await guarded_admin.post("/v1/webhooks", json={"url": url}, headers=secret(env))
        assert resp.status_code == 201, (url, resp.text)


async def test_resync_queues_every_member_once_in_short_transactions(
    quiet_admin: Client, env: EnvironmentKeys, db: asyncpg.Pool
) -> None:
    course = int(await create_manual(quiet_admin, env, "course"))
    other = int(await create_manual(quiet_admin, env, "other"))
    pks = [await make_user(db, env, f"r{i}") for i in range(5)]
    anonymous = await make_user(db, env, None, anonymous_ids=("visitor",))
    await db.execute(
        """INSERT INTO memberships (env_id, segment_id, user_pk)
           SELECT $1, s, u FROM unnest($2::bigint[], $3::bigint[]) AS x(s, u)""",
        env.id,
        [course] * 6 + [other] * 2,
        [*pks, anonymous, pks[0], pks[1]],
    )
    resp = await quiet_admin.post(
        "/v1/webhooks", json={"url": URL, "segments": ["course", "other"]}, headers=secret(env)
    )
    assert resp.status_code == 201, resp.text
    hook = int(resp.json()["id"])

    async with db.acquire() as conn:
        assert await resync_webhook(conn, env.id, hook, chunk=2) == ResyncResult(queued=7)
    rows = await db.fetch(
        """SELECT payload, xmin::text AS tx FROM webhook_deliveries
           WHERE env_id = $1 AND webhook_id = $2""",
        env.id,
        hook,
    )
    announced = sorted((r["payload"]["segment"]["key"], r["payload"]["userId"]) for r in rows)
    assert announced == sorted(
        [("course", f"r{i}") for i in range(5)] + [("other", "r0"), ("other", "r1")]
    )
    assert {r["payload"]["cause"] for r in rows} == {"sync"}
    # chunks of 2 memberships, each its own transaction: 3 for course, 1 for other
    assert len({r["tx"] for r in rows}) == 4

    # a webhook deleted meanwhile gets nothing more (and the resync does not fail)
    resp = await quiet_admin.delete(f"/v1/webhooks/{hook}", headers=secret(env))
    assert resp.status_code == 204, resp.text
    async with db.acquire() as conn:
        assert await resync_webhook(conn, env.id, hook, chunk=2) == ResyncResult(queued=0)
