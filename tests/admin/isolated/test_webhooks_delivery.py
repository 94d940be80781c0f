"""Webhook delivery by the worker's job, to a real local HTTP receiver: signatures, retries
with backoff, giving up, order, leases (a worker dying mid-send), no re-send once delivered,
nothing sent to a non-public address unless allowed, redirects not followed.

These tests run on a database of their own: the end-to-end stack's worker (same session)
delivers every second, and must not claim the rows these tests deliver by hand."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from services.worker import webhooks
from services.worker.webhooks import deliver_webhooks
from shared.environments import EnvironmentKeys
from shared.settings import Settings
from tests.admin.conftest import (
    Received,
    Receiver,
    change_members,
    create_manual,
    make_user,
    secret,
)

Client = AsyncTestClient[Any]


@pytest.fixture
def admin(quiet_admin: Client) -> Client:
    return quiet_admin


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = await Receiver().start()
    yield server
    await server.close()


def _verify(req: Received, key: str) -> None:
    """Check a request's signature the way a receiver would (independently of our signer)."""
    timestamp = req.headers["x-segments-timestamp"]
    expected = hmac.new(key.encode(), f"{timestamp}.".encode() + req.body, hashlib.sha256)
    assert req.headers["x-segments-signature"] == "sha256=" + expected.hexdigest()
    assert req.headers["content-type"] == "application/json"
    wrong = hmac.new(b"other", f"{timestamp}.".encode() + req.body, hashlib.sha256)
    assert req.headers["x-segments-signature"] != "sha256=" + wrong.hexdigest()


async def _hook(admin: Client, env: EnvironmentKeys, url: str, **extra: Any) -> dict[str, Any]:
    resp = await admin.post("/v1/webhooks", json={"url": url} | extra, headers=secret(env))
    assert resp.status_code == 201, resp.text
    out: dict[str, Any] = resp.json()
    return out


async def _deliveries(db: asyncpg.Pool, hook: dict[str, Any]) -> list[asyncpg.Record]:
    return list(
        await db.fetch(
            "SELECT * FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY change_id",
            int(hook["id"]),
        )
    )


async def _make_due(db: asyncpg.Pool, hook: dict[str, Any]) -> None:
    """Skip the backoff (time is not what these tests are about)."""
    await db.execute(
        """UPDATE webhook_deliveries SET next_attempt_at = now()
           WHERE webhook_id = $1 AND status = 'pending'""",
        int(hook["id"]),
    )


def _ctx(db: asyncpg.Pool, settings: Settings) -> dict[str, Any]:
    return {"pool": db, "settings": settings}


async def test_signed_delivery_retried_with_backoff_then_never_again(
    admin: Client,
    env: EnvironmentKeys,
    db: asyncpg.Pool,
    settings: Settings,
    receiver: Receiver,
) -> None:
    receiver.statuses = [500, 503]
    await create_manual(admin, env, "course-101")
    await make_user(db, env, "learner-1")
    hook = await _hook(admin, env, receiver.url, segments=["course-101"])
    await change_members(admin, env, "course-101", ["learner-1"], add=True)
    [row] = await _deliveries(db, hook)
    assert (row["status"], row["attempts"]) == ("pending", 0)

    await deliver_webhooks(_ctx(db, settings))
    assert len(receiver.requests) == 1
    [row] = await _deliveries(db, hook)
    assert (row["status"], row["attempts"], row["last_status"]) == ("pending", 1, 500)
    assert row["last_error"] == "HTTP 500: nope"
    assert await db.fetchval("SELECT $1 > now()", row["next_attempt_at"])  # backing off
    await deliver_webhooks(_ctx(db, settings))
    assert len(receiver.requests) == 1  # not due yet: nothing sent

    await _make_due(db, hook)
    await deliver_webhooks(_ctx(db, settings))
    [row] = await _deliveries(db, hook)
    assert (row["status"], row["attempts"], row["last_status"]) == ("pending", 2, 503)
    await _make_due(db, hook)
    await deliver_webhooks(_ctx(db, settings))
    [row] = await _deliveries(db, hook)
    assert (row["status"], row["attempts"], row["last_status"]) == ("delivered", 3, 200)
    assert row["last_error"] is None and row["delivered_at"] is not None

    assert len(receiver.requests) == 3
    for req in receiver.requests:
        _verify(req, hook["secret"])
        assert req.path == "/hooks/segments"
        assert req.headers["x-segments-delivery"] == str(row["id"])
        assert json.loads(req.body) == row["payload"]
    assert [r.headers["x-segments-attempt"] for r in receiver.requests] == ["1", "2", "3"]
    payload = json.loads(receiver.requests[-1].body)
    assert payload["type"] == "segment.entered"
    assert payload["userId"] == "learner-1"
    assert payload["segment"]["key"] == "course-101"
    assert payload["cause"] == "admin"

    # delivered is final: a later run (another worker, a restart) sends nothing more
    await db.execute(
        "UPDATE webhook_deliveries SET next_attempt_at = now() WHERE id = $1", row["id"]
    )
    await deliver_webhooks(_ctx(db, settings))
    assert len(receiver.requests) == 3

    # a rotated secret signs what is sent from then on
    resp = await admin.post(f"/v1/webhooks/{hook['id']}/rotate-secret", headers=secret(env))
    assert resp.status_code == 200
    new_secret = resp.json()["secret"]
    assert new_secret != hook["secret"]
    await change_members(admin, env, "course-101", ["learner-1"], add=False)
    await deliver_webhooks(_ctx(db, settings))
    assert len(receiver.requests) == 4
    _verify(receiver.requests[-1], new_secret)
    assert json.loads(receiver.requests[-1].body)["type"] == "segment.exited"


async def test_gives_up_then_retry_from_the_admin_api(
    admin: Client,
    env: EnvironmentKeys,
    db: asyncpg.Pool,
    settings: Settings,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(webhooks, "MAX_ATTEMPTS", 3)
    receiver.statuses = [500, 500, 500]
    await create_manual(admin, env, "beta")
    await make_user(db, env, "u1")
    hook = await _hook(admin, env, receiver.url)
    await change_members(admin, env, "beta", ["u1"], add=True)
    for _ in range(3):
        await _make_due(db, hook)
        await deliver_webhooks(_ctx(db, settings))
    [row] = await _deliveries(db, hook)
    assert (row["status"], row["attempts"]) == ("failed", 3)
    await _make_due(db, hook)
    await deliver_webhooks(_ctx(db, settings))
    assert len(receiver.requests) == 3  # failed is final too

    resp = await admin.get(
        f"/v1/webhooks/{hook['id']}/deliveries", params={"status": "failed"}, headers=secret(env)
    )
    [logged] = resp.json()["deliveries"]
    assert (logged["status"], logged["attempts"], logged["lastStatus"]) == ("failed", 3, 500)
    assert logged["nextAttemptAt"] is None
    resp = await admin.post(
        f"/v1/webhooks/{hook['id']}/deliveries/{logged['id']}/retry", headers=secret(env)
    )
    assert resp.status_code == 200, resp.text
    assert (resp.json()["status"], resp.json()["attempts"]) == ("pending", 0)
    await deliver_webhooks(_ctx(db, settings))
    [row] = await _deliveries(db, hook)
    assert (row["status"], row["attempts"]) == ("delivered", 1)
    assert len(receiver.requests) == 4
    resp = await admin.post(
        f"/v1/webhooks/{hook['id']}/deliveries/{logged['id']}/retry", headers=secret(env)
    )
    assert resp.status_code == 409


async def test_order_and_a_failure_postpones_the_rest(
    admin: Client,
    env: EnvironmentKeys,
    db: asyncpg.Pool,
    settings: Settings,
    receiver: Receiver,
) -> None:
    receiver.statuses = [502]
    await create_manual(admin, env, "beta")
    for u in ("u1", "u2", "u3"):
        await make_user(db, env, u)
    hook = await _hook(admin, env, receiver.url)
    await change_members(admin, env, "beta", ["u1"], add=True)
    await change_members(admin, env, "beta", ["u2"], add=True)
    await change_members(admin, env, "beta", ["u1"], add=False)
    await change_members(admin, env, "beta", ["u3"], add=True)

    await deliver_webhooks(_ctx(db, settings))
    assert len(receiver.requests) == 1
    rows = await _deliveries(db, hook)
    assert [(r["status"], r["attempts"]) for r in rows] == [
        ("pending", 1),
        ("pending", 0),
        ("pending", 0),
        ("pending", 0),
    ]
    # the rest waits with the failed one
    assert await db.fetchval(
        """SELECT bool_and(next_attempt_at > now()) FROM webhook_deliveries
           WHERE webhook_id = $1""",
        int(hook["id"]),
    )

    await _make_due(db, hook)
    await deliver_webhooks(_ctx(db, settings))
    sent = [(json.loads(r.body)["type"], json.loads(r.body)["userId"]) for r in receiver.requests]
    assert sent == [
        ("segment.entered", "u1"),
        ("segment.entered", "u1"),
        ("segment.entered", "u2"),
        ("segment.exited", "u1"),
        ("segment.entered", "u3"),
    ]
    assert [r["status"] for r in await _deliveries(db, hook)] == ["delivered"] * 4


async def test_a_worker_dying_mid_send_leaves_a_lease_that_expires(
    admin: Client,
    env: EnvironmentKeys,
    db: asyncpg.Pool,
    settings: Settings,
    receiver: Receiver,
) -> None:
    await create_manual(admin, env, "beta")
    await make_user(db, env, "u1")
    hook = await _hook(admin, env, receiver.url)
    await change_members(admin, env, "beta", ["u1"], add=True)
    # a worker claims the batch, then is killed before sending anything
    claimed = await db.fetch(webhooks._CLAIM, 1000, webhooks.LEASE_SECONDS)
    assert int(hook["id"]) in {r["webhook_id"] for r in claimed}
    await deliver_webhooks(_ctx(db, settings))
    assert receiver.requests == []  # leased: nobody else sends it meanwhile
    await _make_due(db, hook)  # the lease runs out
    await deliver_webhooks(_ctx(db, settings))
    assert len(receiver.requests) == 1
    [row] = await _deliveries(db, hook)
    assert (row["status"], row["attempts"]) == ("delivered", 1)


async def test_timeouts_and_refused_connections_are_failures(
    admin: Client,
    env: EnvironmentKeys,
    db: asyncpg.Pool,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(webhooks, "TIMEOUT", 0.3)
    hanging = await Receiver(hang=True).start()
    try:
        await create_manual(admin, env, "beta")
        await make_user(db, env, "u1")
        slow = await _hook(admin, env, hanging.url)
        refused = await _hook(admin, env, "http://127.0.0.1:9/")
        await change_members(admin, env, "beta", ["u1"], add=True)
        await deliver_webhooks(_ctx(db, settings))
        [row] = await _deliveries(db, slow)
        assert (row["status"], row["attempts"], row["last_status"]) == ("pending", 1, None)
        assert "timed out" in row["last_error"]
        [row] = await _deliveries(db, refused)
        assert (row["status"], row["attempts"], row["last_status"]) == ("pending", 1, None)
        assert row["last_error"]
        await db.execute(
            "UPDATE webhook_deliveries SET status = 'failed' WHERE env_id = $1", env.id
        )
    finally:
        await hanging.close()


async def test_subscriptions_filter_segments_and_events(
    admin: Client, env: EnvironmentKeys, db: asyncpg.Pool
) -> None:
    for key in ("beta", "other"):
        await create_manual(admin, env, key)
    await make_user(db, env, "u1")
    exits = await _hook(admin, env, "http://127.0.0.1:9/", segments=["beta"], events=["exited"])
    paused = await _hook(admin, env, "http://127.0.0.1:9/", active=False)
    everything = await _hook(admin, env, "http://127.0.0.1:9/")
    await change_members(admin, env, "beta", ["u1"], add=True)
    await change_members(admin, env, "other", ["u1"], add=True)
    await change_members(admin, env, "beta", ["u1"], add=False)
    assert [
        (r["payload"]["type"], r["payload"]["segment"]["key"]) for r in await _deliveries(db, exits)
    ] == [("segment.exited", "beta")]
    assert await _deliveries(db, paused) == []
    assert len(await _deliveries(db, everything)) == 3
    await db.execute(
        "UPDATE webhook_deliveries SET status = 'failed' WHERE env_id = $1", env.id
    )  # keep these unreachable URLs out of other tests' delivery runs


async def test_nothing_sent_to_a_non_public_address_unless_allowed(
    admin: Client,
    env: EnvironmentKeys,
    db: asyncpg.Pool,
    settings: Settings,
    receiver: Receiver,
) -> None:
    """Hooks saved while allowed (or whose name later resolves inside) get nothing once
    SEGMENTS_WEBHOOK_ALLOW_PRIVATE is off: the attempt fails, logged as blocked, and is
    retried with backoff like any failure."""
    blocked = msgspec.structs.replace(settings, webhook_allow_private=False)
    await create_manual(admin, env, "beta")
    await make_user(db, env, "u1")
    literal = await _hook(admin, env, receiver.url)
    named = await _hook(admin, env, f"http://localhost:{receiver.port}/by-name")
    await change_members(admin, env, "beta", ["u1"], add=True)

    await deliver_webhooks(_ctx(db, blocked))
    assert receiver.requests == []
    [row] = await _deliveries(db, literal)
    assert (row["status"], row["attempts"], row["last_status"]) == ("pending", 1, None)
    assert row["last_error"] == "blocked: 127.0.0.1 is a loopback address"
    assert await db.fetchval("SELECT $1 > now()", row["next_attempt_at"])  # backing off
    [row] = await _deliveries(db, named)
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert row["last_error"] in (
        "blocked: localhost resolves to 127.0.0.1, a loopback address",
        "blocked: localhost resolves to ::1, a loopback address",
    )
    resp = await admin.get(f"/v1/webhooks/{literal['id']}/deliveries", headers=secret(env))
    [logged] = resp.json()["deliveries"]
    assert (logged["status"], logged["lastStatus"], logged["lastError"]) == (
        "pending",
        None,
        "blocked: 127.0.0.1 is a loopback address",
    )

    # the same deliveries go out when allowed (the dev runner and these tests allow)
    for hook in (literal, named):
        await _make_due(db, hook)
    await deliver_webhooks(_ctx(db, settings))
    assert sorted(r.path for r in receiver.requests) == ["/by-name", "/hooks/segments"]
    by_name = next(r for r in receiver.requests if r.path == "/by-name")
    assert by_name.headers["host"] == f"localhost:{receiver.port}"  # the name, not the address
    for hook in (literal, named):
        [row] = await _deliveries(db, hook)
        assert (row["status"], row["attempts"]) == ("delivered", 2)


async def test_redirects_are_not_followed(
    admin: Client, env: EnvironmentKeys, db: asyncpg.Pool, settings: Settings, receiver: Receiver
) -> None:
    """A receiver answering 307 to an inside address gets a failed attempt, not a second
    request elsewhere."""

    async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
        await reader.readexactly(int(head.split("content-length:")[1].split("\r\n")[0]))
        writer.write(
            f"HTTP/1.1 307 Moved\r\nlocation: {receiver.url}\r\ncontent-length: 0\r\n\r\n".encode()
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(redirect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await create_manual(admin, env, "beta")
        await make_user(db, env, "u1")
        hook = await _hook(admin, env, f"http://127.0.0.1:{port}/moved")
        await change_members(admin, env, "beta", ["u1"], add=True)
        await deliver_webhooks(_ctx(db, settings))
        [row] = await _deliveries(db, hook)
        assert (row["status"], row["attempts"], row["last_status"]) == ("pending", 1, 307)
        assert receiver.requests == []
        await db.execute(
            "UPDATE webhook_deliveries SET status = 'failed' WHERE env_id = $1", env.id
        )
    finally:
        server.close()
        await server.wait_closed()
