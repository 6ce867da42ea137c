"""The jobs page in a browser: history a page at a time, kept current by the event feed,
with downloads and cancels."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.core.deps import Deps
from tests.browser.conftest import screenshot
from tests.conftest import JobFactory, WorkerRun
from tests.e2e.export_files import LABELS, seed_records

OLD = 30  # ended jobs from before: two pages (25 a page)
PAGE = 25
EXPORT = {"dataset": "bookkeeping_records", "format": "csv", "account_id": "main"}


@pytest.fixture
async def http(live_server: str, auth: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """Another client of the same Ferry (a script, a colleague's tab)."""
    async with httpx.AsyncClient(base_url=live_server, headers=auth, timeout=20) as client:
        yield client


async def test_the_jobs_page_follows_the_history_live(
    page: Any,
    sign_in_url: str,
    deps: Deps,
    make_job: JobFactory,
    run_worker: WorkerRun,
    http: httpx.AsyncClient,
) -> None:
    await seed_records(deps, "acme", "main", 30)
    for _ in range(OLD):
        await make_job(status="cancelled", params={"format": "json", "columns": ["status"]})
    await page.goto(sign_in_url)
    await page.get_by_role("link", name="Jobs", exact=True).click()
    rows = page.locator("table.jobs tbody tr")
    await rows.nth(PAGE - 1).wait_for()
    assert await rows.count() == PAGE
    await page.get_by_role("button", name="Show older jobs").click()
    await rows.nth(OLD - 1).wait_for()
    assert await rows.count() == OLD
    assert await page.get_by_role("button", name="Show older jobs").is_hidden()

    # A job started elsewhere appears on top by itself, and follows its states.
    job = (await http.post("/v1/exports", json=EXPORT)).json()
    row = page.locator(f"tr[data-id='{job['id']}']")
    await row.get_by_text("Queued").wait_for()
    assert await rows.first.get_attribute("data-id") == job["id"]
    await run_worker()
    await row.get_by_text("Ready").wait_for()
    assert "30 rows" in await row.inner_text()
    assert "download in 7 days" in await row.inner_text()
    await screenshot(page, "jobs", at=page.get_by_role("heading", name="Jobs"))

    async with page.expect_download() as info:
        await row.get_by_role("button", name="Download").click()
    data = await asyncio.to_thread(Path(await (await info.value).path()).read_text)
    assert data.splitlines()[0].startswith(LABELS["ebay_order_id"])
    assert len(data.splitlines()) == 31

    # Cancel a waiting one from its row.
    waiting = (await http.post("/v1/exports", json={**EXPORT, "format": "json"})).json()
    other = page.locator(f"tr[data-id='{waiting['id']}']")
    await other.get_by_role("button", name="Cancel").click()
    await other.get_by_text("Cancelled").wait_for()
    assert (await http.get(f"/v1/jobs/{waiting['id']}")).json()["status"] == "cancelled"
