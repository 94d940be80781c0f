"""Identity verification managed over the admin API, tokens without exp bounded by their age,
and the secret rotated with a grace period (issue 11, item 8)."""

from __future__ import annotations

import time
from typing import Any

import jwt

from tests.e2e.conftest import Api, eventually

DAY = 24 * 3600


def token(secret: str, sub: str, **claims: Any) -> str:
    return jwt.encode({"sub": sub, **claims}, secret, algorithm="HS256")


async def _identify_status(api: Api, user_id: str, identity_token: str | None) -> int:
    body: dict[str, Any] = {"userId": user_id, "traits": {"n": 1}}
    if identity_token is not None:
        body["identityToken"] = identity_token
    return (await api.ingest.post("/v1/identify", json=body)).status_code


async def test_tokens_age_out_and_secrets_rotate_with_a_grace_period(api: Api) -> None:
    resp = await api.admin.get("/v1/identity-verification")
    assert resp.json()["enabled"] is False and resp.json()["secretSet"] is False
    resp = await api.admin.put("/v1/identity-verification", json={"enabled": True})
    assert resp.status_code == 200, resp.text
    first = resp.json()["secret"]
    assert first and resp.json()["settings"]["enabled"] is True
    now = int(time.time())

    async def refused_without_token() -> bool:
        return await _identify_status(api, "ada", None) == 401

    await eventually(refused_without_token)
    assert await _identify_status(api, "ada", token(first, "ada", iat=now)) == 200
    # no exp: refused once iat is older than the maximum age (a day by default)
    assert await _identify_status(api, "ada", token(first, "ada", iat=now - DAY - 120)) == 401
    assert await _identify_status(api, "ada", token(first, "ada")) == 401  # neither iat nor exp
    # an exp is honoured as given
    old_but_valid = token(first, "ada", iat=now - 2 * DAY, exp=now + 600)
    assert await _identify_status(api, "ada", old_but_valid) == 200
    resp = await api.query.get(
        "/v1/users/ada/segments",
        headers={"X-Identity-Token": token(first, "ada", iat=now - 2 * DAY)},
    )
    assert resp.status_code == 401 and "older" in resp.json()["error"]

    # rotation: the new secret works, the previous one for the grace period (default a day)
    resp = await api.admin.post("/v1/identity-verification/rotate-secret")
    assert resp.status_code == 200, resp.text
    second = resp.json()["secret"]
    assert second != first and resp.json()["settings"]["previousSecretValidUntil"]

    async def new_secret_works() -> bool:
        return await _identify_status(api, "ada", token(second, "ada", iat=now)) == 200

    await eventually(new_secret_works)
    assert await _identify_status(api, "ada", token(first, "ada", iat=now)) == 200
    # rotating with no grace ends the previous secret at once
    resp = await api.admin.post("/v1/identity-verification/rotate-secret", json={"graceSeconds": 0})
    third = resp.json()["secret"]
    assert resp.json()["settings"]["previousSecretValidUntil"] is None

    async def second_refused() -> bool:
        return await _identify_status(api, "ada", token(second, "ada", iat=now)) == 401

    await eventually(second_refused)
    assert await _identify_status(api, "ada", token(third, "ada", iat=now)) == 200
    resp = await api.admin.post(
        "/v1/identity-verification/rotate-secret", json={"graceSeconds": -1}
    )
    assert (resp.status_code, resp.json()["field"]) == (422, "graceSeconds")

    # off again: the write key alone is enough; turning it on again keeps the secret
    resp = await api.admin.put("/v1/identity-verification", json={"enabled": False})
    assert resp.json()["secret"] is None

    async def accepted_without_token() -> bool:
        return await _identify_status(api, "ada", None) == 200

    await eventually(accepted_without_token)
    resp = await api.admin.put("/v1/identity-verification", json={"enabled": True})
    assert resp.json()["secret"] is None and resp.json()["settings"]["secretSet"] is True
    resp = await api.admin.put("/v1/identity-verification", json={"enabled": "yes"})
    assert (resp.status_code, resp.json()["field"]) == (422, "enabled")
