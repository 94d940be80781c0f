"""Issue 4 end to end, over HTTP against the four real services: manual members, tags and
their auto-segment, erase, and webhooks signed, retried and never repeated across a worker
restart (the LMS keeping its course groups in sync)."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
from collections import Counter
from typing import Any

from tests.admin.conftest import Receiver
from tests.conftest import ServiceStack
from tests.e2e.conftest import Api, eventually


async def test_manual_members_tags_and_erase(api: Api) -> None:
    await api.identify("ann", {"email": "Ann@LMS.io"})
    await api.identify("bob", {})
    await eventually(lambda: api.profile("bob"))
    resp = await api.admin.post(
        "/v1/segments", json={"name": "Course 101", "key": "course-101", "kind": "manual"}
    )
    assert resp.status_code == 201, resp.text
    await api.create_segment("in-a-course", {"segment": "course-101"})

    resp = await api.admin.post(
        "/v1/segments/course-101/members", json={"userIds": ["bob"], "emails": ["ann@lms.io"]}
    )
    assert resp.json()["added"] == 2
    # answered after the commit and the Redis write: visible at once
    assert await api.member("ann", "course-101") and await api.member("bob", "course-101")
    await eventually(lambda: api.member("ann", "in-a-course"))

    resp = await api.admin.post(
        "/v1/tags", json={"key": "Department", "value": "Sales", "autoSegment": True}
    )
    assert resp.status_code == 201, resp.text
    tag = resp.json()
    resp = await api.admin.post(f"/v1/tags/{tag['id']}/users", json={"userIds": ["ann"]})
    assert resp.json()["attached"] == 1
    await eventually(lambda: api.member("ann", tag["segmentKey"]))
    assert not await api.member("bob", tag["segmentKey"])

    resp = await api.admin.request(
        "DELETE", "/v1/segments/course-101/members", json={"userIds": ["ann"]}
    )
    assert resp.json()["removed"] == 1
    assert not await api.member("ann", "course-101")

    async def left_dependent() -> bool:
        return not await api.member("ann", "in-a-course")

    await eventually(left_dependent)

    assert (await api.admin.delete("/v1/users/ann")).status_code == 204
    resp = await api.query.get("/v1/users/ann/segments")
    assert resp.json()["segments"] == []
    assert await api.profile("ann") is None
    assert await api.member("bob", "course-101")


async def test_webhooks_signed_retried_and_not_repeated_after_a_restart(
    api: Api, stack: ServiceStack
) -> None:
    receiver = await Receiver(statuses=[500]).start()
    try:
        await api.create_segment("pro", {"attribute": "plan", "op": "is", "value": "pro"})
        resp = await api.admin.post("/v1/webhooks", json={"url": receiver.url, "segments": ["pro"]})
        assert resp.status_code == 201, resp.text
        hook = resp.json()

        async def delivered(n: int) -> list[dict[str, Any]] | None:
            resp = await api.admin.get(
                f"/v1/webhooks/{hook['id']}/deliveries", params={"status": "delivered"}
            )
            found: list[dict[str, Any]] = resp.json()["deliveries"]
            return found if len(found) >= n else None

        await api.identify("w1", {"plan": "pro"})
        [first] = await eventually(lambda: delivered(1), within=30)
        assert first["attempts"] == 2  # the receiver failed the first one
        assert [r.status for r in receiver.requests] == [500, 200]

        stack.kill("worker", signal.SIGKILL)
        stack.start("worker")
        await api.identify("w1", {"plan": "free"})
        await eventually(lambda: delivered(2), within=30)

        bodies = [json.loads(r.body) for r in receiver.requests if r.status == 200]
        assert [(b["type"], b["userId"], b["segment"]["key"]) for b in bodies] == [
            ("segment.entered", "w1", "pro"),
            ("segment.exited", "w1", "pro"),
        ]
        ok = Counter(r.headers["x-segments-delivery"] for r in receiver.requests if r.status == 200)
        assert set(ok.values()) == {1}  # no delivery answered 2xx was sent again
        for req in receiver.requests:
            timestamp = req.headers["x-segments-timestamp"]
            mac = hmac.new(
                hook["secret"].encode(), f"{timestamp}.".encode() + req.body, hashlib.sha256
            )
            assert req.headers["x-segments-signature"] == "sha256=" + mac.hexdigest()
    finally:
        await receiver.close()


async def test_a_worker_blocking_private_addresses_sends_them_nothing(
    api: Api, stack: ServiceStack
) -> None:
    """The worker process reads SEGMENTS_WEBHOOK_ALLOW_PRIVATE (off here, as in production):
    a receiver on 127.0.0.1 gets nothing and the delivery log says why."""
    receiver = await Receiver().start()
    stack.kill("worker", signal.SIGTERM)
    stack.start("worker", webhook_allow_private=False)
    hook: dict[str, Any] = {}
    try:
        await api.create_segment("vip", {"attribute": "plan", "op": "is", "value": "vip"})
        resp = await api.admin.post("/v1/webhooks", json={"url": receiver.url, "segments": ["vip"]})
        assert resp.status_code == 201, resp.text  # this admin allows, as the tests' settings do
        hook = resp.json()
        await api.identify("b1", {"plan": "vip"})

        async def attempted() -> dict[str, Any] | None:
            resp = await api.admin.get(f"/v1/webhooks/{hook['id']}/deliveries")
            found: list[dict[str, Any]] = resp.json()["deliveries"]
            return found[0] if found and found[0]["attempts"] else None

        logged = await eventually(attempted, within=30)
        assert (logged["status"], logged["lastStatus"], logged["lastError"]) == (
            "pending",
            None,
            "blocked: 127.0.0.1 is a loopback address",
        )
        assert receiver.requests == []
    finally:
        if hook:  # its deliveries go with it: the normal worker must not retry them
            await api.admin.delete(f"/v1/webhooks/{hook['id']}")
        stack.kill("worker", signal.SIGTERM)
        stack.start("worker")
        await receiver.close()
