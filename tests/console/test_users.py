"""The Users pages in a real browser: the table, adding selected users to a manual segment,
the filter builder, a profile and why a user is in a segment."""

from __future__ import annotations

import functools
import re

from playwright.async_api import Page, expect

from tests.console.conftest import shoot
from tests.e2e.conftest import Api, eventually


async def test_selected_users_are_added_to_a_manual_segment(signed_in: Page, api: Api) -> None:
    for i in range(4):  # one at a time: the table's default order is the users' creation
        user = f"p{i}"
        await api.identify(user, {"email": f"{user}@example.com", "plan": "pro"})
        await eventually(functools.partial(api.profile, user))
    made = await api.admin.post("/v1/segments", json={"name": "Trainers", "kind": "manual"})
    assert made.status_code == 201
    await eventually(lambda: api.profile("p3"))
    page = signed_in
    await page.get_by_role("link", name="Users", exact=True).click()
    await expect(page.get_by_role("link", name="p3")).to_be_visible()
    await shoot(page, "users")
    rows = page.locator("#user-table tbody tr td:nth-child(2)")
    await expect(rows.first).to_have_text("p0")
    await page.get_by_role("link", name="Sort by user, descending").click()
    await expect(rows.first).to_have_text("p3")
    await expect(page).to_have_url(re.compile(r"sort=-created"))
    await page.get_by_label("Select p1").check()
    await page.get_by_label("Select p3").check()
    await page.get_by_label("Selected users").select_option(label="Trainers")
    await page.get_by_role("button", name="Add to manual segment").click()
    await expect(page.get_by_role("status")).to_contain_text("2 user(s) added to trainers")
    members = (await api.admin.get("/v1/segments/trainers/members")).json()["userIds"]
    assert sorted(members) == ["p1", "p3"]


async def test_chosen_columns_are_kept_for_the_account(signed_in: Page, api: Api) -> None:
    await api.identify("c1", {"email": "c1@example.com", "plan": "pro", "seats": 4})
    await eventually(lambda: api.profile("c1"))
    page = signed_in
    await page.goto("/users")
    headers = page.locator("#user-table thead th")
    await expect(headers.filter(has_text="email")).to_have_count(1)
    await page.get_by_text("Columns", exact=True).click()
    await page.get_by_label("seats").check()
    await page.get_by_label("email").uncheck()
    await page.get_by_role("button", name="Save columns").click()
    await expect(headers.filter(has_text="seats")).to_have_count(1)
    await page.goto("/users")  # a new visit: the account's choice, not the page's state
    await expect(headers.filter(has_text="seats")).to_have_count(1)
    await expect(headers.filter(has_text="email")).to_have_count(0)
    await expect(page.locator("#user-table tbody td").get_by_text("4", exact=True)).to_have_count(1)


async def test_the_filter_is_the_condition_builder_and_saves_as_a_segment(
    signed_in: Page, api: Api
) -> None:
    for i in range(5):
        await api.identify(f"f{i}", {"plan": "pro" if i < 2 else "free"})
    await eventually(lambda: api.profile("f4"))
    page = signed_in
    await page.goto("/users")
    await page.get_by_text("Filter users").click()
    await expect(page.locator("#filter-builder[data-ready=true]")).to_have_count(1)
    root = page.locator("#filter-builder > .group")
    await root.get_by_role("button", name="Add condition").first.click()
    row = root.locator(":scope > .row").first
    await row.get_by_label("Attribute", exact=True).fill("plan")
    await row.get_by_label("Attribute", exact=True).press("Tab")
    await row.get_by_label("Value", exact=True).fill("pro")
    table = page.locator("#user-table")
    await expect(table.get_by_role("link", name=re.compile(r"^f\d$"))).to_have_count(2)
    await expect(page).to_have_url(re.compile(r"filter="))
    await page.get_by_role("link", name="Save as segment").click()
    await expect(page.locator("#segment-form[data-ready=true]")).to_have_count(1)
    await expect(page.locator("#preview-count")).to_have_text("2")


async def test_a_profile_shows_why_the_user_is_in_a_segment(signed_in: Page, api: Api) -> None:
    await api.identify("w1", {"plan": "pro", "seats": 12}, tags=["Region:Europe"])
    await api.ingest.post("/v1/track", json={"userId": "w1", "event": "Clicked Upgrade"})
    await api.create_segment(
        "big-pro",
        {
            "all": [
                {"attribute": "plan", "op": "is", "value": "pro"},
                {"attribute": "seats", "op": "gte", "value": 10},
            ]
        },
    )
    await eventually(lambda: api.member("w1", "big-pro"))
    page = signed_in
    await page.goto("/users/w1")
    await expect(page.get_by_role("heading", name="w1")).to_be_visible()
    segments = page.locator("#user-segments")
    await expect(segments.get_by_role("link", name="big-pro")).to_be_visible()
    item = segments.locator("li", has=page.get_by_role("link", name="big-pro"))
    await item.get_by_text("Why?").click()
    why = item.locator(".why-body")
    await expect(why).to_contain_text("The conditions hold")
    await expect(why).to_contain_text("seats")
    await expect(why.locator(".yes")).to_have_count(3)  # the group and its two leaves
    await expect(page.get_by_text("Region: Europe")).to_be_visible()
    await expect(page.get_by_text("Clicked Upgrade")).to_be_visible()
    await shoot(page, "user-profile")

    await page.get_by_label("Add a tag (Key: Value)").fill("Department: Sales")
    await page.get_by_role("button", name="Add tag").click()
    await expect(page.get_by_text("Department: Sales")).to_be_visible()
    profile = await api.profile("w1")
    assert profile is not None
    assert {(t["key"], t["value"]) for t in profile["tags"]} == {
        ("Region", "Europe"),
        ("Department", "Sales"),
    }


async def test_erasing_a_user_asks_for_confirmation(signed_in: Page, api: Api) -> None:
    await api.identify("gone", {"plan": "free"})
    await eventually(lambda: api.profile("gone"))
    page = signed_in
    await page.goto("/users/gone")
    await page.get_by_role("button", name="Erase user").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_label(re.compile("to confirm")).fill("wrong")
    await dialog.get_by_role("button", name="Erase user").click()
    await expect(page.get_by_text("Type the user's id exactly")).to_be_visible()
    assert await api.profile("gone") is not None
    await page.goto("/users/gone")
    await page.get_by_role("button", name="Erase user").click()
    await dialog.get_by_label(re.compile("to confirm")).fill("gone")
    await dialog.get_by_role("button", name="Erase user").click()
    await expect(page.get_by_role("heading", name="Users")).to_be_visible()
    assert await api.profile("gone") is None
