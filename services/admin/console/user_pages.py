"""The Users pages: the table (chosen columns saved per account, keyset paging, the condition
builder as filter, "Save as segment", "Add to manual segment") and a user's profile
(attributes with type and last write, companies, tags, segments with "Why?", recent events,
membership history, erase)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import msgspec
from litestar import Response, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect

from services.admin.console.api import ApiFailure
from services.admin.console.web import ConsoleDep
from services.admin.state import Admin

PAGE = 50
DEFAULT_COLUMNS = ["email"]
MAX_COLUMNS = 12


async def _columns(admin: Admin, console: ConsoleDep) -> list[str]:
    stored = await admin.pool.fetchval(
        """SELECT user_columns FROM console_account_environments
           WHERE account_id = $1 AND env_id = $2""",
        console.session.account_id,
        console.session.env_id,
    )
    return list(stored) if stored else list(DEFAULT_COLUMNS)


def _filter_json(raw: str | None) -> tuple[Any, str]:
    """The filter as a condition (None: every user) and as compact JSON for links."""
    if not raw:
        return None, ""
    try:
        cond = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None, ""
    return cond, msgspec.json.encode(cond).decode()


def _link(filter: str, sort: str, cursor: str | None = None) -> str:
    params = {"filter": filter, "sort": sort if sort != "created" else "", "cursor": cursor or ""}
    query = urlencode({k: v for k, v in params.items() if v})
    return "/users" + (f"?{query}" if query else "")


async def _table_context(
    console: ConsoleDep, admin: Admin, filter: str | None, cursor: str | None, sort: str
) -> dict[str, Any]:
    cond, compact = _filter_json(filter)
    columns = await _columns(admin, console)
    error = ""
    page: dict[str, Any] = {"users": [], "nextCursor": None}
    try:
        page = await console.api.get(
            "/v1/users", filter=compact or None, cursor=cursor or None, limit=PAGE, sort=sort
        )
    except ApiFailure as exc:
        if exc.status >= 500:
            raise
        error = exc.message
    return {
        "users": page["users"],
        "next_cursor": page["nextCursor"],
        "cursor": cursor or "",
        "columns": columns,
        "filter": compact,
        "filter_error": error,
        "condition": cond,
        "sort": sort,
        "first_link": _link(compact, sort),
        "sort_link": lambda s: _link(compact, s),
        "next_link": _link(compact, sort, page["nextCursor"]) if page["nextCursor"] else "",
    }


@get("/users", include_in_schema=False)
async def user_list(
    console: ConsoleDep,
    admin: Admin,
    filter: FromQuery[str | None] = None,
    cursor: FromQuery[str | None] = None,
    sort: FromQuery[str] = "created",
) -> Response[str]:
    context = await _table_context(console, admin, filter, cursor, sort)
    attributes = (await console.api.get("/v1/attributes"))["attributes"]
    segments = (await console.api.get("/v1/segments"))["segments"]
    manual = [s for s in segments if s["kind"] == "manual"]
    names = sorted({a["name"] for a in attributes if a["scope"] == "user"})
    template = "users/table.html" if console.htmx else "users/list.html"
    return console.render(
        template, attribute_names=names, manual_segments=manual, notice="", **context
    )


@post("/users/columns", include_in_schema=False, status_code=200)
async def save_columns(console: ConsoleDep, admin: Admin) -> Redirect:
    """The Users table's columns, kept for this account in this environment."""
    form = await console.request.form()
    chosen = [str(c) for c in form.getall("column", [])][:MAX_COLUMNS]
    await admin.pool.execute(
        """UPDATE console_account_environments SET user_columns = $3
           WHERE account_id = $1 AND env_id = $2""",
        console.session.account_id,
        console.session.env_id,
        chosen,
    )
    back = str(form.get("filter", ""))
    return Redirect("/users" + (f"?{urlencode({'filter': back})}" if back else ""), status_code=303)


@post("/users/add-to-segment", include_in_schema=False, status_code=200)
async def add_to_segment(console: ConsoleDep) -> Response[str]:
    """Selected rows → a manual segment (the members API)."""
    form = await console.request.form()
    ids = [str(u) for u in form.getall("userId", [])]
    segment = str(form.get("segment", ""))
    if not ids:
        return console.render("users/notice.html", problem="Select at least one user.", notice="")
    if not segment:
        return console.render("users/notice.html", problem="Choose a manual segment.", notice="")
    try:
        result = await console.api.post(
            f"/v1/segments/{quote(segment, safe='')}/members", {"userIds": ids}
        )
    except ApiFailure as exc:
        return console.render("users/notice.html", problem=exc.message, notice="")
    notice = (
        f"{result['added']} user(s) added to {segment}"
        + (f" ({len(ids) - result['added']} already in it)" if result["added"] < len(ids) else "")
        + "."
    )
    return console.render("users/notice.html", notice=notice, problem="", segment=segment)


async def _attribute_types(console: ConsoleDep) -> dict[str, str]:
    attributes = (await console.api.get("/v1/attributes"))["attributes"]
    return {a["name"]: a["type"] for a in attributes if a["scope"] == "user"}


@get("/users/{user_id:str}", include_in_schema=False)
async def user_profile(console: ConsoleDep, user_id: FromPath[str]) -> Response[str]:
    path = f"/v1/users/{quote(user_id, safe='')}"
    profile = await console.find(path, "user")
    if isinstance(profile, Response):
        return profile
    events = (await console.api.get(f"{path}/events", limit=20))["events"]
    changes = (await console.api.get(f"{path}/changes", limit=30))["changes"]
    tags = (await console.api.get("/v1/tags"))["tags"]
    segments = (await console.api.get("/v1/segments"))["segments"]
    return console.render(
        "users/profile.html",
        profile=profile,
        user_id=user_id,
        types=await _attribute_types(console),
        events=events,
        changes=changes,
        all_tags=tags,
        manual_segments=[s for s in segments if s["kind"] == "manual"],
        problem="",
    )


@get("/users/{user_id:str}/why/{segment:str}", include_in_schema=False)
async def why(console: ConsoleDep, user_id: FromPath[str], segment: FromPath[str]) -> Response[str]:
    """The explain tree of one membership (loaded into the profile on demand)."""
    try:
        explained = await console.api.get(
            f"/v1/segments/{quote(segment, safe='')}/explain/{quote(user_id, safe='')}"
        )
    except ApiFailure as exc:
        return console.render("users/why.html", explained=None, problem=exc.message)
    return console.render("users/why.html", explained=explained, problem="")


async def _tag_id(console: ConsoleDep, text: str) -> str:
    """The id of tag "Key: Value" (or "Key:Value"), created when it does not exist yet."""
    key, sep, value = text.partition(":")
    key, value = key.strip(), value.strip()
    if not sep or not key or not value:
        raise ApiFailure(422, "Tag: write it as Key: Value (e.g. Department: Sales)", "tag")
    for tag in (await console.api.get("/v1/tags"))["tags"]:
        if tag["key"] == key and tag["value"] == value:
            return str(tag["id"])
    created = await console.api.post("/v1/tags", {"key": key, "value": value})
    return str(created["id"])


@post("/users/{user_id:str}/tags", include_in_schema=False, status_code=200)
async def tag_user(console: ConsoleDep, user_id: FromPath[str]) -> Response[Any]:
    form = await console.request.form()
    back = f"/users/{quote(user_id, safe='')}"
    try:
        if remove := str(form.get("remove", "")):
            await console.api.delete(
                f"/v1/tags/{quote(remove, safe='')}/users", {"userIds": [user_id]}
            )
        else:
            tag_id = await _tag_id(console, str(form.get("tag", "")))
            await console.api.post(f"/v1/tags/{tag_id}/users", {"userIds": [user_id]})
    except ApiFailure as exc:
        return console.message("Tag not changed", exc.message, exc.status)
    return Redirect(back, status_code=303)


@post("/users/{user_id:str}/erase", include_in_schema=False, status_code=200)
async def erase(console: ConsoleDep, user_id: FromPath[str]) -> Response[Any]:
    form = await console.request.form()
    if str(form.get("confirm", "")).strip() != user_id:
        return console.message(
            "Not erased", "Type the user's id exactly to confirm the erase.", 422
        )
    try:
        await console.api.delete(f"/v1/users/{quote(user_id, safe='')}")
    except ApiFailure as exc:
        return console.message("Not erased", exc.message, exc.status)
    return Redirect("/users", status_code=303)
