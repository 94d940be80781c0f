"""A user's recent events, membership history, attribute write times and segment entry times
(the admin API the console's profile reads), through the real services."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.e2e.conftest import Api, eventually


async def test_events_changes_and_times_of_a_user(api: Api) -> None:
    await api.identify("h1", {"plan": "free"}, timestamp="2026-01-02T03:04:05Z")
    for name in ("Signed Up", "Clicked Upgrade"):
        resp = await api.ingest.post("/v1/track", json={"userId": "h1", "event": name})
        assert resp.status_code == 200
    await api.create_segment("pro", {"attribute": "plan", "op": "is", "value": "pro"})
    await api.identify("h1", {"plan": "pro"})
    await eventually(lambda: api.member("h1", "pro"))
    await api.identify("h1", {"plan": "free"})
    await eventually(lambda: _not_member(api))

    events = (await api.admin.get("/v1/users/h1/events")).json()["events"]
    assert [e["name"] for e in events] == ["Clicked Upgrade", "Signed Up"]

    changes = (await api.admin.get("/v1/users/h1/changes", params={"limit": 10})).json()
    pro = [(c["entered"], c["cause"]) for c in changes["changes"] if c["segment"]["key"] == "pro"]
    assert pro == [(False, "message"), (True, "message")]  # newest first
    assert any(c["segment"]["key"] == "all-users" for c in changes["changes"])

    profile = await api.profile("h1")
    assert profile is not None
    written = datetime.fromisoformat(profile["attributeTimes"]["plan"].replace("Z", "+00:00"))
    assert written > datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)  # the later, untimed write
    assert [s["key"] for s in profile["segments"]] == ["all-users"]
    assert profile["segments"][0]["since"] is not None


async def _not_member(api: Api) -> bool:
    return not await api.member("h1", "pro")


async def test_bad_input_is_a_4xx_naming_the_field(api: Api) -> None:
    for path in ("/v1/users/nobody/events", "/v1/users/nobody/changes"):
        resp = await api.admin.get(path)
        assert resp.status_code == 404
        assert resp.json()["field"] == "userId"
    await api.identify("h2", {"plan": "free"})
    await eventually(lambda: api.profile("h2"))
    for limit in ("0", "201"):
        resp = await api.admin.get("/v1/users/h2/events", params={"limit": limit})
        assert resp.status_code == 400
        assert resp.json()["field"] == "limit"
