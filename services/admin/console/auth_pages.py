"""Sign-in, sign-out and the environment switch."""

from __future__ import annotations

import secrets
from typing import Any

from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.response import Redirect

from services.admin.console.accounts import sign_in
from services.admin.console.sessions import (
    COOKIE,
    MAX_HOURS,
    end_session,
    start_session,
    switch_environment,
)
from services.admin.console.web import ConsoleDep, render_plain
from services.admin.state import Admin

#: The sign-in form's own CSRF token (double submit: cookie and field must match), so that
#: another site cannot sign a browser into an account of its choosing.
SIGN_IN_COOKIE = "segments_signin"


def _safe_next(target: str | None) -> str:
    """Only a path of this site (never //host or a scheme): no open redirect."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/segments"


def _cookie(
    request: Request[Any, Any, Any], admin: Admin, key: str, value: str, max_age: int
) -> Cookie:
    """A console cookie; ``Secure`` as SEGMENTS_CONSOLE_SECURE_COOKIE says, else when the
    request came over https (uvicorn takes the scheme from a trusted proxy's
    X-Forwarded-Proto)."""
    secure = admin.settings.console_secure_cookie
    return Cookie(
        key=key,
        value=value,
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https" if secure is None else secure,
        path="/",
    )


def _sign_in_page(
    request: Request[Any, Any, Any],
    admin: Admin,
    status: int = 200,
    error: str = "",
    email: str = "",
) -> Response[str]:
    token = secrets.token_urlsafe(24)
    response = render_plain(
        "sign_in.html",
        status=status,
        error=error,
        email=email,
        csrf=token,
        next=_safe_next(request.query_params.get("next")),
    )
    response.set_cookie(_cookie(request, admin, SIGN_IN_COOKIE, token, 3600))
    return response


@get("/", include_in_schema=False)
async def home() -> Redirect:
    return Redirect("/segments", status_code=303)


@get("/sign-in", include_in_schema=False)
async def sign_in_form(request: Request[Any, Any, Any], admin: Admin) -> Response[str]:
    return _sign_in_page(request, admin)


@post("/sign-in", include_in_schema=False, status_code=200)
async def sign_in_submit(request: Request[Any, Any, Any], admin: Admin) -> Response[Any]:
    form = await request.form()
    email = str(form.get("email", "")).strip()
    password = str(form.get("password", ""))
    sent, expected = str(form.get("csrf", "")), request.cookies.get(SIGN_IN_COOKIE, "")
    if not expected or not secrets.compare_digest(sent.encode(), expected.encode()):
        return _sign_in_page(request, admin, 403, "The form expired: please sign in again.", email)
    if not email or not password:
        return _sign_in_page(request, admin, 422, "Enter your email and your password.", email)
    outcome = await sign_in(admin.pool, email, password)
    if outcome.account_id is None:
        if outcome.locked_minutes:
            message = (
                "Too many failed sign-ins: this account is locked for "
                f"{outcome.locked_minutes} minute(s)."
            )
            return _sign_in_page(request, admin, 429, message, email)
        return _sign_in_page(request, admin, 401, "Wrong email or password.", email)
    async with admin.pool.acquire() as conn:
        token = await start_session(conn, outcome.account_id)
    response = Redirect(_safe_next(str(form.get("next", ""))), status_code=303)
    # the server-side expiry (idle or absolute) is the one that counts
    response.set_cookie(_cookie(request, admin, COOKIE, token, MAX_HOURS * 3600))
    response.delete_cookie(SIGN_IN_COOKIE, path="/")
    return response


@post("/sign-out", include_in_schema=False, status_code=200)
async def sign_out(console: ConsoleDep, admin: Admin) -> Response[Any]:
    await end_session(admin.pool, console.token)
    response = Redirect("/sign-in", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@post("/environment", include_in_schema=False, status_code=200)
async def choose_environment(console: ConsoleDep, admin: Admin) -> Response[Any]:
    """The header's environment switch: the same page, in another environment."""
    form = await console.request.form()
    raw = str(form.get("env", ""))
    # back to the same section: the item shown may not exist in the other environment
    section = _safe_next(str(form.get("back", ""))).split("/")[1].split("?")[0]
    back = f"/{section}" if section else "/segments"
    if not raw.isdigit() or not await switch_environment(admin.pool, console.token, int(raw)):
        return render_plain(
            "message.html",
            status=403,
            title="Refused",
            message="This account has no access to that environment.",
        )
    return Redirect(back, status_code=303)
