"""The Imports page in a real browser: upload, map the columns, watch it reach Done, download
the rejected rows."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Page, expect

from tests.console.conftest import shoot
from tests.e2e.conftest import Api, eventually

CSV = (
    "user_id,email,plan,Department\n"
    "i1,i1@example.com,pro,Sales\n"
    "i2,i2@example.com,free,IT\n"
    ",,free,IT\n"  # no identifier: rejected
    "i3,i3@example.com,pro,Sales\n"
)


async def test_a_csv_import_is_mapped_and_reaches_done(
    signed_in: Page, api: Api, tmp_path: Path
) -> None:
    upload = tmp_path / "people.csv"
    upload.write_text(CSV)
    page = signed_in
    await page.get_by_role("link", name="Imports", exact=True).click()
    await page.get_by_label("What the file holds").select_option("users")
    await page.get_by_label("CSV file", exact=False).set_input_files(upload)
    await shoot(page, "imports")
    await page.get_by_role("button", name="Upload and map columns").click()
    await expect(page.get_by_role("heading", name="people.csv")).to_be_visible()
    await expect(page.get_by_role("heading", name="Map the columns")).to_be_visible()
    await expect(page.get_by_label("Import user_id as")).to_have_value("userId")
    await page.get_by_label("Import Department as").select_option("tag")
    await shoot(page, "import-mapping")
    await page.get_by_role("button", name="Start import").click()

    await expect(page.locator("#import-progress .badge")).to_have_text("Done", timeout=30_000)
    await expect(page.locator("#count-created")).to_have_text("3")
    await expect(page.locator("#count-rejected")).to_contain_text("1")
    await shoot(page, "import-done")
    async with page.expect_download() as download:
        await page.get_by_role("link", name="Download the rejected rows (CSV)").click()
    rejected = Path(await (await download.value).path()).read_text()
    assert "error" in rejected.splitlines()[0]
    assert len(rejected.strip().splitlines()) == 2

    async def tagged() -> bool:
        profile = await api.profile("i3")
        return bool(
            profile
            and {"key": "Department", "value": "Sales"}
            in [{"key": t["key"], "value": t["value"]} for t in profile["tags"]]
            and profile["attributes"].get("plan") == "pro"
        )

    await eventually(tagged)
    await page.get_by_role("link", name="All imports").click()
    await expect(page.locator("#import-history .badge").first).to_have_text("Done")
