"""The import pages in a browser: a messy file mapped in the table, its invalid cells
shown, committed without them, then rolled back through the edited-records warning."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

from services.core.deps import Deps
from tests.browser.conftest import screenshot
from tests.conftest import WorkerRun
from tests.e2e.imports_helpers import orders_csv
from tests.e2e.test_import_sheets import workbook

DATA = Path(__file__).resolve().parents[1] / "data"
HEADER = "Order No.,Date,Listing,Units,Gross (USD),Status,Notes"
PREAMBLE = ["Orders export - March", ""]  # two lines before the header


def messy_file() -> bytes:
    """orders_with_errors.csv as a shop's report: a title line and a blank line on top,
    headers in the shop's words (one Ferry cannot place), a column it does not need."""
    lines = (DATA / "orders_with_errors.csv").read_text().splitlines()
    body = [f"{line}," for line in lines[1:]]
    body[0] += "gift wrap"
    return ("\n".join([*PREAMBLE, HEADER, *body]) + "\n").encode()


def expected_invalid() -> dict[int, str]:
    """Line (as seen in the messy file) → the field whose cell is wrong."""
    known = json.loads((DATA / "orders_with_errors.expected.json").read_text())
    shift = len(PREAMBLE)
    return {
        int(line) + shift: messages[0].split(":")[0]
        for line, messages in known["invalid_lines"].items()
    }


async def live_records(deps: Deps) -> list[Any]:
    return await deps.db.fetch(
        "SELECT id FROM bookkeeping_records WHERE org_id = 'acme' AND account_id = 'main' "
        "AND deleted_at IS NULL ORDER BY id"
    )


async def test_a_messy_import_is_mapped_committed_and_rolled_back(
    page: Any, sign_in_url: str, deps: Deps, run_worker: WorkerRun, tmp_path: Path
) -> None:
    upload = tmp_path / "march-orders.csv"
    upload.write_bytes(messy_file())
    await page.goto(sign_in_url)

    def section(title: str) -> Any:
        return page.locator("section", has=page.get_by_role("heading", name=title, exact=True))

    await page.get_by_role("link", name="Import", exact=True).click()
    await page.get_by_label("Account").fill("main")
    await page.locator("input[type=file]").set_input_files(upload)
    await page.get_by_role("heading", name="Checking the file").wait_for()
    await run_worker()

    # What Ferry understood, and the column it could not place.
    facts = page.locator("dl.facts")
    await facts.wait_for()
    assert "line 3" in await facts.inner_text()  # the header, under the title lines
    callout = page.get_by_role("alert").filter(has_text="Required fields with no column")
    assert "Sale Price" in await callout.inner_text()
    gross = page.get_by_label("Field for column Gross (USD)")
    assert await gross.input_value() == ""
    assert await page.get_by_label("Field for column Listing").input_value() == "item_name"
    await screenshot(page, "import-mapping", at=section("march-orders.csv"))

    await gross.select_option("sale_price")
    await page.get_by_role("heading", name="Checking the file").wait_for()
    await run_worker()

    # The preview marks exactly the wrong cells, each with its message.
    preview = page.get_by_role("table", name="The first records as they would be imported")
    await preview.wait_for()
    assert await page.get_by_label("Field for column Gross (USD)").input_value() == "sale_price"
    await page.get_by_role("alert").filter(has_text="Required fields").wait_for(state="detached")
    cells = preview.locator("td.cell-invalid")
    shown = {}
    for i in range(await cells.count()):
        cell = cells.nth(i)
        row = cell.locator("xpath=..")
        shown[int(await row.locator("th").inner_text())] = await cell.get_attribute("data-field")
        message = await cell.get_attribute("title")  # the cell tells its message …
        assert message
        assert message in await row.locator("td.error-text").inner_text()  # … and its row
    assert shown == expected_invalid()
    await screenshot(page, "import-preview-errors", at=section("Preview"))

    # Commit the valid rows only: the choice states how many are left out.
    skip = page.get_by_label("Skip the 7 invalid rows")
    await skip.check()
    await page.get_by_role("button", name="Commit").click()
    await page.get_by_role("heading", name="Committing").wait_for()
    await run_worker()
    await page.get_by_text("Committed 53 records, skipped 7 invalid rows").wait_for()
    committed = await live_records(deps)
    assert len(committed) == 53

    # Someone edits one of the imported records; the rollback must say so first.
    edited = committed[10]["id"]
    await deps.db.execute(
        "UPDATE bookkeeping_records SET item_name = item_name || ' (gift)' WHERE id = $1", edited
    )
    await page.get_by_role("main").get_by_role("link", name="Import history").click()
    row = page.locator("tr", has_text="march-orders.csv")
    countdown = row.locator(".countdown")
    await countdown.filter(has_text=re.compile(r"^2[34]:\d\d:\d\d left$")).wait_for()
    await row.get_by_role("button", name="Roll back").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_text(
        "The 53 records that march-orders.csv added will be removed."
    ).wait_for()
    await dialog.get_by_role("button", name="Roll back").click()
    warning = page.get_by_role("dialog", name="1 record was edited since the import")
    await warning.wait_for()
    listed = warning.get_by_role("list", name="Edited records")
    assert await listed.inner_text() == f"Record #{edited}"
    await screenshot(page, "rollback-confirm")
    assert len(await live_records(deps)) == 53  # nothing happened before the confirmation

    await warning.get_by_role("button", name="Roll back anyway").click()
    # The rollback is a job now (202): once the api has handed it over, a worker runs it.
    deadline = time.monotonic() + 20
    while await deps.db.fetchval("SELECT count(*) FROM jobs WHERE status = 'rolling_back'") == 0:
        assert time.monotonic() < deadline, "the rollback was never requested"
        await asyncio.sleep(0.05)
    await run_worker()
    await row.get_by_text("Rolled back", exact=True).wait_for()
    assert await live_records(deps) == []


async def test_another_sheet_is_chosen_without_uploading_again(
    page: Any, sign_in_url: str, deps: Deps, run_worker: WorkerRun, tmp_path: Path
) -> None:
    upload = tmp_path / "book.xlsx"
    upload.write_bytes(workbook())
    await page.goto(sign_in_url)
    await page.get_by_role("link", name="Import", exact=True).click()
    await page.get_by_label("Account").fill("main")
    await page.locator("input[type=file]").set_input_files(upload)
    await page.get_by_role("heading", name="Checking the file").wait_for()
    await run_worker()

    sheet = page.get_by_label("Sheet", exact=True)
    await sheet.wait_for()
    assert await sheet.input_value() == "Orders"
    assert await page.locator(".stat", has_text="records").inner_text() == "5\nrecords"
    # The empty sheet is listed but cannot be chosen.
    assert await sheet.locator("option", has_text="Empty").is_disabled()
    await sheet.select_option("March")
    await page.get_by_role("heading", name="Checking the file").wait_for()
    await run_worker()
    await page.get_by_label("Sheet", exact=True).wait_for()
    assert await page.get_by_label("Sheet", exact=True).input_value() == "March"
    assert await page.locator(".stat", has_text="records").inner_text() == "3\nrecords"
    assert await page.get_by_label("Field for column Item Title").input_value() == "item_name"
    # The file went up once: one import, read twice.
    assert await deps.db.fetchval("SELECT count(*) FROM jobs WHERE kind = 'import'") == 1


async def import_and_commit(page: Any, run_worker: WorkerRun, path: Path, mode: str) -> None:
    """Upload ``path`` on the import page, let the worker check it, commit in ``mode``."""
    await page.locator("input[type=file]").set_input_files(path)
    await page.get_by_role("heading", name="Checking the file").wait_for()
    await run_worker()
    await page.get_by_label(mode).check()
    await page.get_by_role("button", name="Commit").click()
    await page.get_by_role("heading", name="Committing").wait_for()
    await run_worker()


async def test_an_upsert_updates_existing_records_and_its_rollback_restores_them(
    page: Any, sign_in_url: str, deps: Deps, run_worker: WorkerRun, tmp_path: Path
) -> None:
    first, second = tmp_path / "february.csv", tmp_path / "march.csv"
    first.write_bytes(orders_csv(4))  # orders 0-3, paid
    second.write_bytes(orders_csv(4, start=2).replace(b",paid", b",shipped"))  # orders 2-5
    await page.goto(sign_in_url)
    await page.get_by_role("link", name="Import", exact=True).click()
    await page.get_by_label("Account").fill("main")
    await import_and_commit(page, run_worker, first, "Add new records only")
    await page.get_by_text("Committed 4 records.").wait_for()

    await page.get_by_role("button", name="Import another file").click()
    await page.locator("input[type=file]").set_input_files(second)
    await page.get_by_role("heading", name="Checking the file").wait_for()
    await run_worker()
    # The commit step says which rows are already there, and what each mode does with them.
    form = page.locator("form", has=page.get_by_role("heading", name="Commit"))
    await form.get_by_text("2 rows name records already in account main").wait_for()
    assert "with 2 invalid rows, nothing would be committed" in await form.inner_text()
    upsert = form.get_by_label("Update existing records (upsert)")
    await upsert.check()
    assert "the 2 records already in the account get this file's values" in (
        await form.inner_text()
    )
    assert "all 4 rows, or none" in await form.inner_text()  # none is invalid now
    await screenshot(page, "import-upsert", at=form)
    await page.get_by_role("button", name="Commit").click()
    await page.get_by_role("heading", name="Committing").wait_for()
    await run_worker()
    await page.get_by_text("Committed 4 records (2 inserted, 2 updated)").wait_for()
    statuses = dict(
        await deps.db.fetch(
            "SELECT ebay_order_id, status FROM bookkeeping_records "
            "WHERE org_id = 'acme' AND account_id = 'main' AND deleted_at IS NULL"
        )
    )
    assert sorted(statuses.values()) == ["paid", "paid", *["shipped"] * 4]

    # The rollback says what it will do: restore the updated records, remove the added.
    await page.get_by_role("main").get_by_role("link", name="Import history").click()
    row = page.locator("tr", has_text="march.csv")
    assert "(2 updated)" in await row.inner_text()
    await row.get_by_role("button", name="Roll back").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_text(
        "The 2 records that march.csv updated will be restored as they were before the import, "
        "and the 2 it added will be removed."
    ).wait_for()
    await screenshot(page, "rollback-upsert")
    await dialog.get_by_role("button", name="Roll back").click()
    deadline = time.monotonic() + 20
    while await deps.db.fetchval("SELECT count(*) FROM jobs WHERE status = 'rolling_back'") == 0:
        assert time.monotonic() < deadline, "the rollback was never requested"
        await asyncio.sleep(0.05)
    await run_worker()
    await row.get_by_text("Rolled back", exact=True).wait_for()
    statuses = dict(
        await deps.db.fetch(
            "SELECT ebay_order_id, status FROM bookkeeping_records "
            "WHERE org_id = 'acme' AND account_id = 'main' AND deleted_at IS NULL"
        )
    )
    assert statuses == {f"10-{i:05d}-{i * 7:05d}": "paid" for i in range(4)}
