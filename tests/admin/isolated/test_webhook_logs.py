"""A webhook URL may carry credentials (user info, a token in the query): the worker's log
names the scheme and host only, with the worker's own logging configuration."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from services.worker.webhooks import deliver_webhooks, origin
from shared.environments import EnvironmentKeys
from shared.logs import configure_logging
from shared.settings import Settings
from tests.admin.conftest import Receiver, change_members, create_manual, make_user, secret

Client = AsyncTestClient[Any]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = await Receiver().start()
    yield server
    await server.close()


def test_origin_keeps_scheme_host_and_port_only() -> None:
    assert origin("https://user:pw@hooks.example.com/a/b?token=x") == "https://hooks.example.com"
    assert origin("http://u:p@127.0.0.1:8080/x#frag") == "http://127.0.0.1:8080"
    assert origin("http://[::1]:9000/x?k=v") == "http://[::1]:9000"
    assert origin("not a url") == "<invalid url>"


async def test_delivery_logs_never_show_credentials_of_the_url(
    quiet_admin: Client,
    env: EnvironmentKeys,
    db: asyncpg.Pool,
    settings: Settings,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("httpx", "httpcore", "arq"):  # configure_logging changes them: restore after
        monkeypatch.setattr(logging.getLogger(name), "level", logging.getLogger(name).level)
    configure_logging(settings, "worker")
    caplog.set_level(logging.INFO)
    url = receiver.url.replace("http://", "http://hookuser:s3cretpass@") + "?token=t0ps3cret"
    receiver.statuses = [500]
    await create_manual(quiet_admin, env, "vip")
    await make_user(db, env, "u1")
    resp = await quiet_admin.post("/v1/webhooks", json={"url": url}, headers=secret(env))
    assert resp.status_code == 201, resp.text
    await change_members(quiet_admin, env, "vip", ["u1"], add=True)
    ctx = {"pool": db, "settings": settings}
    await deliver_webhooks(ctx)  # fails (500): logged
    await db.execute(
        "UPDATE webhook_deliveries SET next_attempt_at = now() WHERE env_id = $1", env.id
    )
    await deliver_webhooks(ctx)  # delivered
    assert len(receiver.requests) == 2
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "failed (attempt 1)" in text and origin(receiver.url) in text
    for leak in ("s3cretpass", "t0ps3cret", "hookuser"):
        assert leak not in text
