"""A worker killed (SIGKILL) in the middle of a large import: another worker takes the import
over when its lease lapses, and every row applies exactly once."""

from __future__ import annotations

import signal

import asyncpg

from tests.conftest import ServiceStack
from tests.e2e.conftest import Api, eventually

ROWS = 10_000


async def test_kill_the_worker_mid_import_and_every_row_applies_once(
    api: Api, stack: ServiceStack, db: asyncpg.Pool
) -> None:
    env_id = api.env.id
    resp = await api.admin.post("/v1/segments", json={"name": "Cohort", "kind": "manual"})
    assert resp.status_code == 201
    lines = ["userId,n,cohort"] + [f"big-{i},{i},cohort" for i in range(ROWS)]
    resp = await api.admin.post(
        "/v1/imports", content="\n".join(lines).encode(), headers={"Content-Type": "text/csv"}
    )
    assert resp.status_code == 201, resp.text
    import_id = resp.json()["id"]
    assert resp.json()["rowsTotal"] == ROWS
    mapping = {"userId": {"as": "userId"}, "n": {"as": "attribute"}, "cohort": {"as": "segment"}}

    stack.kill("worker", signal.SIGTERM)
    resp = await api.admin.post(f"/v1/imports/{import_id}/start", json={"mapping": mapping})
    assert resp.status_code == 202, resp.text
    stack.start("worker", worker_batch=200)  # small batches: the kill lands between commits

    done_sql = "SELECT rows_done FROM imports WHERE env_id = $1 AND id = $2"

    async def part_way() -> bool:
        return bool(await db.fetchval(done_sql, env_id, int(import_id)) >= 2000)

    await eventually(part_way, within=60, interval=0.005)
    stack.kill("worker", signal.SIGKILL)
    stopped_at = await db.fetchval(done_sql, env_id, int(import_id))
    assert 0 < stopped_at < ROWS, "the kill must land mid-way for this test to mean anything"

    stack.start("worker")

    async def ended() -> bool:
        resp = await api.admin.get(f"/v1/imports/{import_id}")
        return bool(resp.json()["status"] == "done")

    await eventually(ended, within=90, interval=0.1)
    imp = (await api.admin.get(f"/v1/imports/{import_id}")).json()
    assert (imp["rowsDone"], imp["created"], imp["updated"], imp["unchanged"]) == (ROWS, ROWS, 0, 0)
    assert imp["rejected"] == 0
    rows = await db.fetch(
        "SELECT user_id, (attributes->>'n')::int AS n FROM users WHERE env_id = $1", env_id
    )
    assert {r["user_id"]: r["n"] for r in rows} == {f"big-{i}": i for i in range(ROWS)}
    entries = await db.fetchval(
        """SELECT count(*) FROM membership_changes c JOIN segments s
             ON s.env_id = c.env_id AND s.id = c.segment_id
           WHERE c.env_id = $1 AND s.key = 'cohort' AND c.entered AND c.cause = 'import'""",
        env_id,
    )
    assert entries == ROWS
    assert await api.member(f"big-{ROWS - 1}", "cohort")
