"""Exact requests of real client libraries (``sdk-contract/vectors/clients/*.json``), replayed
byte for byte (gzip included) against the real services: each must leave the profile its
library's user expects (issue 11, item 9: RudderStack's Python SDK sends identify traits only
in ``context.traits``)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Api
from tests.sdk.vectors import VECTORS, expect_state

CLIENTS = sorted((VECTORS / "clients").glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    vector: dict[str, Any] = json.loads(path.read_text())
    assert vector["name"] == path.stem
    return vector


@pytest.mark.parametrize("path", CLIENTS, ids=[p.stem for p in CLIENTS])
async def test_client_library_request(api: Api, path: Path) -> None:
    vector = _load(path)
    request = vector["request"]
    headers = dict(request["headers"])
    body = json.dumps(request["body"]).encode()
    if headers.get("Content-Encoding") == "gzip":
        body = gzip.compress(body)
    resp = await api.ingest.request(
        request["method"], request["path"], content=body, headers=headers
    )
    assert resp.status_code == vector["status"], resp.text
    assert resp.json().get("rejected", []) == []
    await expect_state(api, vector)


def test_there_is_a_rudderstack_python_request() -> None:
    assert "rudder-sdk-python-2.1.9" in [p.stem for p in CLIENTS]
