"""The Settings page: the environment's keys (rotation), webhooks with their delivery log,
and the console accounts that see this environment."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from litestar import Response, get, post
from litestar.params import FromPath
from litestar.response import Redirect

from services.admin.console.accounts import AccountError, add_to_environment
from services.admin.console.api import ApiFailure
from services.admin.console.web import ConsoleDep
from services.admin.state import Admin


async def _optional(console: ConsoleDep, path: str) -> Any:
    """An API answer, or None where that API is not there (404: not deployed yet)."""
    try:
        return await console.api.get(path)
    except ApiFailure as exc:
        if exc.status in (404, 405):
            return None
        raise


async def _accounts(admin: Admin, env_id: int | None) -> list[dict[str, Any]]:
    rows = await admin.pool.fetch(
        """SELECT a.id, a.email, a.locked_until > now() AS locked, ae.created_at
           FROM console_account_environments ae JOIN console_accounts a ON a.id = ae.account_id
           WHERE ae.env_id = $1 ORDER BY lower(a.email)""",
        env_id,
    )
    return [dict(r) for r in rows]


async def _page(
    console: ConsoleDep, admin: Admin, status: int = 200, **extra: Any
) -> Response[str]:
    context: dict[str, Any] = {"problem": "", "notice": "", "secret": None, **extra}
    return console.render(
        "settings/page.html",
        status=status,
        keys=await _optional(console, "/v1/keys"),
        identity=await _optional(console, "/v1/identity-verification"),
        webhooks=(await console.api.get("/v1/webhooks"))["webhooks"],
        segments=(await console.api.get("/v1/segments"))["segments"],
        accounts=await _accounts(admin, console.session.env_id),
        **context,
    )


@get("/settings", include_in_schema=False)
async def settings_page(console: ConsoleDep, admin: Admin) -> Response[str]:
    return await _page(console, admin)


@post("/settings/keys/{kind:str}/rotate", include_in_schema=False, status_code=200)
async def rotate_key(console: ConsoleDep, admin: Admin, kind: FromPath[str]) -> Response[str]:
    try:
        rotated = await console.api.post(f"/v1/keys/{quote(kind, safe='')}/rotate", {})
    except ApiFailure as exc:
        return await _page(console, admin, exc.status, problem=exc.message)
    return await _page(console, admin, notice=f"New {kind} key made.", secret=rotated)


@post("/settings/identity", include_in_schema=False, status_code=200)
async def identity_change(console: ConsoleDep, admin: Admin) -> Response[str]:
    """Turn identity verification on or off, or rotate its secret (the identity API). A secret
    made by either is shown this once."""
    form = await console.request.form()
    action = str(form.get("action", ""))
    try:
        if action in ("enable", "disable"):
            changed = await console.api.put(
                "/v1/identity-verification", {"enabled": action == "enable"}
            )
            state = "on" if action == "enable" else "off"
            secret = {"secret": changed["secret"]} if changed.get("secret") else None
            return await _page(
                console, admin, notice=f"Identity verification is {state}.", secret=secret
            )
        if action == "rotate":
            rotated = await console.api.post("/v1/identity-verification/rotate-secret", {})
            return await _page(
                console,
                admin,
                notice="New identity secret made; the previous one keeps verifying tokens "
                "until the time shown under Identity verification.",
                secret={"secret": rotated["secret"]},
            )
    except ApiFailure as exc:
        return await _page(console, admin, exc.status, problem=exc.message)
    return await _page(console, admin, 422, problem=f"Unknown action {action!r}.")


@post("/settings/webhooks", include_in_schema=False, status_code=200)
async def webhook_change(console: ConsoleDep, admin: Admin) -> Response[Any]:
    """Create, pause / resume, rotate the secret of, or delete a webhook (the webhooks API)."""
    form = await console.request.form()
    action = str(form.get("action", "create"))
    hook = quote(str(form.get("id", "")), safe="")
    secret: Any = None
    try:
        if action == "create":
            chosen = [str(s) for s in form.getall("segments", [])]
            events = [str(e) for e in form.getall("events", [])] or ["entered", "exited"]
            body = {"url": str(form.get("url", "")).strip(), "events": events}
            if chosen:
                body["segments"] = chosen
            secret = await console.api.post("/v1/webhooks", body)
        elif action in ("pause", "resume"):
            await console.api.patch(f"/v1/webhooks/{hook}", {"active": action == "resume"})
        elif action == "rotate":
            secret = await console.api.post(f"/v1/webhooks/{hook}/rotate-secret")
        elif action == "delete":
            await console.api.delete(f"/v1/webhooks/{hook}")
        elif action == "retry":
            delivery = quote(str(form.get("delivery", "")), safe="")
            await console.api.post(f"/v1/webhooks/{hook}/deliveries/{delivery}/retry")
    except ApiFailure as exc:
        return await _page(console, admin, exc.status, problem=exc.message)
    if secret is not None:
        return await _page(console, admin, notice="Webhook saved.", secret=secret)
    return Redirect("/settings#webhooks", status_code=303)


@get("/settings/webhooks/{hook:str}/deliveries", include_in_schema=False)
async def deliveries(console: ConsoleDep, hook: FromPath[str]) -> Response[str]:
    body = await console.api.get(f"/v1/webhooks/{quote(hook, safe='')}/deliveries", limit=20)
    return console.render("settings/deliveries.html", hook=hook, deliveries=body["deliveries"])


@post("/settings/accounts", include_in_schema=False, status_code=200)
async def account_change(console: ConsoleDep, admin: Admin) -> Response[Any]:
    """Give an account access to this environment (created with the password when new),
    or take the access away (never your own)."""
    form = await console.request.form()
    env_id = console.session.env_id
    if env_id is None:
        return console.message("Refused", "This account has no environment.", 403)
    if remove := str(form.get("remove", "")):
        if remove == str(console.session.account_id):
            return await _page(console, admin, 422, problem="You cannot remove your own access.")
        await admin.pool.execute(
            "DELETE FROM console_account_environments WHERE env_id = $1 AND account_id = $2",
            env_id,
            int(remove) if remove.isdigit() else 0,
        )
        return Redirect("/settings#accounts", status_code=303)
    try:
        async with admin.pool.acquire() as conn:
            created = await add_to_environment(
                conn, str(form.get("email", "")), str(form.get("password", "")), env_id
            )
    except AccountError as exc:
        return await _page(console, admin, 422, problem=str(exc))
    what = "created" if created else "existing account given access (password unchanged)"
    return await _page(console, admin, notice=f"{form.get('email')}: {what}.")
