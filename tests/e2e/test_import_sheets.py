"""Choosing another sheet of an uploaded workbook without uploading it again."""

from __future__ import annotations

from typing import Any

from services.core.deps import Deps
from tests.conftest import WorkerRun
from tests.e2e.imports_helpers import XLSX, Client, imported, orders_csv, records
from tests.workbooks import xlsx

HEADERS = ["ebay_order_id", "sale_date", "item_name", "qty", "sale_price", "status"]


def workbook() -> bytes:
    """'Orders' matches the dataset best; 'March' holds other orders with fewer columns."""
    orders = [HEADERS] + [
        [f"10-0000{i}-00001", "2026-03-01", f"Lamp {i}", 1, 10 + i, "paid"] for i in range(5)
    ]
    march = [["Order Number", "Sale Date", "Item Title", "Sold For"]] + [
        [f"20-0000{i}-00002", "2026-03-02", f"Desk {i}", 100 + i] for i in range(3)
    ]
    return xlsx({"Orders": orders, "Empty": [], "March": march})


async def test_another_sheet_is_read_from_the_stored_upload(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    doc = await imported(
        client, auth, run_worker, workbook(), filename="book.xlsx", content_type=XLSX
    )
    assert doc["status"] == "validated", doc
    assert doc["source"]["sheet"] == "Orders"
    assert doc["totals"]["rows"] == 5
    base = f"/v1/imports/{doc['id']}"
    # A mapping chosen for this sheet's columns…
    remapped = await client.put(f"{base}/mapping", headers=auth, json={"status": None})
    assert remapped.status_code == 202
    await run_worker()

    answer = await client.put(f"{base}/sheet", headers=auth, json={"sheet": "March"})
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "validating"
    assert answer.json()["source"]["sheet"] == "March"
    assert [s["name"] for s in answer.json()["source"]["sheets"]] == ["Orders", "Empty", "March"]
    # Only a validated import changes its sheet.
    again = await client.put(f"{base}/sheet", headers=auth, json={"sheet": "Orders"})
    assert again.status_code == 409
    assert again.json()["job_status"] == "validating"
    await run_worker()

    doc = (await client.get(base, headers=auth)).json()
    assert doc["status"] == "validated", doc
    assert doc["source"]["sheet"] == "March"
    assert doc["source"]["sheet_reason"] == "chosen by the request"
    assert doc["source"]["headers"] == ["Order Number", "Sale Date", "Item Title", "Sold For"]
    assert doc["totals"] == {"rows": 3, "valid": 3, "invalid": 0, "skipped_lines": 0}
    # …is not carried over to the other sheet's.
    assert doc["mapping"]["Item Title"]["field"] == "item_name"
    commit = await client.post(f"{base}/commit", headers=auth)
    assert commit.status_code == 202
    await run_worker()
    assert sorted(r["ebay_order_id"] for r in await records(deps)) == [
        "20-00000-00002",
        "20-00001-00002",
        "20-00002-00002",
    ]


async def test_a_sheet_that_cannot_be_read_is_refused_naming_the_field(
    client: Client, auth: dict[str, str], run_worker: WorkerRun
) -> None:
    doc = await imported(
        client, auth, run_worker, workbook(), filename="book.xlsx", content_type=XLSX
    )
    base = f"/v1/imports/{doc['id']}"

    async def refused(sheet: Any) -> dict[str, Any]:
        answer = await client.put(f"{base}/sheet", headers=auth, json={"sheet": sheet})
        assert answer.status_code == 422, answer.text
        problem: dict[str, Any] = answer.json()
        return problem

    missing = await refused("Nope")
    assert (
        missing["detail"]
        == "the workbook has no sheet 'Nope'; its sheets are 'Orders', 'Empty', 'March'"
    )
    assert missing["errors"] == [{"field": "sheet", "message": "no sheet 'Nope'"}]
    empty = await refused("Empty")
    assert empty["errors"] == [{"field": "sheet", "message": "no records"}]
    blank = await client.put(f"{base}/sheet", headers=auth, json={"sheet": ""})
    assert blank.status_code == 400
    assert blank.json()["errors"][0]["field"] == "sheet"
    # Nothing changed: the import is still validated with its sheet.
    doc = (await client.get(base, headers=auth)).json()
    assert (doc["status"], doc["source"]["sheet"]) == ("validated", "Orders")

    csv = await imported(client, auth, run_worker, orders_csv(3))
    answer = await client.put(
        f"/v1/imports/{csv['id']}/sheet", headers=auth, json={"sheet": "Orders"}
    )
    assert answer.status_code == 422
    assert answer.json()["errors"] == [{"field": "sheet", "message": "not a workbook"}]
