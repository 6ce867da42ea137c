"""The export page in a browser: a direct download, a saved preset, and a background
export followed live to its notification and its file."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from services.core.deps import Deps
from tests.browser.conftest import screenshot
from tests.conftest import TokenFactory, WorkerRun
from tests.e2e.export_files import PRESETS, check_file, records, seed_records

BIG = 20_000  # over the test limit of 1,000: a background export


async def test_a_small_export_downloads_at_once_with_a_saved_preset(
    page: Any, make_token: TokenFactory, deps: Deps
) -> None:
    await seed_records(deps, "acme", "small", 40)
    # Signing in by pasting a token; a wrong one is refused with the API's reason.
    await page.goto("/console")
    await page.get_by_label("Bearer token").fill(make_token(ttl=-60))
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("alert").get_by_text("the token has expired").wait_for()
    await page.get_by_label("Bearer token").fill(make_token())
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("heading", name="Export").wait_for()
    await page.get_by_label("Account").fill("small")
    for name in ("Cost", "Fees", "Shipping", "Qty", "Status"):
        await page.get_by_label(name, exact=True).uncheck()
    await page.get_by_label("Save this selection as a preset").fill("Margins")
    await page.get_by_role("button", name="Save preset").click()
    await page.get_by_text("Saved the preset “Margins”.").wait_for()
    preset = page.get_by_label("Preset", exact=True)
    assert await preset.locator("option:checked").inner_text() == "Margins"
    saved = await deps.db.fetch("SELECT name, columns FROM export_presets WHERE user_id = 'alice'")
    columns = ["ebay_order_id", "sale_date", "item_name", "sale_price", "profit"]
    assert [(r["name"], list(r["columns"])) for r in saved] == [("Margins", columns)]

    async with page.expect_download() as info:
        await page.get_by_role("button", name="Export", exact=True).click()
    download = await info.value
    assert download.suggested_filename.endswith(".csv")
    data = await asyncio.to_thread(Path(await download.path()).read_bytes)
    check_file("csv", data, columns, await records(deps, account="small"))
    await page.get_by_text("Downloaded").wait_for()


async def test_a_large_export_runs_in_the_background_and_notifies_when_hidden(
    page: Any, sign_in_url: str, deps: Deps, run_worker: WorkerRun
) -> None:
    await seed_records(deps, "acme", "main", BIG)
    await page.goto(sign_in_url)
    assert "token" not in page.url  # the fragment left the address bar at once
    await page.get_by_label("Account").fill("main")
    await page.get_by_label("Preset", exact=True).select_option(label="Financial")
    await page.get_by_label("Excel (XLSX)").check()
    await page.get_by_role("button", name="Export", exact=True).click()

    card = page.locator("[data-job]")
    await card.get_by_text("Queued").wait_for()
    assert "more than a direct download allows (1,000)" in await card.inner_text()
    await page.evaluate("window.__setHidden(true)")  # the person switched tabs
    worker = asyncio.create_task(run_worker())
    try:
        # Live progress from the job's events: some rows done, not all, a rate, time left.
        await page.wait_for_function(
            """() => {
              const bar = document.querySelector('[data-job] progress');
              return bar && bar.value > 0 && bar.value < bar.max;
            }"""
        )
        text = await card.locator(".progress-text").inner_text()
        assert f"of {BIG:,} rows" in text, text
        assert "rows/s" in text, text
        assert "left" in text, text
        await screenshot(page, "export-in-progress")
    finally:
        await worker

    await page.wait_for_function("window.__notifications.length > 0")
    [note] = await page.evaluate("window.__notifications")
    assert note["title"] == "Export ready"
    assert f"({BIG:,} rows)" in note["body"]
    await card.get_by_role("button", name="Download").wait_for()

    # Clicking the notification brings the tab back and saves the file.
    await page.evaluate("window.__setHidden(false)")
    async with page.expect_download() as info:
        await page.evaluate("window.__lastNotification.dispatchEvent(new Event('click'))")
    download = await info.value
    assert download.suggested_filename.endswith(".xlsx")
    data = await asyncio.to_thread(Path(await download.path()).read_bytes)
    check_file("xlsx", data, PRESETS["financial"], await records(deps))
    await screenshot(page, "export-done")

    # With the tab in view, the next one ends in a toast, not a notification.
    await page.get_by_label("CSV", exact=True).check()
    await page.get_by_role("button", name="Export", exact=True).click()
    await page.locator("[data-job]").nth(1).wait_for()  # the new card, above the first
    await run_worker()
    toast = page.get_by_role("status").filter(has_text="Export ready")
    await toast.get_by_role("button", name="Download").wait_for()
    assert await page.evaluate("window.__notifications.length") == 1
