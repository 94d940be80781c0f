"""The shared test vectors (``sdk-contract/vectors/*.json``): loading them, turning their steps
into ingest messages, creating their segments, and checking their expectations against the
admin and query APIs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.e2e.conftest import Api, eventually

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "sdk-contract" / "vectors"

Vector = dict[str, Any]


def load_vectors() -> list[Vector]:
    """Every vector, in file-name order."""
    return [json.loads(p.read_text()) for p in sorted(VECTORS.glob("*.json"))]


def wire_message(step: dict[str, Any]) -> dict[str, Any]:
    """The HTTP message (Segment-style JSON) of one vector step, as the SDK would send it."""
    call = step["call"]
    msg: dict[str, Any] = {"type": "identify" if call == "identifyAnonymous" else call}
    if "device" in step:
        msg["anonymousId"] = step["device"]
    if "attributes" in step:
        msg["traits"] = step["attributes"]
    for field in (
        "userId",
        "groupId",
        "event",
        "properties",
        "previousId",
        "segments",
        "membership",
        "timestamp",
        "messageId",
    ):
        if field in step:
            msg[field] = step[field]
    return msg


async def create_segments(api: Api, vector: Vector) -> None:
    """Create the vector's segments and wait until the dynamic ones are computed."""
    for body in vector.get("segments", []):
        resp = await api.admin.post("/v1/segments", json=body)
        assert resp.status_code == 201, resp.text

    async def ready() -> bool:
        for body in vector.get("segments", []):
            resp = await api.admin.get(f"/v1/segments/{body['key']}")
            if resp.json().get("status") != "ready":
                return False
        return True

    await eventually(ready)


async def mismatches(api: Api, vector: Vector, shared_env: bool = False) -> list[str]:
    """What differs between the services' state and the vector's ``expect`` (empty: all met).

    ``shared_env``: other vectors ran in the same environment, so only memberships of this
    vector's own segments (and All users) are compared."""
    own = {"all-users"} | {s["key"] for s in vector.get("segments", [])}
    problems: list[str] = []
    for ident, want in vector["expect"].items():
        profile = await api.profile(ident)
        if profile is None:
            problems.append(f"{ident}: no profile")
            continue
        if "userId" in want and profile["userId"] != want["userId"]:
            problems.append(f"{ident}: userId {profile['userId']!r} != {want['userId']!r}")
        if "attributes" in want and profile["attributes"] != want["attributes"]:
            problems.append(f"{ident}: attributes {profile['attributes']} != {want['attributes']}")
        missing = set(want.get("anonymousIds", ())) - set(profile["anonymousIds"])
        if missing:
            problems.append(f"{ident}: anonymous ids {sorted(missing)} not in the profile")
        if "companies" in want:
            got = {
                c["companyId"]: {"attributes": c["attributes"], "membership": c["membership"]}
                for c in profile["companies"]
            }
            if got != want["companies"]:
                problems.append(f"{ident}: companies {got} != {want['companies']}")
        if "segments" in want:
            resp = await api.query.get(f"/v1/users/{ident}/segments")
            assert resp.status_code == 200, resp.text
            keys = {s["key"] for s in resp.json()["segments"]}
            if shared_env:
                keys &= own
            if keys != set(want["segments"]):
                problems.append(f"{ident}: segments {sorted(keys)} != {sorted(want['segments'])}")
    return problems


async def expect_state(api: Api, vector: Vector, shared_env: bool = False) -> None:
    """Wait until the vector's expectations hold; fail naming what still differs."""
    last: list[str] = []

    async def met() -> bool:
        nonlocal last
        last = await mismatches(api, vector, shared_env)
        return not last

    try:
        await eventually(met)
    except AssertionError:
        raise AssertionError(f"vector {vector['name']}: " + "; ".join(last)) from None
