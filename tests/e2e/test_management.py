"""Management end to end: key rotation with a grace period during which both keys work, and
webhook resync (every current member announced with cause "sync")."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import httpx

from shared.environments import ensure_environment
from tests.admin.conftest import Receiver
from tests.e2e.conftest import Api, eventually


async def test_rotating_the_write_key_keeps_the_old_one_for_the_grace_period(api: Api) -> None:
    resp = await api.admin.post("/v1/keys/write/rotate", json={"graceSeconds": 3600})
    assert resp.status_code == 200, resp.text
    rotated = resp.json()
    assert rotated["kind"] == "write" and rotated["key"] != api.env.writeKey
    assert rotated["previousKeyValidUntil"] is not None
    keys = (await api.admin.get("/v1/keys")).json()
    assert keys["writeKey"] == rotated["key"]
    assert [k["kind"] for k in keys["retiring"]] == ["write"]
    async with httpx.AsyncClient(base_url=api.stack.url("ingest"), timeout=30) as ingest:
        for key, user in ((api.env.writeKey, "old-key"), (rotated["key"], "new-key")):
            resp = await ingest.post("/v1/identify", auth=(key, ""), json={"userId": user})
            assert resp.status_code == 200, resp.text
    await eventually(lambda: api.profile("new-key"))
    assert await api.profile("old-key") is not None

    # a second rotation with no grace revokes the key at once (and the one before it)
    resp = await api.admin.post("/v1/keys/write/rotate", json={"graceSeconds": 0})
    newest = resp.json()["key"]
    assert resp.json()["previousKeyValidUntil"] is None
    assert (await api.admin.get("/v1/keys")).json()["retiring"] == []
    async with httpx.AsyncClient(base_url=api.stack.url("ingest"), timeout=30) as ingest:

        async def refused(key: str) -> bool:
            resp = await ingest.post("/v1/identify", auth=(key, ""), json={"userId": "x"})
            return resp.status_code == 401

        await eventually(lambda: refused(rotated["key"]))
        await eventually(lambda: refused(api.env.writeKey))  # cached for a moment
        resp = await ingest.post("/v1/identify", auth=(newest, ""), json={"userId": "y"})
        assert resp.status_code == 200


async def test_rotating_the_secret_key_and_what_a_retiring_key_may_not_do(api: Api) -> None:
    bad = await api.admin.post("/v1/keys/secret/rotate", json={"graceSeconds": -1})
    assert bad.status_code == 422 and bad.json()["field"] == "graceSeconds"
    bad = await api.admin.post("/v1/keys/public/rotate", json={})
    assert bad.status_code == 404
    resp = await api.admin.post("/v1/keys/secret/rotate", json={})
    assert resp.status_code == 200, resp.text
    new_secret = resp.json()["key"]
    assert new_secret.startswith("sk_")
    old = api.admin  # still the old secret key: works during the grace period
    assert (await old.get("/v1/segments")).status_code == 200
    refused = await old.post("/v1/keys/write/rotate", json={})
    assert refused.status_code == 403 and refused.json()["field"] == "authorization"
    async with httpx.AsyncClient(
        base_url=api.stack.url("admin"), headers={"Authorization": f"Bearer {new_secret}"}
    ) as admin:
        keys = (await admin.get("/v1/keys")).json()
        assert [k["kind"] for k in keys["retiring"]] == ["secret"]
        # the write key is no secret key, and can neither read nor rotate keys
        write = {"Authorization": f"Bearer {keys['writeKey']}"}
        assert (await admin.get("/v1/keys", headers=write)).status_code == 403
        assert (await admin.post("/v1/keys/secret/rotate", headers=write)).status_code == 403


async def test_webhook_resync_announces_every_current_member(api: Api) -> None:
    resp = await api.admin.post("/v1/segments", json={"name": "Course", "kind": "manual"})
    assert resp.status_code == 201
    resp = await api.admin.post("/v1/segments/course/members", json={"userIds": ["s1", "s2", "s3"]})
    assert resp.json()["added"] == 3
    receiver = await Receiver().start()
    try:
        resp = await api.admin.post(
            "/v1/webhooks", json={"url": receiver.url, "segments": ["course"], "resync": True}
        )
        assert resp.status_code == 201, resp.text
        hook = resp.json()

        def synced() -> list[dict[str, object]]:
            bodies = [json.loads(r.body) for r in receiver.requests]
            return [b for b in bodies if b["cause"] == "sync"]

        async def got(n: int) -> bool:
            return len(synced()) >= n

        await eventually(lambda: got(3), within=60)
        assert sorted(str(b["userId"]) for b in synced()) == ["s1", "s2", "s3"]
        assert {b["type"] for b in synced()} == {"segment.entered"}
        resp = await api.admin.post(f"/v1/webhooks/{hook['id']}/resync")
        assert resp.status_code == 202 and resp.json() == {"queued": 3}
        await eventually(lambda: got(6), within=60)
        await asyncio.sleep(0.5)
        assert len(synced()) == 6
        # the change feed lists real entries only
        changes = (await api.admin.get("/v1/segments/course/changes")).json()["changes"]
        assert {c["cause"] for c in changes} == {"admin"}
        assert (await api.admin.post("/v1/webhooks/999999/resync")).status_code == 404
    finally:
        await receiver.close()


async def test_exports_resync_and_keys_refuse_another_environments_keys(
    api: Api, db: asyncpg.Pool
) -> None:
    resp = await api.admin.post("/v1/segments", json={"name": "Mine", "kind": "manual"})
    assert resp.status_code == 201
    await api.admin.post("/v1/segments/mine/members", json={"userIds": ["m-1"]})
    receiver = await Receiver().start()
    try:
        hook = (await api.admin.post("/v1/webhooks", json={"url": receiver.url})).json()
        async with db.acquire() as conn:
            other = await ensure_environment(conn, f"other-mgmt-{api.env.id}")
        theirs = {"Authorization": f"Bearer {other.secretKey}"}
        resp = await api.admin.get(
            "/v1/segments/mine/members", params={"format": "csv"}, headers=theirs
        )
        assert resp.status_code == 404
        resp = await api.admin.get("/v1/users", params={"format": "csv"}, headers=theirs)
        assert resp.status_code == 200 and resp.text.strip() == "userId"
        resp = await api.admin.post(f"/v1/webhooks/{hook['id']}/resync", headers=theirs)
        assert resp.status_code == 404
        keys = (await api.admin.get("/v1/keys", headers=theirs)).json()
        assert keys["writeKey"] == other.writeKey
        write = {"Authorization": f"Bearer {api.env.writeKey}"}
        for method, path in [
            ("GET", "/v1/users?format=csv"),
            ("GET", "/v1/segments/mine/members?format=csv"),
            ("POST", f"/v1/webhooks/{hook['id']}/resync"),
        ]:
            assert (await api.admin.request(method, path, headers=write)).status_code == 403
    finally:
        await receiver.close()
