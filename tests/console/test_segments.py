"""The Segments pages in a real browser: the condition builder with its live preview, saving,
validation on the offending node, manual members."""

from __future__ import annotations

import re
from typing import Any

from playwright.async_api import Locator, Page, expect

from tests.console.conftest import shoot
from tests.e2e.conftest import Api, eventually

TWO_GROUPS = {
    "all": [
        {
            "any": [
                {"attribute": "plan", "op": "is", "value": "pro"},
                {"attribute": "plan", "op": "is", "value": "enterprise"},
            ]
        },
        {
            "any": [
                {"attribute": "logins", "op": "gte", "value": 5},
                {"tag": {"key": "Department", "value": "Sales"}},
            ]
        },
    ]
}


async def _people(api: Api) -> None:
    for i in range(12):
        plan = ("free", "pro", "enterprise")[i % 3]
        extra: dict[str, Any] = {"tags": ["Department:Sales"]} if i % 4 == 0 else {}
        await api.identify(
            f"u{i}", {"plan": plan, "logins": i, "email": f"u{i}@example.com"}, **extra
        )
    await eventually(lambda: _all_in(api, 12))


async def _all_in(api: Api, n: int) -> bool:
    resp = await api.admin.get("/v1/segments/all-users")
    return bool(resp.json()["memberCount"] == n)


async def _attribute_row(group: Locator, index: int, name: str, op: str, value: str) -> None:
    await group.get_by_role("button", name="Add condition").first.click()
    row = group.locator(":scope > .row").nth(index)
    await row.get_by_label("Attribute", exact=True).fill(name)
    await row.get_by_label("Attribute", exact=True).press("Tab")
    await row.get_by_label(re.compile(r"^Operator")).select_option(op)
    if value:
        await row.get_by_label("Value", exact=True).fill(value)


async def test_a_segment_with_two_groups_previews_what_the_api_counts(
    signed_in: Page, api: Api
) -> None:
    await _people(api)
    expected = await api.admin.post("/v1/segments/preview", json={"conditions": TWO_GROUPS})
    expected_count = expected.json()["count"]
    assert 0 < expected_count < 12

    page = signed_in
    await page.get_by_role("link", name="New segment").click()
    await expect(page.locator("#segment-form[data-ready=true]")).to_have_count(1)
    await page.get_by_label("Name", exact=True).fill("Engaged paying users")
    root = page.locator("#builder > .group")
    await root.get_by_role("button", name="Add group").first.click()
    await root.get_by_role("button", name="Add group").first.click()
    first, second = root.locator(":scope > .group").nth(0), root.locator(":scope > .group").nth(1)
    await _attribute_row(first, 0, "plan", "is", "pro")
    await _attribute_row(first, 1, "plan", "is", "enterprise")
    await _attribute_row(second, 0, "logins", "gte", "5")
    await second.get_by_role("button", name="Add condition").first.click()
    tag_row = second.locator(":scope > .row").nth(1)
    await tag_row.get_by_label("Condition", exact=True).select_option("tag")
    await tag_row.get_by_label("Tag key", exact=True).fill("Department")
    await tag_row.get_by_label(re.compile(r"^Tag value")).fill("Sales")

    await expect(page.locator("#preview-count")).to_have_text(str(expected_count))
    await expect(page.locator("#preview-sample li")).to_have_count(min(expected_count, 20))
    await shoot(page, "segment-new")

    await page.get_by_role("button", name="Save segment").click()
    await expect(page.get_by_role("heading", name="Engaged paying users")).to_be_visible()
    saved = (await api.admin.get("/v1/segments/engaged-paying-users")).json()
    assert saved["conditions"] == TWO_GROUPS

    async def counted() -> bool:
        body = (await api.admin.get("/v1/segments/engaged-paying-users")).json()
        return bool(body["status"] == "ready" and body["memberCount"] == expected_count)

    await eventually(counted)
    await expect(page.locator("#member-count")).to_have_text(str(expected_count), timeout=10_000)
    members = page.get_by_role("list", name="Members").get_by_role("link")
    await expect(members).to_have_count(expected_count, timeout=10_000)
    await shoot(page, "segment-detail")
    await page.get_by_role("link", name="Segments", exact=True).click()
    await expect(page.get_by_role("link", name="Engaged paying users")).to_be_visible()
    await shoot(page, "segments")


async def test_an_invalid_condition_is_shown_on_its_row_and_nothing_is_saved(
    signed_in: Page, api: Api
) -> None:
    await api.identify("v1", {"plan": "pro", "logins": 3})
    page = signed_in
    await page.goto("/segments/_new")
    await expect(page.locator("#segment-form[data-ready=true]")).to_have_count(1)
    await page.get_by_label("Name", exact=True).fill("Broken")
    root = page.locator("#builder > .group")
    await _attribute_row(root, 0, "plan", "is", "pro")
    await _attribute_row(root, 1, "plan", "regex", "(unclosed")
    bad_row = root.locator(":scope > .row").nth(1)
    await expect(bad_row.locator(".node-error")).to_contain_text("regex")
    await expect(root.locator(":scope > .row").nth(0).locator(".node-error")).to_have_count(0)
    await page.get_by_role("button", name="Save segment").click()
    await expect(bad_row.locator(".node-error")).to_be_visible()
    await expect(page.locator("#form-error")).to_contain_text("condition")
    keys = [s["key"] for s in (await api.admin.get("/v1/segments")).json()["segments"]]
    assert "broken" not in keys


async def test_manual_segment_members_are_added_by_id_or_email_and_removed(
    signed_in: Page, api: Api
) -> None:
    await api.identify("m1", {"email": "m1@example.com"})
    await api.identify("m2", {"email": "m2@example.com"})
    await eventually(lambda: api.profile("m2"))
    page = signed_in
    await page.goto("/segments/_new?kind=manual")
    await page.get_by_label("Name", exact=True).fill("Pilot group")
    await page.get_by_role("radio", name=re.compile("Manual")).check()
    await page.get_by_role("button", name="Save segment").click()
    await expect(page.get_by_role("heading", name="Pilot group")).to_be_visible()

    await page.get_by_label(re.compile("^Add users")).fill("m1\nm2@example.com, nobody@example.com")
    await page.get_by_role("button", name="Add to segment").click()
    members = page.get_by_role("list", name="Members")
    await expect(members.get_by_role("link", name="m1")).to_be_visible()
    await expect(members.get_by_role("link", name="m2")).to_be_visible()
    await expect(page.get_by_role("status")).to_contain_text("nobody@example.com")
    await shoot(page, "segment-manual")
    await page.get_by_role("button", name="Remove m1").click()
    await expect(members.get_by_role("link", name="m1")).to_have_count(0)
    body = (await api.admin.get("/v1/segments/pilot-group/members")).json()
    assert body["userIds"] == ["m2"]


async def test_segments_keyed_like_console_pages_open(signed_in: Page, api: Api) -> None:
    """Keys start with a letter or digit, so the console's own pages (``_new``, ``_table``)
    never hide a segment: ``new`` and ``table`` are segments like any other."""
    for key in ("new", "table"):
        await api.create_segment(key, {"attribute": "plan", "op": "is", "value": key})
    page = signed_in
    for key in ("new", "table"):
        await page.goto(f"/segments/{key}")
        await expect(page.get_by_role("heading", name=key, exact=True)).to_be_visible()
        await expect(page.locator("#segment-form")).to_have_count(0)
