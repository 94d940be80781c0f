"""The Segments pages: the list (live counts and recompute progress), a segment's page
(status, conditions, members, change history, webhooks), create / edit with the condition
builder (``static/segment_form.js``) and manual member management."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import msgspec
from litestar import Response, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect

from services.admin.console.api import ApiFailure, ConsoleApi
from services.admin.console.web import ConsoleDep

MEMBERS_SHOWN = 50
_SEPARATORS = re.compile(r"[\s,;]+")


@get("/segments", include_in_schema=False)
async def segment_list(console: ConsoleDep) -> Response[str]:
    body = await console.api.get("/v1/segments")
    return console.render("segments/list.html", segments=body["segments"])


@get("/segments/_table", include_in_schema=False)
async def segment_table(console: ConsoleDep) -> Response[str]:
    """The list's table alone: htmx refreshes it every few seconds (counts, progress)."""
    body = await console.api.get("/v1/segments")
    return console.render("segments/table.html", segments=body["segments"])


@get("/segments/_new", include_in_schema=False)
async def segment_new(
    console: ConsoleDep, conditions: FromQuery[str | None] = None, kind: FromQuery[str] = "dynamic"
) -> Response[str]:
    """The empty form; ``conditions`` (JSON) pre-fills the builder (the Users page's
    "Save as segment")."""
    initial: Any = None
    if conditions:
        try:
            initial = msgspec.json.decode(conditions)
        except msgspec.DecodeError:
            initial = None
    return console.render(
        "segments/form.html",
        segment=None,
        conditions=initial,
        kind="manual" if kind == "manual" else "dynamic",
    )


async def _segment(console: ConsoleDep, key: str) -> dict[str, Any] | Response[str]:
    return await console.find(f"/v1/segments/{quote(key, safe='')}", "segment")


@get("/segments/{key:str}/edit", include_in_schema=False)
async def segment_edit(console: ConsoleDep, key: FromPath[str]) -> Response[str]:
    segment = await _segment(console, key)
    if isinstance(segment, Response):
        return segment
    return console.render(
        "segments/form.html",
        segment=segment,
        conditions=segment["conditions"],
        kind=segment["kind"],
    )


async def _members(api: ConsoleApi, key: str) -> Any:
    return await api.get(f"/v1/segments/{quote(key, safe='')}/members", limit=MEMBERS_SHOWN)


@get("/segments/{key:str}", include_in_schema=False)
async def segment_detail(console: ConsoleDep, key: FromPath[str]) -> Response[str]:
    segment = await _segment(console, key)
    if isinstance(segment, Response):
        return segment
    path = f"/v1/segments/{quote(key, safe='')}"
    members = await _members(console.api, key)
    changes = await console.api.get(f"{path}/changes", limit=50)
    hooks = (await console.api.get("/v1/webhooks"))["webhooks"]
    covering = [
        w
        for w in hooks
        if w["segments"] is None or any(s["id"] == segment["id"] for s in w["segments"])
    ]
    return console.render(
        "segments/detail.html",
        segment=segment,
        members=members,
        changes=changes,
        webhooks=covering,
        notice="",
        problem="",
    )


@get("/segments/{key:str}/status", include_in_schema=False)
async def segment_status(console: ConsoleDep, key: FromPath[str]) -> Response[str]:
    """The status block alone (htmx polls it: progress while computing, the live count)."""
    segment = await console.api.get(f"/v1/segments/{quote(key, safe='')}")
    return console.render("segments/status.html", segment=segment)


@get("/segments/{key:str}/members", include_in_schema=False)
async def segment_members(console: ConsoleDep, key: FromPath[str]) -> Response[str]:
    """The members list alone (a dynamic segment's page refreshes it as it is computed)."""
    return await _members_fragment(console, key)


@get("/segments/{key:str}/changes", include_in_schema=False)
async def segment_changes(
    console: ConsoleDep, key: FromPath[str], cursor: FromQuery[str | None] = None
) -> Response[str]:
    segment = await console.api.get(f"/v1/segments/{quote(key, safe='')}")
    changes = await console.api.get(
        f"/v1/segments/{quote(key, safe='')}/changes", limit=50, cursor=cursor
    )
    return console.render("segments/changes.html", segment=segment, changes=changes)


def split_refs(text: str) -> tuple[list[str], list[str]]:
    """Pasted ids and emails (one per line, or separated by commas, semicolons or tabs):
    (userIds, emails), each once, in order."""
    ids: dict[str, None] = {}
    emails: dict[str, None] = {}
    for part in _SEPARATORS.split(text):
        part = part.strip().strip('"')
        if part:
            (emails if "@" in part else ids)[part] = None
    return list(ids), list(emails)


async def _change_members(console: ConsoleDep, key: str, add: bool, body: dict[str, Any]) -> str:
    path = f"/v1/segments/{quote(key, safe='')}/members"
    result = await console.api.call("POST" if add else "DELETE", path, json=body)
    parts = []
    count = result.get("added" if add else "removed")
    if count is not None:
        parts.append(f"{count} {'added' if add else 'removed'}")
    if result.get("created"):
        parts.append(f"{len(result['created'])} new user(s) created")
    unknown = result.get("unknownEmails", []) + result.get("unknownUserIds", [])
    if unknown:
        parts.append("not found: " + ", ".join(unknown[:20]))
    return "; ".join(parts) or "Done."


async def _members_fragment(
    console: ConsoleDep, key: str, notice: str = "", problem: str = ""
) -> Response[str]:
    segment = await console.api.get(f"/v1/segments/{quote(key, safe='')}")
    members = await _members(console.api, key)
    return console.render(
        "segments/members.html", segment=segment, members=members, notice=notice, problem=problem
    )


@post("/segments/{key:str}/members", include_in_schema=False, status_code=200)
async def members_add(console: ConsoleDep, key: FromPath[str]) -> Response[str]:
    """Add pasted ids / emails to a manual segment (the members API, as a form)."""
    form = await console.request.form()
    ids, emails = split_refs(str(form.get("refs", "")))
    if not ids and not emails:
        return await _members_fragment(console, key, problem="Enter at least one id or email.")
    try:
        notice = await _change_members(console, key, True, {"userIds": ids, "emails": emails})
    except ApiFailure as exc:
        return await _members_fragment(console, key, problem=exc.message)
    return await _members_fragment(console, key, notice=notice)


@post("/segments/{key:str}/members/remove", include_in_schema=False, status_code=200)
async def members_remove(console: ConsoleDep, key: FromPath[str]) -> Response[str]:
    form = await console.request.form()
    user_id = str(form.get("userId", ""))
    try:
        notice = await _change_members(console, key, False, {"userIds": [user_id]})
    except ApiFailure as exc:
        return await _members_fragment(console, key, problem=exc.message)
    return await _members_fragment(console, key, notice=notice)


@post("/segments/{key:str}/delete", include_in_schema=False, status_code=200)
async def segment_delete(console: ConsoleDep, key: FromPath[str]) -> Response[Any]:
    try:
        await console.api.delete(f"/v1/segments/{quote(key, safe='')}")
    except ApiFailure as exc:
        return console.message("Not deleted", exc.message, exc.status)
    return Redirect("/segments", status_code=303)
