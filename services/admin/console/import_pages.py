"""The Imports page: upload a CSV file (``static/imports.js`` posts it to ``POST /v1/imports``),
map its columns with the preview of the first rows, start it, watch its progress bar, and the
history with status badges, counts and the rejected rows' download."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from litestar import Response, get, post
from litestar.params import FromPath
from litestar.response import Redirect

from services.admin.console.api import ApiFailure
from services.admin.console.web import ConsoleDep

#: What a column may be, per import kind (as the imports API names them), with labels.
ROLES: dict[str, list[tuple[str, str]]] = {
    "users": [
        ("userId", "User id"),
        ("email", "Email (identifies the user)"),
        ("attribute", "Attribute"),
        ("tag", "Tag (column = tag key)"),
        ("segment", "Manual segment keys"),
        ("ignore", "Ignore"),
    ],
    "members": [
        ("userId", "User id"),
        ("email", "Email"),
        ("segment", "Segment keys"),
        ("ignore", "Ignore"),
    ],
    "segments": [
        ("name", "Name"),
        ("key", "Key"),
        ("description", "Description"),
        ("kind", "Kind"),
        ("conditions", "Conditions (JSON)"),
        ("ignore", "Ignore"),
    ],
}
NAMED = frozenset(("attribute", "tag"))


@get("/imports", include_in_schema=False)
async def import_list(console: ConsoleDep) -> Response[str]:
    imports = (await console.api.get("/v1/imports", limit=50))["imports"]
    segments = (await console.api.get("/v1/segments"))["segments"]
    template = "imports/history.html" if console.htmx else "imports/list.html"
    return console.render(
        template,
        imports=imports,
        manual_segments=[s for s in segments if s["kind"] == "manual"],
        running=any(i["status"] == "processing" for i in imports),
    )


async def _import(console: ConsoleDep, ref: str) -> dict[str, Any] | Response[str]:
    return await console.find(f"/v1/imports/{quote(ref, safe='')}", "import")


@get("/imports/{ref:str}", include_in_schema=False)
async def import_detail(console: ConsoleDep, ref: FromPath[str]) -> Response[str]:
    found = await _import(console, ref)
    if isinstance(found, Response):
        return found
    template = "imports/progress.html" if console.htmx else "imports/detail.html"
    return console.render(
        template, imp=found, roles=ROLES.get(found["kind"], []), named=NAMED, problem=""
    )


@post("/imports/{ref:str}/start", include_in_schema=False, status_code=200)
async def import_start(console: ConsoleDep, ref: FromPath[str]) -> Response[Any]:
    """The mapping chosen in the form → ``POST /v1/imports/{id}/start``."""
    found = await _import(console, ref)
    if isinstance(found, Response):
        return found
    form = await console.request.form()
    mapping: dict[str, dict[str, str]] = {}
    for i, column in enumerate(found["columns"]):
        role = str(form.get(f"as-{i}", "ignore"))
        entry = {"as": role}
        name = str(form.get(f"name-{i}", "")).strip()
        if role in NAMED and name and name != column:
            entry["name"] = name
        mapping[column] = entry
    try:
        await console.api.post(f"/v1/imports/{quote(ref, safe='')}/start", {"mapping": mapping})
    except ApiFailure as exc:
        return console.render(
            "imports/detail.html",
            status=exc.status,
            imp={**found, "mapping": mapping},
            roles=ROLES.get(found["kind"], []),
            named=NAMED,
            problem=exc.message,
        )
    return Redirect(f"/imports/{quote(ref, safe='')}", status_code=303)


@post("/imports/{ref:str}/cancel", include_in_schema=False, status_code=200)
async def import_cancel(console: ConsoleDep, ref: FromPath[str]) -> Response[Any]:
    try:
        await console.api.post(f"/v1/imports/{quote(ref, safe='')}/cancel")
    except ApiFailure as exc:
        return console.message("Not cancelled", exc.message, exc.status)
    return Redirect(f"/imports/{quote(ref, safe='')}", status_code=303)
