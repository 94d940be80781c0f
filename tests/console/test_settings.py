"""Tags, Attributes and Settings pages in a real browser."""

from __future__ import annotations

import re
import time

import asyncpg
import jwt
from playwright.async_api import Page, expect

from services.admin.console.accounts import sign_in
from tests.console.conftest import shoot
from tests.e2e.conftest import Api, eventually


async def test_tags_are_created_with_their_segment_and_renamed(signed_in: Page, api: Api) -> None:
    await api.identify("t1", {"plan": "pro"}, tags=["Region:Europe"])
    await eventually(lambda: api.profile("t1"))
    page = signed_in
    await page.get_by_role("link", name="Tags", exact=True).click()
    await page.get_by_label("Key", exact=True).fill("Department")
    await page.get_by_label("Value", exact=True).fill("Sales")
    await page.get_by_label(re.compile("Auto-create")).check()
    await page.get_by_role("button", name="Create tag").click()
    await expect(page.get_by_role("link", name="department-sales")).to_be_visible()
    await expect(page.get_by_role("link", name="1 users tagged Region: Europe")).to_be_visible()
    await shoot(page, "tags")
    tags = (await api.admin.get("/v1/tags")).json()["tags"]
    assert {(t["key"], t["value"]) for t in tags} == {("Region", "Europe"), ("Department", "Sales")}


async def test_an_attribute_type_is_corrected_and_another_declared(
    signed_in: Page, api: Api
) -> None:
    await api.identify("a1", {"zip": "75001"})
    await eventually(lambda: api.profile("a1"))
    page = signed_in
    await page.get_by_role("link", name="Attributes", exact=True).click()
    await page.get_by_label("Type of zip", exact=True).select_option("number")
    await page.get_by_role("button", name="Save the type of zip").click()
    await expect(page.get_by_role("status")).to_contain_text("zip is now number")
    await shoot(page, "attributes")
    listed = (await api.admin.get("/v1/attributes")).json()["attributes"]
    assert [(a["name"], a["type"], a["declared"]) for a in listed] == [("zip", "number", True)]
    await page.get_by_label("Name", exact=True).fill("renews_on")
    await page.get_by_label("Type", exact=True).select_option("datetime")
    await page.get_by_role("button", name="Declare").click()
    await expect(page.get_by_role("status")).to_contain_text("renews_on is now datetime")
    listed = (await api.admin.get("/v1/attributes")).json()["attributes"]
    assert ("renews_on", "datetime", True) in [
        (a["name"], a["type"], a["declared"]) for a in listed
    ]


async def test_settings_add_a_webhook_and_an_account(signed_in: Page, api: Api) -> None:
    page = signed_in
    await page.get_by_role("link", name="Settings", exact=True).click()
    await page.get_by_label(re.compile(r"^URL")).fill("http://127.0.0.1:9/hook")
    await page.get_by_role("button", name="Add webhook").click()
    await expect(page.locator("#shown-secret")).to_be_visible()
    hooks = (await api.admin.get("/v1/webhooks")).json()["webhooks"]
    assert [h["url"] for h in hooks] == ["http://127.0.0.1:9/hook"]

    await page.get_by_label("Email", exact=True).fill("colleague@example.com")
    await page.get_by_label(re.compile(r"^Password")).fill("another long password")
    await page.get_by_role("button", name="Add account").click()
    await expect(page.get_by_role("status")).to_contain_text("created")
    await shoot(page, "settings")
    await page.get_by_label("Email", exact=True).fill("newbie@example.com")
    await page.get_by_label(re.compile(r"^Password")).fill("short")
    await page.get_by_role("button", name="Add account").click()
    await expect(page.get_by_role("alert")).to_contain_text("at least 8")


async def test_adding_an_existing_account_never_changes_its_password(
    signed_in: Page, api: Api, db: asyncpg.Pool
) -> None:
    page = signed_in
    await page.goto("/settings")
    await page.get_by_label("Email", exact=True).fill("keeper@example.com")
    await page.get_by_label(re.compile(r"^Password")).fill("the first password")
    await page.get_by_role("button", name="Add account").click()
    await expect(page.get_by_role("status")).to_contain_text("created")
    await page.get_by_label("Email", exact=True).fill("keeper@example.com")
    await page.get_by_label(re.compile(r"^Password")).fill("a takeover attempt")
    await page.get_by_role("button", name="Add account").click()
    await expect(page.get_by_role("status")).to_contain_text("password unchanged")
    assert (await sign_in(db, "keeper@example.com", "the first password")).account_id
    assert (await sign_in(db, "keeper@example.com", "a takeover attempt")).account_id is None


async def test_identity_verification_is_switched_on_rotated_and_off(
    signed_in: Page, api: Api
) -> None:
    page = signed_in
    await page.goto("/settings")
    await page.get_by_role("button", name="Turn identity verification on").click()
    await expect(page.get_by_role("status").first).to_contain_text("Identity verification is on")
    first = await page.locator("#shown-secret").inner_text()
    state = (await api.admin.get("/v1/identity-verification")).json()
    assert (state["enabled"], state["secretSet"]) == (True, True)

    async def refused_without_token() -> bool:
        resp = await api.ingest.post("/v1/identify", json={"userId": "v1", "traits": {}})
        return resp.status_code == 401

    await eventually(refused_without_token)
    signed = jwt.encode({"sub": "v1", "iat": int(time.time())}, first, algorithm="HS256")
    body = {"userId": "v1", "traits": {"a": 1}, "identityToken": signed}
    assert (await api.ingest.post("/v1/identify", json=body)).status_code == 200

    await page.get_by_role("button", name="Rotate the identity secret").click()
    second = await page.locator("#shown-secret").inner_text()
    assert second != first
    await expect(page.locator("#identity + p + dl")).to_contain_text("Previous secret")
    await shoot(page, "settings-identity")
    state = (await api.admin.get("/v1/identity-verification")).json()
    assert state["previousSecretValidUntil"] is not None

    await page.get_by_role("button", name="Turn identity verification off").click()
    await expect(page.get_by_role("status").first).to_contain_text("Identity verification is off")
    assert (await api.admin.get("/v1/identity-verification")).json()["enabled"] is False
    await expect(page.locator("#shown-secret")).to_have_count(0)
