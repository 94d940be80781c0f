"""The Segments pages: the list (live counts and recompute progress), a segment's page,
and create / edit with the condition builder."""

from __future__ import annotations

from litestar import Response, get

from services.admin.console.web import ConsoleDep


@get("/segments", include_in_schema=False)
async def segment_list(console: ConsoleDep) -> Response[str]:
    body = await console.api.get("/v1/segments")
    return console.render("segments/list.html", segments=body["segments"])


@get("/segments/table", include_in_schema=False)
async def segment_table(console: ConsoleDep) -> Response[str]:
    """The list's table alone: htmx refreshes it every few seconds (counts, progress)."""
    body = await console.api.get("/v1/segments")
    return console.render("segments/table.html", segments=body["segments"])
