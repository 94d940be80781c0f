"""The Tags and Attributes pages: tags (create with an auto-segment, rename, delete, who has
them) and attributes (types declared or inferred, correct a type, ingestion warnings)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import msgspec
from litestar import Response, get, post
from litestar.params import FromPath
from litestar.response import Redirect

from services.admin.console.api import ApiFailure
from services.admin.console.web import ConsoleDep

TYPES = ("string", "number", "boolean", "datetime", "list")


def tag_filter_link(key: str, value: str) -> str:
    """The Users page filtered to the carriers of a tag."""
    cond = msgspec.json.encode({"tag": {"key": key, "value": value}}).decode()
    return "/users?" + urlencode({"filter": cond})


@get("/tags", include_in_schema=False)
async def tag_list(console: ConsoleDep) -> Response[str]:
    tags = (await console.api.get("/v1/tags"))["tags"]
    return console.render("tags.html", tags=tags, link=tag_filter_link, problem="", notice="")


@post("/tags", include_in_schema=False, status_code=200)
async def tag_change(console: ConsoleDep) -> Response[Any]:
    """Create, rename, give an auto-segment or delete a tag (the tags API, as forms)."""
    form = await console.request.form()
    action = str(form.get("action", "create"))
    tag_id = quote(str(form.get("id", "")), safe="")
    try:
        if action == "create":
            await console.api.post(
                "/v1/tags",
                {
                    "key": str(form.get("key", "")).strip(),
                    "value": str(form.get("value", "")).strip(),
                    "autoSegment": form.get("autoSegment") == "on",
                },
            )
        elif action == "rename":
            await console.api.patch(
                f"/v1/tags/{tag_id}",
                {
                    "key": str(form.get("key", "")).strip(),
                    "value": str(form.get("value", "")).strip(),
                },
            )
        elif action == "segment":
            await console.api.patch(f"/v1/tags/{tag_id}", {"autoSegment": True})
        elif action == "delete":
            await console.api.delete(f"/v1/tags/{tag_id}")
    except ApiFailure as exc:
        tags = (await console.api.get("/v1/tags"))["tags"]
        return console.render(
            "tags.html",
            status=exc.status,
            tags=tags,
            link=tag_filter_link,
            problem=exc.message,
            notice="",
        )
    return Redirect("/tags", status_code=303)


@get("/attributes", include_in_schema=False)
async def attribute_list(console: ConsoleDep) -> Response[str]:
    attributes = (await console.api.get("/v1/attributes"))["attributes"]
    return console.render(
        "attributes.html", attributes=attributes, types=TYPES, problem="", notice=""
    )


@post("/attributes", include_in_schema=False, status_code=200)
async def attribute_type(console: ConsoleDep) -> Response[Any]:
    """Declare or correct an attribute's type (``PUT /v1/attributes/{scope}/{name}``)."""
    form = await console.request.form()
    scope = str(form.get("scope", "user"))
    name = str(form.get("name", "")).strip()
    notice = problem = ""
    status = 200
    try:
        if not name:
            raise ApiFailure(422, "name: enter the attribute's name", "name")
        changed = await console.api.put(
            f"/v1/attributes/{quote(scope, safe='')}/{quote(name, safe='')}",
            {"type": str(form.get("type", ""))},
        )
        recomputing = changed.get("recomputing", [])
        notice = f"{name} is now {changed['attribute']['type']}." + (
            f" Recomputing: {', '.join(recomputing)}." if recomputing else ""
        )
    except ApiFailure as exc:
        problem, status = exc.message, exc.status
    attributes = (await console.api.get("/v1/attributes"))["attributes"]
    return console.render(
        "attributes.html",
        status=status,
        attributes=attributes,
        types=TYPES,
        problem=problem,
        notice=notice,
    )


@get("/attributes/{attr_scope:str}/{name:str}/warnings", include_in_schema=False)
async def attribute_warnings(
    console: ConsoleDep, attr_scope: FromPath[str], name: FromPath[str]
) -> Response[str]:
    body = await console.api.get(
        f"/v1/attributes/{quote(attr_scope, safe='')}/{quote(name, safe='')}/warnings", limit=20
    )
    return console.render("attribute_warnings.html", warnings=body["warnings"])
