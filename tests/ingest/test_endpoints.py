"""Each Segment endpoint accepts a message and commits a normalised InboxMessage row."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
from litestar.testing import AsyncTestClient

from shared.environments import EnvironmentKeys
from shared.messages import Change
from tests.ingest.conftest import inbox_messages


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_identify_is_normalised_and_committed(
    client: AsyncTestClient[Any], ingest_db: asyncpg.Pool, ienv: EnvironmentKeys
) -> None:
    before = datetime.now(UTC)
    resp = await client.post(
        "/v1/identify",
        json={
            "userId": 42,
            "anonymousId": "anon-1",
            "messageId": "m-identify",
            "traits": {
                "plan": "pro",
                "address": {"city": "Paris", "geo": {"lat": 48.8}},
                "logins": {"add": 2},
                "tags": {"append": ["a", "b"]},
                "old": None,
                "nickname": {"unset": True},
            },
            "segments": ["~", "beta"],
        },
        headers=bearer(ienv.writeKey),
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"success": True}
    [msg] = await inbox_messages(ingest_db, ienv.id)
    assert msg.type == "identify"
    assert msg.userId == "42"  # numeric ids become strings
    assert msg.anonymousId == "anon-1"
    assert msg.messageId == "m-identify"
    assert msg.attributes == {
        "plan": Change("set", "pro"),
        "address.city": Change("set", "Paris"),
        "address.geo.lat": Change("set", 48.8),
        "logins": Change("add", 2),
        "tags": Change("append", ["a", "b"]),
        "old": Change("unset"),
        "nickname": Change("unset"),
    }
    assert msg.segments == ["~", "beta"]
    # no timestamp sent: it is the receive time
    assert msg.timestamp == msg.receivedAt
    assert abs(msg.receivedAt - before.timestamp() * 1000) < 60_000


async def test_clock_skew_is_corrected(
    client: AsyncTestClient[Any], ingest_db: asyncpg.Pool, ienv: EnvironmentKeys
) -> None:
    # the client's clock is a year off, but the event happened 5 s before it was sent
    resp = await client.post(
        "/v1/track",
        json={
            "userId": "u1",
            "event": "Clicked",
            "timestamp": "2001-01-01T00:00:00Z",
            "sentAt": "2001-01-01T00:00:05Z",
        },
        headers=bearer(ienv.writeKey),
    )
    assert resp.status_code == 200, resp.text
    [msg] = await inbox_messages(ingest_db, ienv.id)
    assert msg.timestamp == msg.receivedAt - 5000


async def test_timestamp_without_sent_at_is_kept(
    client: AsyncTestClient[Any], ingest_db: asyncpg.Pool, ienv: EnvironmentKeys
) -> None:
    resp = await client.post(
        "/v1/track",
        json={"userId": "u1", "event": "Old", "timestamp": "2020-01-02T03:04:05.500Z"},
        headers=bearer(ienv.writeKey),
    )
    assert resp.status_code == 200, resp.text
    [msg] = await inbox_messages(ingest_db, ienv.id)
    expected = datetime(2020, 1, 2, 3, 4, 5, 500_000, tzinfo=UTC)
    assert msg.timestamp == int(expected.timestamp() * 1000)


async def test_group_track_alias_page_screen(
    client: AsyncTestClient[Any], ingest_db: asyncpg.Pool, ienv: EnvironmentKeys
) -> None:
    headers = bearer(ienv.writeKey)
    sent = [
        (
            "/v1/group",
            {
                "userId": "u1",
                "groupId": 7,
                "traits": {"name": "Acme", "plan": {"set_once": "trial"}},
                "membership": {"role": "admin"},
            },
        ),
        ("/v1/track", {"userId": "u1", "event": "Signed Up", "properties": {"via": "ad"}}),
        ("/v1/alias", {"userId": "u1", "previousId": "anon-9"}),
        ("/v1/page", {"anonymousId": "anon-2", "name": "Home", "properties": {"path": "/"}}),
        ("/v1/screen", {"userId": "u1", "name": "Settings", "category": "app"}),
    ]
    for path, body in sent:
        resp = await client.post(path, json=body, headers=headers)
        assert resp.status_code == 200, (path, resp.text)
        assert resp.json() == {"success": True}
    group, track, alias, page, screen = await inbox_messages(ingest_db, ienv.id)
    assert group.type == "group"
    assert group.groupId == "7"
    assert group.attributes == {"name": Change("set", "Acme"), "plan": Change("set_once", "trial")}
    assert group.membership == {"role": Change("set", "admin")}
    assert (track.type, track.event, track.properties) == ("track", "Signed Up", {"via": "ad"})
    assert (alias.type, alias.userId, alias.previousId) == ("alias", "u1", "anon-9")
    assert (page.type, page.event, page.anonymousId) == ("page", "Page Viewed", "anon-2")
    assert page.properties == {"path": "/", "name": "Home"}
    assert (screen.event, screen.properties) == (
        "Screen Viewed",
        {"name": "Settings", "category": "app"},
    )


async def test_endpoint_decides_the_type(
    client: AsyncTestClient[Any], ingest_db: asyncpg.Pool, ienv: EnvironmentKeys
) -> None:
    resp = await client.post(
        "/v1/identify",
        json={"type": "track", "userId": "u1", "traits": {"a": 1}},
        headers=bearer(ienv.writeKey),
    )
    assert resp.status_code == 200, resp.text
    [msg] = await inbox_messages(ingest_db, ienv.id)
    assert msg.type == "identify"
    assert msg.attributes == {"a": Change("set", 1)}


async def test_batch_keeps_each_message_type_and_batch_sent_at(
    client: AsyncTestClient[Any], ingest_db: asyncpg.Pool, ienv: EnvironmentKeys
) -> None:
    resp = await client.post(
        "/v1/batch",
        json={
            "sentAt": "2001-01-01T00:00:10Z",
            "context": {"library": {"name": "analytics-python"}},
            "batch": [
                {"type": "identify", "userId": "u1", "traits": {"x": {"y": 1}}},
                {
                    "type": "track",
                    "userId": "u1",
                    "event": "E",
                    "timestamp": "2001-01-01T00:00:00Z",
                },
                {"type": "page", "anonymousId": "a1"},
            ],
        },
        headers=bearer(ienv.writeKey),
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"success": True, "accepted": 3, "rejected": []}
    identify, track, page = await inbox_messages(ingest_db, ienv.id)
    assert identify.attributes == {"x.y": Change("set", 1)}
    assert track.timestamp == track.receivedAt - 10_000  # the batch's sentAt corrects skew
    assert page.event == "Page Viewed"


async def test_gzip_body_is_accepted(
    client: AsyncTestClient[Any], ingest_db: asyncpg.Pool, ienv: EnvironmentKeys
) -> None:
    body = gzip.compress(
        msgspec.json.encode({"batch": [{"type": "track", "userId": "u", "event": "Z"}]})
    )
    resp = await client.post(
        "/v1/batch",
        content=body,
        headers={**bearer(ienv.writeKey), "Content-Encoding": "gzip"},
    )
    assert resp.status_code == 200, resp.text
    [msg] = await inbox_messages(ingest_db, ienv.id)
    assert msg.event == "Z"


async def test_hello_and_health(client: AsyncTestClient[Any]) -> None:
    hello = await client.get("/hello")
    assert hello.status_code == 200
    assert hello.json() == {"hello": "world"}
    health = await client.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
