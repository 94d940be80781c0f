"""The shared test vectors, sent over HTTP to the real ingest: each must leave the profiles and
memberships its ``expect`` describes (the JavaScript SDK runs the same vectors in
``test_js_sdk.py``)."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Api
from tests.sdk.vectors import VECTORS as VECTOR_DIR
from tests.sdk.vectors import Vector, create_segments, expect_state, load_vectors, wire_message

VECTORS = load_vectors()


def test_each_vector_file_is_named_after_its_vector() -> None:
    assert sorted(p.stem for p in VECTOR_DIR.glob("*.json")) == sorted(v["name"] for v in VECTORS)


def test_there_are_vectors_for_every_call() -> None:
    calls = {step["call"] for v in VECTORS for step in v["steps"]}
    assert calls == {"identify", "identifyAnonymous", "group", "track", "alias"}


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
async def test_vector_over_http(api: Api, vector: Vector) -> None:
    await create_segments(api, vector)
    for step in vector["steps"]:
        msg = wire_message(step)
        resp = await api.ingest.post(f"/v1/{msg.pop('type')}", json=msg)
        assert resp.status_code == 200, resp.text
    await expect_state(api, vector)


async def test_vectors_as_one_batch(api: Api) -> None:
    """Every vector's messages in one /v1/batch request: the worker orders them by timestamp,
    so sequences whose order matters carry increasing timestamps here."""
    batch = []
    for vector in VECTORS:
        await create_segments(api, vector)
    for vector in VECTORS:
        for i, step in enumerate(vector["steps"]):
            msg = wire_message(step)
            msg.setdefault("timestamp", f"2030-01-01T00:00:{i:02d}.000Z")
            batch.append(msg)
    resp = await api.ingest.post("/v1/batch", json={"batch": batch})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"success": True, "accepted": len(batch), "rejected": []}
    for vector in VECTORS:
        await expect_state(api, vector, shared_env=True)
