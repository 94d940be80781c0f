"""What every console page shares: the signed-in context (a dependency), template rendering,
and the redirect to the sign-in page.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import quote

import jinja2
from litestar import Request, Response
from litestar.di import NamedDependency
from litestar.response import Redirect

from services.admin.console.accounts import EnvironmentChoice, environments_of
from services.admin.console.api import ApiFailure, ConsoleApi
from services.admin.console.sessions import (
    COOKIE,
    CSRF_HEADER,
    SAFE_METHODS,
    ConsoleSession,
    csrf_ok,
    read_session,
)
from services.admin.state import AdminState

HERE = Path(__file__).parent
NAV = ("Users", "Segments", "Imports", "Tags", "Attributes", "Settings")


def _when(value: Any) -> str:
    """A timestamp as people read it (UTC, to the minute)."""
    if value in (None, ""):
        return ""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return str(value)


templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters["when"] = _when


class SignInRequired(Exception):
    """Raised by the console dependency when there is no live session."""


class CsrfRefused(Exception):
    """A change sent without this session's CSRF token."""


@dataclass
class Console:
    """A signed-in page request: the session, its environments and the API as it sees it."""

    request: Request[Any, Any, Any]
    session: ConsoleSession
    token: str
    environments: list[EnvironmentChoice]
    api: ConsoleApi
    htmx: bool = field(default=False)

    def render(self, template: str, status: int = 200, **context: Any) -> Response[str]:
        """The page ``template`` inside the console's frame (or alone, for htmx fragments)."""
        html = templates.get_template(template).render(
            console=self, nav=NAV, path=self.request.url.path, **context
        )
        return Response(html, status_code=status, media_type="text/html; charset=utf-8")

    async def find(self, path: str, what: str) -> dict[str, Any] | Response[str]:
        """The API's object at ``path``, or the "No such <what>" page when it answers 404."""
        try:
            found: dict[str, Any] = await self.api.get(path)
        except ApiFailure as exc:
            if exc.status == 404:
                return self.message(f"No such {what}", exc.message, 404)
            raise
        return found

    def message(self, title: str, message: str, status: int) -> Response[str]:
        """A page saying why something was refused (the API's message, usually)."""
        return self.render("message.html", status=status, title=title, message=message)


async def provide_console(request: Request[Any, Any, Any]) -> AsyncIterator[Console]:
    """Dependency: the :class:`Console` of a signed-in request (a changing request must carry
    the CSRF token, as header or form field); else :class:`SignInRequired`."""
    state: AdminState = request.app.state.admin
    token = request.cookies.get(COOKIE)
    session = await read_session(state.pool, token)
    if session is None or token is None:
        raise SignInRequired
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER)
        if not sent and "form" in request.headers.get("content-type", ""):
            sent = (await request.form()).get("csrf")
        if not csrf_ok(session, sent):
            raise CsrfRefused
    envs = await environments_of(state.pool, session.account_id)
    async with ConsoleApi(request, token, session.csrf) as api:
        yield Console(
            request=request,
            session=session,
            token=token,
            environments=envs,
            api=api,
            htmx=request.headers.get("hx-request") == "true",
        )


def render_plain(template: str, status: int = 200, **context: Any) -> Response[str]:
    """A page outside the signed-in frame (sign-in)."""
    html = templates.get_template(template).render(console=None, nav=NAV, **context)
    return Response(html, status_code=status, media_type="text/html; charset=utf-8")


def sign_in_redirect(request: Request[Any, Any, Any], _: Exception) -> Response[Any]:
    """To the sign-in page, coming back here afterwards (htmx follows ``HX-Redirect``)."""
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    location = "/sign-in" + ("" if target in ("/", "/sign-in") else "?next=" + quote(target))
    if request.headers.get("hx-request") == "true":
        return Response("", status_code=200, headers={"HX-Redirect": location})
    return Redirect(location, status_code=303)


def csrf_refused(_: Request[Any, Any, Any], __: Exception) -> Response[str]:
    return render_plain(
        "message.html",
        status=403,
        title="Refused",
        message="This form was not sent by this console session. Reload the page and retry.",
    )


#: Handler parameter type of the console dependency.
ConsoleDep: TypeAlias = NamedDependency[Console]
