"""CSV imports end to end: upload a messy file to the real admin service, start it, let the
real worker apply it, and check every row's fate, the profiles, tags and memberships."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any

import asyncpg

from shared.environments import ensure_environment
from tests.e2e.conftest import Api, eventually

CSV = "text/csv"


async def upload(api: Api, data: bytes, **params: str) -> dict[str, Any]:
    resp = await api.admin.post(
        "/v1/imports", content=data, params=params, headers={"Content-Type": CSV}
    )
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def run(api: Api, import_id: str, mapping: dict[str, Any] | None = None) -> dict[str, Any]:
    """Start an import and wait until it has ended; returns it."""
    body = {} if mapping is None else {"mapping": mapping}
    resp = await api.admin.post(f"/v1/imports/{import_id}/start", json=body)
    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "processing"

    async def ended() -> dict[str, Any] | None:
        got = await api.admin.get(f"/v1/imports/{import_id}")
        found: dict[str, Any] = got.json()
        return found if found["status"] not in ("draft", "processing") else None

    return await eventually(ended, within=60)


def counts(imp: dict[str, Any]) -> tuple[int, ...]:
    return (imp["created"], imp["updated"], imp["unchanged"], imp["rejected"], imp["rowsDone"])


async def rejected(api: Api, import_id: str) -> list[list[str]]:
    resp = await api.admin.get(f"/v1/imports/{import_id}/rejected")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(resp.text)))


MESSY = (
    "\ufeff User ID ; Email ;plan;seats;Department;Groups\r\n"
    "u1;Ada@Example.com;pro;3;Sales;beta\r\n"
    "\r\n"
    'u2;bob@example.com;"free\r\nplan";;IT;\r\n'
    "u1;Ada@Example.com;pro;3;Sales;beta\r\n"
    ";nobody@example.com;pro;1;;\r\n"
    "u3;;=cmd|' /C calc'!A0;2;;nosuch\r\n"
    "u4;;'=1+2;x;;\r\n"
    "   \r\n"
    ";;;;;\r\n"
)

MAPPING = {
    "User ID": {"as": "userId"},
    "Email": {"as": "email"},
    "plan": {"as": "attribute"},
    "seats": {"as": "attribute", "name": "seats"},
    "Department": {"as": "tag"},
    "Groups": {"as": "segment"},
}


async def test_a_messy_users_file_applies_every_row_or_says_why(api: Api) -> None:
    resp = await api.admin.post("/v1/segments", json={"name": "Beta", "kind": "manual"})
    assert resp.status_code == 201, resp.text
    draft = await upload(api, MESSY.encode(), kind="users")
    assert draft["status"] == "draft"
    assert draft["delimiter"] == ";"
    assert draft["columns"] == ["User ID", "Email", "plan", "seats", "Department", "Groups"]
    assert draft["rowsTotal"] == 6
    assert draft["preview"][1] == ["u2", "bob@example.com", "free\r\nplan", "", "IT", ""]
    assert draft["mapping"]["User ID"] == {"as": "userId"}
    assert draft["mapping"]["Email"] == {"as": "email"}
    assert draft["mapping"]["plan"] == {"as": "attribute", "name": "plan"}

    done = await run(api, draft["id"], MAPPING)
    assert done["status"] == "done", done
    # u1 created, u2 created, u1 again unchanged, unknown email and unknown segment rejected,
    # u4 created ('=1+2 unescaped to =1+2; "x" for seats is kept as text, with a warning)
    assert counts(done) == (3, 0, 1, 2, 6)
    rows = await rejected(api, draft["id"])
    assert rows[0] == [*draft["columns"], "error"]
    assert rows[1][:2] == ["", "nobody@example.com"]
    assert "no user has the email 'nobody@example.com'" in rows[1][-1]
    assert rows[2][0] == "u3" and rows[2][2] == "'=cmd|' /C calc'!A0"  # escaped on the way out
    assert rows[2][-1] == "segment: no manual segment with key 'nosuch'"

    ada = await api.profile("u1")
    assert ada is not None
    assert ada["attributes"]["plan"] == "pro"
    assert ada["attributes"]["seats"] == 3
    assert ada["attributes"]["email"] == "Ada@Example.com"
    assert {"key": "Department", "value": "Sales"} in [
        {"key": t["key"], "value": t["value"]} for t in ada["tags"]
    ]
    assert await eventually(lambda: api.member("u1", "beta"))
    bob = await api.profile("u2")
    assert bob is not None and bob["attributes"]["plan"] == "free\r\nplan"
    u4 = await api.profile("u4")
    assert u4 is not None and u4["attributes"]["plan"] == "=1+2"

    # the same file again changes nothing
    again = await upload(api, MESSY.encode(), kind="users")
    redo = await run(api, again["id"], MAPPING)
    assert counts(redo) == (0, 0, 4, 2, 6)

    # an email identifies an existing user case-insensitively; an empty cell unsets nothing
    update = await upload(api, b"email,plan,seats\nADA@example.COM,team,\n", kind="users")
    changed = await run(api, update["id"])
    assert counts(changed) == (0, 1, 0, 0, 1)
    ada = await api.profile("u1")
    assert ada is not None and ada["attributes"]["plan"] == "team"
    assert ada["attributes"]["seats"] == 3

    listed = (await api.admin.get("/v1/imports")).json()["imports"]
    assert [i["id"] for i in listed] == [update["id"], again["id"], draft["id"]]


async def test_members_by_email_and_by_segment_column(api: Api) -> None:
    for key in ("course-a", "course-b"):
        resp = await api.admin.post("/v1/segments", json={"name": key, "kind": "manual"})
        assert resp.status_code == 201
    await api.identify("m1", {"email": "m1@example.com"})
    await api.identify("m2", {"email": "M2@example.com"})
    await eventually(lambda: api.profile("m2"))
    data = (
        b"Email\tSegment ID\n"
        b"m1@example.com\tcourse-a\n"
        b"m2@EXAMPLE.com\tcourse-a, course-b\n"
        b"x@y.z\tcourse-a\n"
    )
    draft = await upload(api, data, kind="members")
    assert draft["delimiter"] == "\t"
    done = await run(api, draft["id"])
    assert counts(done) == (0, 2, 0, 1, 3)
    assert await eventually(lambda: api.member("m2", "course-b"))
    assert await api.member("m1", "course-a")
    # into ?segment=, by userId; an unknown userId is created, as by the members API
    draft = await upload(api, b"userId\nm1\nm3\n", kind="members", segment="course-b")
    done = await run(api, draft["id"])
    assert counts(done) == (1, 1, 0, 0, 2)
    assert await eventually(lambda: api.member("m3", "course-b"))
    changes = (await api.admin.get("/v1/segments/course-b/changes")).json()["changes"]
    assert {c["cause"] for c in changes} == {"import"}


async def test_a_rejected_row_with_extra_cells_keeps_them_and_its_error_aligned(
    api: Api,
) -> None:
    data = b"userId,plan\nx1,pro,surplus,more\n,free\nx2,team\n"
    draft = await upload(api, data, kind="users")
    done = await run(api, draft["id"])
    assert counts(done) == (1, 0, 0, 2, 3)
    rows = await rejected(api, draft["id"])
    assert rows[0] == ["userId", "plan", "extra 1", "extra 2", "error"]
    assert rows[1][:4] == ["x1", "pro", "surplus", "more"]
    assert rows[1][4] == "the row has 4 cells; the header names 2 columns"
    assert rows[2][:4] == ["", "free", "", ""]
    assert rows[2][4].startswith("userId: the row has neither")
    assert {len(r) for r in rows} == {5}


async def test_segments_in_bulk(api: Api) -> None:
    data = (
        b"name,key,description,conditions\n"
        b'Sales team,sales,The sales people,"{""attribute"": ""dept"", '
        b'""op"": ""is"", ""value"": ""sales""}"\n'
        b"Course 101,course-101,,\n"
        b"Broken,broken,,{not json\n"
    )
    draft = await upload(api, data, kind="segments")
    done = await run(api, draft["id"])
    assert counts(done) == (2, 0, 0, 1, 3)
    assert (await rejected(api, draft["id"]))[1][-1].startswith("conditions: not valid JSON")
    sales = (await api.admin.get("/v1/segments/sales")).json()
    assert sales["kind"] == "dynamic" and sales["description"] == "The sales people"
    assert (await api.admin.get("/v1/segments/course-101")).json()["kind"] == "manual"
    again = await upload(api, data, kind="segments")
    assert counts(await run(api, again["id"])) == (0, 0, 2, 1, 3)


async def test_bad_files_and_requests_are_refused_and_change_nothing(
    api: Api, db: asyncpg.Pool
) -> None:
    latin = "userId,name\nu1,Zoë\n".encode("cp1252")
    resp = await api.admin.post("/v1/imports", content=latin, headers={"Content-Type": CSV})
    assert resp.status_code == 422
    assert resp.json()["field"] == "file"
    assert "not UTF-8" in resp.json()["error"] and "Windows-1252" in resp.json()["error"]
    resp = await api.admin.post("/v1/imports", content=b"", headers={"Content-Type": CSV})
    assert resp.status_code == 422 and "empty" in resp.json()["error"]
    resp = await api.admin.post("/v1/imports?kind=people", content=b"a\n1\n")
    assert resp.status_code == 422 and resp.json()["field"] == "kind"
    resp = await api.admin.post("/v1/imports?kind=members&segment=nope", content=b"userId\n1\n")
    assert resp.status_code == 422 and resp.json()["field"] == "segment"
    count = "SELECT count(*) FROM imports WHERE env_id = $1"
    assert await db.fetchval(count, api.env.id) == 0

    draft = await upload(api, b"userId,plan\nu1,pro\n")
    bad = await api.admin.post(
        f"/v1/imports/{draft['id']}/start", json={"mapping": {"plan": {"as": "attribute"}}}
    )
    assert bad.status_code == 422 and "userId or email" in bad.json()["error"]
    bad = await api.admin.post(
        f"/v1/imports/{draft['id']}/start", json={"mapping": {"nope": {"as": "userId"}}}
    )
    assert bad.status_code == 422 and bad.json()["field"] == "mapping.nope"
    cancelled = await api.admin.post(f"/v1/imports/{draft['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = await api.admin.post(f"/v1/imports/{draft['id']}/start", json={})
    assert again.status_code == 409
    assert await api.profile("u1") is None

    # multipart upload, field "file"
    resp = await api.admin.post(
        "/v1/imports",
        files={"file": ("people.csv", b"userId\nu9\n", "text/csv")},
        data={"note": "x"},
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["rowsTotal"] == 1 and resp.json()["columns"] == ["userId"]


async def test_every_import_endpoint_refuses_another_environments_keys(
    api: Api, db: asyncpg.Pool
) -> None:
    draft = await upload(api, b"userId\nu1\n")
    async with db.acquire() as conn:
        other = await ensure_environment(conn, f"other-{api.env.id}")
    theirs = {"Authorization": f"Bearer {other.secretKey}"}
    write = {"Authorization": f"Bearer {api.env.writeKey}"}
    for method, path in [
        ("GET", f"/v1/imports/{draft['id']}"),
        ("POST", f"/v1/imports/{draft['id']}/start"),
        ("POST", f"/v1/imports/{draft['id']}/cancel"),
        ("GET", f"/v1/imports/{draft['id']}/rejected"),
    ]:
        resp = await api.admin.request(method, path, headers=theirs, json={})
        assert resp.status_code == 404, (path, resp.text)
        resp = await api.admin.request(method, path, headers=write, json={})
        assert resp.status_code == 403, (path, resp.text)
    listed = await api.admin.get("/v1/imports", headers=theirs)
    assert listed.json()["imports"] == []
    resp = await api.admin.post("/v1/imports", content=b"userId\nx\n", headers=write)
    assert resp.status_code == 403
    assert (await api.admin.get(f"/v1/imports/{draft['id']}")).json()["status"] == "draft"


async def test_exports_stream_csv_escape_formulas_and_import_back_unchanged(api: Api) -> None:
    resp = await api.admin.post("/v1/segments", json={"name": "Vip", "kind": "manual"})
    assert resp.status_code == 201
    await api.identify(
        "e1",
        {"email": "e1@example.com", "plan": "pro", "seats": 3, "ratio": 2.5, "beta": True},
        segments=["vip"],
    )
    await api.identify(
        "e2",
        {"email": "e2@example.com", "plan": "=HYPERLINK(1)", "seats": -4, "labels": ["a", "b"]},
        segments=["vip"],
    )
    await api.identify("e3", {"plan": "@risk", "note": "line\nbreak, comma"})
    await eventually(lambda: api.member("e2", "vip"))
    await eventually(lambda: api.profile("e3"))  # applied too (it may come in a later batch)

    resp = await api.admin.get("/v1/users", params={"format": "csv"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(resp.text)))
    header = rows[0]
    assert header == ["userId", "beta", "email", "labels", "note", "plan", "ratio", "seats"]
    by_user = {r[0]: dict(zip(header, r, strict=True)) for r in rows[1:]}
    assert set(by_user) == {"e1", "e2", "e3"}
    assert by_user["e2"]["plan"] == "'=HYPERLINK(1)"
    assert by_user["e3"]["plan"] == "'@risk"
    assert by_user["e2"]["seats"] == "-4"  # a number, not a formula
    assert by_user["e1"]["ratio"] == "2.5" and by_user["e1"]["beta"] == "true"
    assert by_user["e2"]["labels"] == '["a","b"]'
    assert by_user["e3"]["note"] == "line\nbreak, comma"

    filtered = await api.admin.get(
        "/v1/users",
        params={
            "format": "csv",
            "filter": '{"attribute": "seats", "op": "gt", "value": 0}',
            "columns": "email,seats",
        },
    )
    assert list(csv.reader(io.StringIO(filtered.text))) == [
        ["userId", "email", "seats"],
        ["e1", "e1@example.com", "3"],
    ]
    bad = await api.admin.get("/v1/users", params={"format": "csv", "filter": "{"})
    assert bad.status_code == 400 and bad.json()["field"] == "filter"
    bad = await api.admin.get("/v1/users", params={"format": "xml"})
    assert bad.status_code == 400 and bad.json()["field"] == "format"

    members = await api.admin.get(
        "/v1/segments/vip/members", params={"format": "csv", "columns": "userId,enteredAt,plan"}
    )
    assert members.status_code == 200
    member_rows = list(csv.reader(io.StringIO(members.text)))
    assert member_rows[0] == ["userId", "enteredAt", "plan"]
    assert sorted(r[0] for r in member_rows[1:]) == ["e1", "e2"]
    assert all(r[1].startswith("20") for r in member_rows[1:])

    # the round trip: both files imported back change nothing
    users_import = await upload(api, resp.content, kind="users")
    back = await run(api, users_import["id"])
    assert counts(back) == (0, 0, 3, 0, 3), await rejected(api, users_import["id"])
    members_import = await upload(api, members.content, kind="members", segment="vip")
    back = await run(api, members_import["id"])
    assert counts(back) == (0, 0, 2, 0, 2)
    e2 = await api.profile("e2")
    assert e2 is not None and e2["attributes"]["plan"] == "=HYPERLINK(1)"
    assert e2["attributes"]["labels"] == ["a", "b"] and e2["attributes"]["seats"] == -4


async def test_cancel_stops_a_processing_import_and_frees_its_file(
    api: Api, db: asyncpg.Pool
) -> None:
    lines = ["userId,n"] + [f"c-{i},{i}" for i in range(20_000)]
    draft = await upload(api, "\n".join(lines).encode())
    resp = await api.admin.post(f"/v1/imports/{draft['id']}/start", json={})
    assert resp.status_code == 202
    resp = await api.admin.post(f"/v1/imports/{draft['id']}/cancel")
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "cancelled" and resp.json()["finishedAt"] is not None
    chunks = "SELECT count(*) FROM import_chunks WHERE env_id = $1 AND import_id = $2"
    assert await db.fetchval(chunks, api.env.id, int(draft["id"])) == 0
    await asyncio.sleep(2)  # a worker that held it sees the status at its next batch
    final = (await api.admin.get(f"/v1/imports/{draft['id']}")).json()
    assert final["status"] == "cancelled"
    assert final["rowsDone"] < final["rowsTotal"]
    applied = await db.fetchval("SELECT count(*) FROM users WHERE env_id = $1", api.env.id)
    assert applied == final["rowsDone"]  # what was applied is what it says
    again = await api.admin.post(f"/v1/imports/{draft['id']}/cancel")
    assert again.status_code == 409
