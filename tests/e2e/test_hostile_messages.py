"""Messages the worker could not apply are refused at ingest, and no message can lock an
attribute by claiming to come from the future (issue 11, items 2 and 5)."""

from __future__ import annotations

from typing import Any

import asyncpg

from tests.e2e.conftest import Api, eventually


async def _plan(api: Api, user_id: str) -> object:
    profile = await api.profile(user_id)
    return None if profile is None else profile["attributes"].get("plan")


async def test_a_timestamp_from_the_future_does_not_lock_an_attribute(api: Api) -> None:
    await api.identify("victim", {"plan": "attacker"}, timestamp="9999-12-31T23:59:59Z")
    await eventually(lambda: _is(api, "victim", "attacker"))
    await api.identify("victim", {"plan": "pro"})  # now, without a timestamp
    await eventually(lambda: _is(api, "victim", "pro"))
    # and a client whose clock runs a year ahead is corrected by sentAt, then clamped
    await api.identify(
        "victim",
        {"plan": "enterprise"},
        timestamp="2100-01-01T00:00:00Z",
        sentAt="2099-12-31T00:00:00Z",
    )
    await eventually(lambda: _is(api, "victim", "enterprise"))
    await api.identify("victim", {"plan": "free"})
    await eventually(lambda: _is(api, "victim", "free"))


async def _is(api: Api, user_id: str, plan: str) -> bool:
    return await _plan(api, user_id) == plan


async def test_poison_messages_are_refused_at_ingest_never_dead_lettered(
    api: Api, db: asyncpg.Pool
) -> None:
    poison: list[dict[str, Any]] = [
        {"type": "identify", "userId": "p\u0000"},
        {"type": "identify", "userId": "ok1", "traits": {"a\u0000": 1}},
        {"type": "identify", "userId": "ok1", "traits": {"a": "\u0000"}},
        {"type": "track", "userId": "ok1", "event": "e\u0000"},
        {"type": "identify", "userId": "ok1", "tags": ["k:\u0000"]},
        {"type": "identify", "userId": "ok1", "traits": {"n": 2**64}},
        {
            "type": "identify",
            "userId": "ok1",
            "timestamp": "0001-01-01T00:00:00Z",
            "sentAt": "9999-12-31T00:00:00Z",
        },
    ]
    for message in poison:  # one at a time: a 422 naming the field
        path = f"/v1/{message['type']}"
        resp = await api.ingest.post(path, json={k: v for k, v in message.items() if k != "type"})
        assert resp.status_code == 422, (message, resp.text)
        assert resp.json()["field"], resp.text
    # in a batch: each rejected by index, the clean rows kept and applied
    clean = [{"type": "identify", "userId": f"clean{i}", "traits": {"i": i}} for i in range(3)]
    resp = await api.ingest.post("/v1/batch", json={"batch": [*clean, *poison]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["accepted"] == 3
    assert [r["index"] for r in body["rejected"]] == list(range(3, 3 + len(poison)))
    assert all(r["field"] for r in body["rejected"])
    for i in range(3):
        await eventually(lambda: _has(api, f"clean{i}"))  # noqa: B023 (awaited at once)
    dead = await db.fetchval("SELECT count(*) FROM dead_letters WHERE env_id = $1", api.env.id)
    assert dead == 0


async def _has(api: Api, user_id: str) -> bool:
    return await api.profile(user_id) is not None
