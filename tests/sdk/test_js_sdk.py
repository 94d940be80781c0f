"""The JavaScript SDK against the real services: ``sdk-contract/js/test-integration/run.mjs``
makes SDK calls in Node (where CORS does not apply), and these tests check what they did to
profiles and memberships through the admin and query APIs.

Node.js is required, not optional: without it these tests fail, they are never skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from services.embedded import free_port
from tests.conftest import ServiceStack
from tests.e2e.conftest import Api, eventually
from tests.sdk.vectors import VECTORS, Vector, create_segments, expect_state, load_vectors

JS = Path(__file__).resolve().parents[2] / "sdk-contract" / "js"
RUN = JS / "test-integration" / "run.mjs"
ALL_VECTORS = load_vectors()
PRO = {
    "name": "Pro users",
    "key": "pro-users",
    "kind": "dynamic",
    "conditions": {"attribute": "plan", "op": "is", "value": "pro"},
}


def node_binary() -> str:
    """The ``node`` executable (>= 18); fails the test with what to install when missing."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "Node.js >= 18 is required to test the JavaScript SDK: install it (`node` on PATH)"
        )
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major = int(version.stdout.strip().lstrip("v").split(".")[0])
    if major < 18:
        pytest.fail(f"Node.js >= 18 is required to test the JavaScript SDK, found {version.stdout}")
    return node


class NodeRun:
    """``node run.mjs`` with a scenario, its JSON-lines output read as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, api: Api, scenario: str, **env: str) -> NodeRun:
        variables = {
            **os.environ,
            "INGEST_URL": api.stack.url("ingest"),
            "QUERY_URL": api.stack.url("query"),
            "WRITE_KEY": api.env.writeKey,
            "SCENARIO": scenario,
            **env,
        }
        proc = await asyncio.create_subprocess_exec(
            node_binary(),
            str(RUN),
            cwd=JS,
            env=variables,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def next_line(self, within: float = 60) -> dict[str, Any]:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), within)
        if not raw:
            await self.proc.wait()
            assert self.proc.stderr is not None
            err = (await self.proc.stderr.read()).decode()
            raise AssertionError(f"run.mjs ended (exit {self.proc.returncode}) early:\n{err}")
        line: dict[str, Any] = json.loads(raw)
        self.lines.append(line)
        return line

    async def result(self, within: float = 120) -> dict[str, Any]:
        """The final line (``ok``), once the process exited 0."""
        while True:
            line = await self.next_line(within)
            if "ok" in line:
                break
        code = await asyncio.wait_for(self.proc.wait(), within)
        assert code == 0, f"run.mjs exited {code}: {self.lines}"
        return line


async def run_node(api: Api, scenario: str, **env: str) -> dict[str, Any]:
    return await (await NodeRun.start(api, scenario, **env)).result()


async def counter_is(api: Api, user_id: str, value: int) -> dict[str, Any] | None:
    profile = await api.profile(user_id)
    if profile is not None and profile["attributes"].get("counter") == value:
        return profile
    return None


def test_node_is_there() -> None:
    assert node_binary()


@pytest.mark.parametrize("vector", ALL_VECTORS, ids=[v["name"] for v in ALL_VECTORS])
async def test_vector_through_the_sdk(api: Api, vector: Vector) -> None:
    await create_segments(api, vector)
    path = VECTORS / f"{vector['name']}.json"
    result = await run_node(api, "vector", VECTOR=str(path))
    assert result["steps"] == len(vector["steps"])
    await expect_state(api, vector)


async def test_many_calls_are_batched_and_each_applies_once(api: Api) -> None:
    await create_segments(api, {"segments": [PRO]})
    count = 250
    result = await run_node(
        api, "batched", USER_ID="u-batched", COUNT=str(count), SEGMENT="pro-users"
    )
    # 252 messages in batches of at most 100: at least three requests, far fewer than messages
    assert 3 <= result["requests"] < count
    assert result["member"] is True
    assert "pro-users" in result["segments"]
    profile = await eventually(lambda: counter_is(api, "u-batched", count))
    assert profile["attributes"]["plan"] == "pro"


async def test_retries_until_the_ingest_is_back(api: Api, stack: ServiceStack) -> None:
    count = 20
    stack.kill("ingest")
    try:
        run = await NodeRun.start(api, "retry", USER_ID="u-retry", COUNT=str(count))
        assert (await run.next_line())["event"] == "failing"  # the SDK found ingest down
    finally:
        await asyncio.to_thread(stack.start, "ingest")
    result = await run.result()
    assert result["failures"] >= 1
    assert result["attempts"] > result["failures"]
    profile = await eventually(lambda: counter_is(api, "u-retry", count))
    assert profile["attributes"]["plan"] == "pro"
    await asyncio.sleep(0.5)  # nothing applied twice: the counter stays put
    assert await counter_is(api, "u-retry", count)


async def test_a_reloaded_page_sends_what_the_last_one_left_once(api: Api, tmp_path: Path) -> None:
    storage = tmp_path / "localStorage.json"
    count = 15
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    left = await run_node(
        api,
        "reload",
        PHASE="leave",
        INGEST_URL=dead,
        STORAGE_FILE=str(storage),
        USER_ID="u-reload",
        COUNT=str(count),
    )
    assert left["left"]["failures"] >= 1
    saved = storage.read_text()
    queued = [m for k, v in json.loads(saved).items() if ":q:" in k for m in json.loads(v)]
    assert len(queued) == count + 1
    assert await api.profile("u-reload") is None, "nothing was delivered by the first page"

    nxt = await run_node(api, "reload", PHASE="deliver", STORAGE_FILE=str(storage))
    assert nxt["user"]["userId"] == "u-reload"
    await eventually(lambda: counter_is(api, "u-reload", count))
    assert not [k for k in json.loads(storage.read_text()) if ":q:" in k], "queue emptied"

    # the acknowledgement was lost (say the tab closed mid-request): the same queue comes back
    storage.write_text(saved)
    await run_node(api, "reload", PHASE="deliver", STORAGE_FILE=str(storage))
    await api.identify("u-reload", {"marker": True})

    async def marked() -> dict[str, Any] | None:
        profile = await api.profile("u-reload")
        return profile if profile and profile["attributes"].get("marker") else None

    profile = await eventually(marked)
    assert profile["attributes"]["counter"] == count, "resent messageIds applied once"


async def test_the_loader_queue_is_replayed_against_the_services(api: Api) -> None:
    await create_segments(api, {"segments": [PRO]})
    result = await run_node(api, "loader", USER_ID="u-loader", SEGMENT="pro-users")
    assert result["queued"] == 5
    assert result["scripts"] == 1
    assert result["replaced"] is True
    assert result["member"] is True
    profile = await api.profile("u-loader")
    assert profile is not None
    assert profile["attributes"] == {"plan": "pro", "via": "loader", "visits": 1}
