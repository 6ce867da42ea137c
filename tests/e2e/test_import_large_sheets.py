"""A sheet large enough to be cut into parts (``readers.typed``) imports as any other.

The reader cuts a large sheet as it unpacks it and sends the first records while the
last are still being parsed; a sheet whose parts disagree with its description is read
again, whole. A user sees neither: the same totals, preview and amounts either way.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import pytest
import xlsxwriter

from services.core import demo
from services.core.deps import Deps
from services.core.imports.readers import typed
from tests.conftest import WorkerRun
from tests.e2e.imports_helpers import XLSX, Client, imported, records

pytestmark = pytest.mark.parametrize("storage_backend", ["local"], indirect=True)

ROWS = 12_000  # about 5 MB of sheet XML: more than ``typed.MIN_BYTES``
LABELS = ["Order Number", "Sale Date", "Item Title", "Quantity", "Sold For", "Fees"]


def workbook(note_at: int | None = None, column: int = 11) -> tuple[bytes, dict[int, int]]:
    """The orders as a seller's tool writes them (inline strings, real dates), and each
    line's price in cents; ``note_at``: a note further right than the table, on that
    record's row."""
    out = io.BytesIO()
    book = xlsxwriter.Workbook(out, {"constant_memory": True})
    sheet = book.add_worksheet("Orders")
    dates = book.add_format({"num_format": "yyyy-mm-dd"})
    sheet.write_row(0, 0, [*LABELS, "Shipping", "Cost", "Status"])
    prices: dict[int, int] = {}
    for r, record in enumerate(demo.records("org", "main", ROWS), start=1):
        order, day, item, qty, price, fees, ship, cost, status = record[2:]
        sheet.write_string(r, 0, str(order))
        sheet.write_datetime(r, 1, day, dates)
        sheet.write_string(r, 2, str(item))
        sheet.write_number(r, 3, qty)
        for c, amount in ((4, price), (5, fees), (6, ship), (7, cost)):
            sheet.write_number(r, c, amount / 100)  # type: ignore[operator]
        sheet.write_string(r, 8, str(status))
        if r == note_at:
            sheet.write_string(r, column, "checked by hand")
        prices[r + 1] = price  # type: ignore[assignment]
    book.close()
    return out.getvalue(), prices


async def test_a_large_sheet_imports_with_every_record_and_exact_amounts(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    content, prices = workbook()
    with zipfile.ZipFile(io.BytesIO(content)) as zf:  # large enough to be cut into parts
        assert zf.getinfo("xl/worksheets/sheet1.xml").file_size > typed.MIN_BYTES
    doc = await imported(client, auth, run_worker, content, filename="big.xlsx", content_type=XLSX)
    assert doc["errors"] == []
    await _committed_exactly(client, auth, run_worker, deps, doc, prices, "A1:I12001")


async def test_a_large_sheet_whose_parts_disagree_is_read_again_whole(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    # A note right of every column the sheet's first rows have: its parts are wider
    # than the sheet as described, so the worker opens the workbook again, whole.
    content, prices = workbook(note_at=ROWS - 100)
    doc = await imported(client, auth, run_worker, content, filename="big.xlsx", content_type=XLSX)
    assert [(e["line"], e["field"]) for e in doc["errors"]] == [(ROWS - 99, None)]
    assert doc["errors"][0]["message"] == "has 12 values; the header has 9"
    await _committed_exactly(client, auth, run_worker, deps, doc, prices, "A1:L12001", invalid=1)


async def _committed_exactly(
    client: Client,
    auth: dict[str, str],
    run_worker: WorkerRun,
    deps: Deps,
    doc: dict[str, Any],
    prices: dict[int, int],
    used: str,
    invalid: int = 0,
) -> None:
    """The import validated with every record; committed, the amounts are the file's."""
    assert doc["status"] == "validated", doc.get("error")
    valid = ROWS - invalid
    assert doc["totals"] == {"rows": ROWS, "valid": valid, "invalid": invalid, "skipped_lines": 0}
    assert doc["source"]["sheets"][0]["range"] == used
    assert doc["source"]["sheets"][0]["rows"] == ROWS
    assert [row["line"] for row in doc["preview"][:3]] == [2, 3, 4]
    url = f"/v1/imports/{doc['id']}/commit"
    response = await client.post(url, headers=auth, json={"on_error": "skip"})
    assert response.status_code == 202, response.text
    await run_worker()
    stored = await records(deps)
    assert len(stored) == valid
    skipped = {e["line"] for e in doc["errors"]}
    expected = sum(price for line, price in prices.items() if line not in skipped)
    assert sum(r["sale_price_cents"] for r in stored) == expected


async def test_a_stray_cell_far_right_in_a_part_is_refused_naming_the_range(
    client: Client, auth: dict[str, str], run_worker: WorkerRun
) -> None:
    # Its part alone would ask for 10,000 rows of 16,384 cells: the reader dies loading
    # it, and the workbook is read again whole, where the guard names the range.
    content, _ = workbook(note_at=ROWS - 100, column=16_383)
    doc = await imported(client, auth, run_worker, content, filename="big.xlsx", content_type=XLSX)
    assert doc["status"] == "failed"
    assert "uses the range A1:XFD12001" in doc["error"]["message"]
