"""Nobody takes over another user's answers with the public write key (issue 11, item 1):
user ids and anonymous ids are separate namespaces, Redis keys included."""

from __future__ import annotations

from tests.e2e.conftest import Api, eventually


async def test_identify_with_another_users_id_as_anonymous_id_changes_nothing_of_theirs(
    api: Api,
) -> None:
    await api.create_segment("pro", {"attribute": "plan", "op": "is", "value": "pro"})
    await api.identify("victim", {"plan": "free"})
    await eventually(lambda: _profile_has(api, "victim"))
    # the attack: the attacker's identify names the victim's userId as its anonymous id, then
    # moves its own membership version ahead of the victim's
    await api.identify("attacker", {"plan": "pro"}, anonymousId="victim")
    for i in range(3):
        await api.identify("attacker", {"plan": "pro", "n": i})
    await eventually(lambda: api.member("attacker", "pro"))
    assert not await api.member("victim", "pro")
    resp = await api.query.get("/v1/users/victim/segments")
    assert [s["key"] for s in resp.json()["segments"]] == ["all-users"]
    body = {"userId": "victim", "segments": ["pro"]}
    assert (await api.query.post("/v1/check", json=body)).json()["results"] == {"pro": False}
    attacker = await api.profile("attacker")
    assert attacker is not None and attacker["anonymousIds"] == []
    victim = await api.profile("victim")
    assert victim is not None and victim["attributes"]["plan"] == "free"
    # the victim's own later changes still land
    await api.identify("victim", {"plan": "pro"})
    await eventually(lambda: api.member("victim", "pro"))
    # erasing the attacker leaves the victim whole
    assert (await api.admin.delete("/v1/users/attacker")).status_code == 204
    assert await api.member("victim", "pro")
    assert await api.profile("victim") is not None


async def test_anonymous_ids_are_answered_in_their_own_namespace(api: Api) -> None:
    await api.create_segment("fr", {"attribute": "lang", "op": "is", "value": "fr"})
    resp = await api.ingest.post(
        "/v1/identify", json={"anonymousId": "visitor-1", "traits": {"lang": "fr"}}
    )
    assert resp.status_code == 200, resp.text

    async def anonymous_member() -> bool:
        resp = await api.query.get("/v1/anonymous/visitor-1/segments/fr")
        return bool(resp.json()["member"])

    await eventually(anonymous_member)
    assert not await api.member("visitor-1", "fr")  # no user has that userId
    await api.identify("someone", {}, anonymousId="visitor-1")  # the visitor signs up
    await eventually(lambda: api.member("someone", "fr"))
    assert await anonymous_member()


async def _profile_has(api: Api, user_id: str) -> bool:
    return await api.profile(user_id) is not None
