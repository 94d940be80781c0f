"""Signing in and out, sessions, CSRF, lock-out and environment access, in a real browser."""

from __future__ import annotations

import re

import asyncpg
import httpx
from playwright.async_api import BrowserContext, Page, expect

from services.admin.console.accounts import MAX_FAILURES, grant
from shared.environments import EnvironmentKeys, ensure_environment
from tests.conftest import ServiceStack
from tests.console.conftest import Account, session_client, shoot, sign_in


async def test_wrong_password_is_refused_and_the_right_one_signs_in(
    page: Page, account: Account
) -> None:
    await page.goto("/")
    await expect(page).to_have_url(re.compile(r"/sign-in"))
    await shoot(page, "sign-in")
    await sign_in(page, account.email, "not the password")
    await expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
    await expect(page.get_by_role("link", name="Segments")).to_have_count(0)
    await shoot(page, "sign-in-refused")

    await sign_in(page, account.email, account.password)
    await expect(page.get_by_role("heading", name="Segments")).to_be_visible()
    for name in ("Users", "Segments", "Imports", "Tags", "Attributes", "Settings"):
        await expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()


async def test_no_data_without_a_session(context: BrowserContext, stack: ServiceStack) -> None:
    page = await context.new_page()
    for path in ("/", "/segments", "/users", "/imports", "/tags", "/settings", "/users/u1"):
        await page.goto(path)
        await expect(page).to_have_url(re.compile(r"/sign-in"))
        await expect(page.get_by_label("Password")).to_be_visible()
    async with httpx.AsyncClient(base_url=stack.url("admin")) as client:
        assert (await client.get("/v1/segments")).status_code == 401
        client.cookies.set("segments_session", "forged")
        assert (await client.get("/v1/segments")).status_code == 401
        assert (await client.get("/segments/_table")).status_code == 303


async def test_the_session_reaches_the_json_api_and_changes_need_the_csrf_token(
    signed_in: Page, stack: ServiceStack, env: EnvironmentKeys
) -> None:
    csrf = await signed_in.locator("meta[name=csrf-token]").get_attribute("content")
    assert csrf
    async with session_client(stack, await signed_in.context.cookies()) as client:
        listed = await client.get("/v1/segments")
        assert listed.status_code == 200
        assert [s["key"] for s in listed.json()["segments"]] == ["all-users"]
        body = {"name": "Beta", "kind": "manual"}
        refused = await client.post("/v1/segments", json=body)
        assert refused.status_code == 403
        assert refused.json()["field"] == "x-csrf-token"
        wrong = await client.post("/v1/segments", json=body, headers={"X-CSRF-Token": "x"})
        assert wrong.status_code == 403
        assert len((await client.get("/v1/segments")).json()["segments"]) == 1
        made = await client.post("/v1/segments", json=body, headers={"X-CSRF-Token": csrf})
        assert made.status_code == 201, made.text
    async with httpx.AsyncClient(
        base_url=stack.url("admin"), headers={"Authorization": f"Bearer {env.secretKey}"}
    ) as by_key:
        keys = [s["key"] for s in (await by_key.get("/v1/segments")).json()["segments"]]
        assert keys == ["all-users", "beta"]


async def test_repeated_failures_lock_the_account(page: Page, account: Account) -> None:
    for _ in range(MAX_FAILURES):
        await sign_in(page, account.email, "guess")
        await expect(page.get_by_role("alert")).to_be_visible()
    await sign_in(page, account.email, account.password)
    await expect(page.get_by_role("alert")).to_contain_text("locked")
    await expect(page.get_by_role("link", name="Segments")).to_have_count(0)


async def test_sign_out_ends_the_session(signed_in: Page, stack: ServiceStack) -> None:
    cookies = await signed_in.context.cookies()
    await signed_in.get_by_role("button", name="Sign out").click()
    await expect(signed_in.get_by_label("Password")).to_be_visible()
    async with session_client(stack, cookies) as client:
        assert (await client.get("/v1/segments")).status_code == 401
    await signed_in.goto("/segments")
    await expect(signed_in).to_have_url(re.compile(r"/sign-in"))


async def test_an_account_sees_only_its_environments(
    signed_in: Page, account: Account, db: asyncpg.Pool, stack: ServiceStack
) -> None:
    async with db.acquire() as conn:
        other = await ensure_environment(conn, f"other-{account.id}")
        await conn.execute(
            """INSERT INTO segments (env_id, key, name, kind) VALUES ($1, 'secret-b', 'B only',
               'manual')""",
            other.id,
        )
    switch = signed_in.get_by_label("Environment")
    await expect(switch.locator("option")).to_have_count(1)
    csrf = await signed_in.locator("meta[name=csrf-token]").get_attribute("content")
    async with session_client(stack, await signed_in.context.cookies()) as client:
        refused = await client.post(
            "/environment", data={"csrf": csrf or "", "env": str(other.id), "back": "/segments"}
        )
        assert refused.status_code == 403
        segments = (await client.get("/v1/segments")).json()["segments"]
        assert "secret-b" not in [s["key"] for s in segments]

    async with db.acquire() as conn:
        await grant(conn, account.id, [other.id])
    await signed_in.reload()
    await switch.select_option(label=other.name)
    await expect(signed_in.get_by_role("link", name="B only")).to_be_visible()
    await expect(switch).to_have_value(str(other.id))


async def test_signing_in_and_reaching_the_navigation_by_keyboard_alone(
    page: Page, account: Account
) -> None:
    await page.goto("/sign-in")
    await expect(page.get_by_label("Email")).to_be_focused()  # autofocus
    await page.keyboard.type(account.email)
    await page.keyboard.press("Tab")
    await page.keyboard.type(account.password)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Segments")).to_be_visible()
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    for _ in range(3):  # the brand, then Users, then Segments
        await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Segments", exact=True)).to_be_focused()
    await page.keyboard.press("Shift+Tab")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Users")).to_be_visible()


async def test_cookies_are_secure_behind_a_tls_proxy_and_not_over_plain_http(
    stack: ServiceStack,
) -> None:
    """uvicorn takes the scheme from a trusted proxy's X-Forwarded-Proto (the stack's proxy
    is 127.0.0.1, trusted by default), and the cookie follows it."""
    async with httpx.AsyncClient(base_url=stack.url("admin")) as client:
        plain = await client.get("/sign-in")
        proxied = await client.get("/sign-in", headers={"X-Forwarded-Proto": "https"})
    assert plain.status_code == proxied.status_code == 200
    plain_cookie = plain.headers["set-cookie"].lower()
    assert "segments_signin=" in plain_cookie
    assert "secure" not in plain_cookie
    assert "; secure" in proxied.headers["set-cookie"].lower()
