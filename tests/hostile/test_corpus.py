"""Every case of the hostile-input corpus (``corpus.json``, issue 11) against the real running
services: a 4xx in the usual error shape, never a 5xx, never a hang, and nothing changed in
the environment's data afterwards."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from tests.e2e.conftest import Api, eventually

CORPUS = json.loads((Path(__file__).parent / "corpus.json").read_text())["cases"]
_TOKEN = re.compile(r"<<(DEEP_ARRAY|DEEP_OBJECT):(\d+)>>|<<REPEAT:(.*?):(\d+)>>", re.DOTALL)


def expand(raw: str) -> bytes:
    """A raw body with its <<...>> placeholders expanded."""

    def one(m: re.Match[str]) -> str:
        if m[1] == "DEEP_ARRAY":
            n = int(m[2])
            return "[" * n + "]" * n
        if m[1] == "DEEP_OBJECT":
            n = int(m[2])
            return '{"a":' * n + "1" + "}" * n
        return m[3] * int(m[4])

    return _TOKEN.sub(one, raw).encode()


def _headers(api: Api, case: dict[str, Any]) -> dict[str, str]:
    keys = {"write": api.env.writeKey, "secret": api.env.secretKey, "bogus": "wk_no_such_key_0"}
    headers = {"Content-Type": "application/json", **case.get("headers", {})}
    if case["auth"] in keys:
        headers["Authorization"] = f"Bearer {keys[case['auth']]}"
    elif case["auth"] == "basic-garbage":
        headers["Authorization"] = "Basic " + base64.b64encode(b"\xff\xfe:").decode()[:-1] + "!"
    return headers


async def snapshot(db: asyncpg.Pool, env_id: int) -> dict[str, str]:
    """A digest of every row of every table holding the environment's data."""
    tables = [
        r["table_name"]
        for r in await db.fetch(
            """SELECT table_name FROM information_schema.columns
               WHERE table_schema = current_schema() AND column_name = 'env_id'
               ORDER BY 1"""
        )
    ]
    out: dict[str, str] = {}
    for table in tables:
        out[table] = await db.fetchval(
            f"""SELECT count(*) || ':'
                       || coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '')
                FROM "{table}" t WHERE env_id = $1""",
            env_id,
        )
    out["environment"] = await db.fetchval(
        "SELECT md5(e::text) FROM environments e WHERE id = $1", env_id
    )
    return out


async def test_hostile_corpus(api: Api, db: asyncpg.Pool) -> None:
    assert len(CORPUS) >= 200
    # some data to leave alone: a user in a manual segment, a dynamic segment
    await api.identify("resident", {"plan": "pro"})
    await api.create_segment("pros", {"attribute": "plan", "op": "is", "value": "pro"})
    await eventually(lambda: api.member("resident", "pros"))
    before = await snapshot(db, api.env.id)

    # clients of their own: the Api's carry the environment's key by default
    clients = {
        service: httpx.AsyncClient(base_url=api.stack.url(service), timeout=15.0)
        for service in ("ingest", "query", "admin")
    }
    gate = asyncio.Semaphore(8)

    async def send(case: dict[str, Any]) -> str | None:
        client = clients[case["service"]]
        content = (
            expand(case["raw"])
            if "raw" in case
            else json.dumps(case["json"]).encode()
            if "json" in case
            else None
        )
        request = client.build_request(
            case["method"], case["path"], content=content, headers=_headers(api, case)
        )
        async with gate:
            try:
                resp = await client.send(request)
            except httpx.TimeoutException:
                return f"hung: {case['why']}"
        where = f"{case['service']} {case['method']} {case['path'][:60]} ({case['why']})"
        if not 400 <= resp.status_code < 500:
            return f"{resp.status_code} for {where}: {resp.text[:200]}"
        try:
            body = resp.json()
        except ValueError:
            return f"{resp.status_code} not JSON for {where}: {resp.text[:100]}"
        if not (isinstance(body.get("error"), str) and "field" in body):
            return f"{resp.status_code} not the error shape for {where}: {body}"
        return None

    try:
        problems = [p for p in await asyncio.gather(*(send(c) for c in CORPUS)) if p]
    finally:
        for client in clients.values():
            await client.aclose()
    assert problems == [], "\n".join(problems)
    await asyncio.sleep(1.0)  # anything wrongly accepted would be applied by now
    assert await snapshot(db, api.env.id) == before
