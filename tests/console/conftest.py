"""Console tests: headless Chromium (Debian's package, driven by Playwright) against the real
running stack. One browser per test session; each test gets a fresh context (cookies) and its
own environment and console account.

Every page a test visits can be photographed at 1,280 and 390 px (``shoot``): the PNGs go to
``.artifacts/screenshots/`` for people to look at, and the same call checks that the page does
not overflow sideways at 390 px and that every control has a label.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from services.admin.console.accounts import save_account
from shared.environments import EnvironmentKeys
from tests.conftest import ROOT, ServiceStack
from tests.e2e.conftest import api  # noqa: F401 (the fixture: the services as the env sees them)

SCREENSHOTS = ROOT / ".artifacts" / "screenshots"
# generous bounds for "eventually visible" on a loaded CI machine (not performance checks)
expect.set_options(timeout=15_000)
WIDTHS = (1280, 390)
PASSWORD = "correct horse battery staple"  # noqa: S105 (a test account)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=path, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Account:
    email: str
    password: str
    id: int


@pytest.fixture
async def account(db: asyncpg.Pool, env: EnvironmentKeys) -> Account:
    """A console account that sees the test's environment only."""
    email = f"person-{secrets.token_hex(4)}@example.com"
    async with db.acquire() as conn:
        account_id = await save_account(conn, email, PASSWORD, [env.id])
    return Account(email, PASSWORD, account_id)


@pytest.fixture
async def context(browser: Browser, stack: ServiceStack) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(
        base_url=stack.url("admin"), viewport={"width": 1280, "height": 900}
    )
    ctx.set_default_timeout(15_000)
    try:
        yield ctx
    finally:
        await ctx.close()


@pytest.fixture
async def page(context: BrowserContext) -> Page:
    return await context.new_page()


async def sign_in(page: Page, email: str, password: str) -> None:
    await page.goto("/")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


@pytest.fixture
async def signed_in(page: Page, account: Account) -> Page:
    """``page``, signed in as ``account`` (showing the Segments list)."""
    await sign_in(page, account.email, account.password)
    await page.wait_for_url("**/segments")
    return page


_UNLABELLED = """() => {
  const out = [];
  for (const el of document.querySelectorAll('input, select, textarea, button')) {
    if (el.type === 'hidden' || el.closest('[hidden], dialog:not([open])')) continue;
    const named = (el.labels && el.labels.length) || el.getAttribute('aria-label')
      || el.getAttribute('aria-labelledby') || el.title
      || (el.tagName === 'BUTTON' && el.textContent.trim());
    if (!named) out.push(el.outerHTML.slice(0, 120));
  }
  return out;
}"""


async def shoot(page: Page, name: str) -> None:
    """Screenshots of the page at each width, and the checks that go with them: no sideways
    overflow at 390 px, every visible control labelled."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert await page.evaluate(_UNLABELLED) == [], f"unlabelled controls on {name}"
    for width in WIDTHS:
        await page.set_viewport_size({"width": width, "height": 900})
        await page.wait_for_timeout(100)  # layout settles
        overflow = await page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1, f"{name} overflows sideways by {overflow}px at {width}px"
        await page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
    await page.set_viewport_size({"width": 1280, "height": 900})


def session_client(stack: ServiceStack, page_cookies: list[Any]) -> httpx.AsyncClient:
    """An HTTP client carrying the browser's cookies (to call the JSON API as the page does)."""
    jar = {c["name"]: c["value"] for c in page_cookies}
    return httpx.AsyncClient(base_url=stack.url("admin"), cookies=jar, timeout=30)
