"""Shared by the export tests: seeded records, the rows a user expects, files read back."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import openpyxl
import pyarrow.parquet as pq

from services.core import demo
from services.core.deps import Deps

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
LABELS = {
    "ebay_order_id": "eBay Order ID",
    "sale_date": "Sale Date",
    "item_name": "Item Name",
    "qty": "Qty",
    "sale_price": "Sale Price",
    "fees": "Fees",
    "shipping": "Shipping",
    "cost": "Cost",
    "profit": "Profit",
    "status": "Status",
}
PRESETS = {
    "essential": ["ebay_order_id", "sale_date", "item_name", "sale_price", "status"],
    "financial": [
        "ebay_order_id",
        "sale_date",
        "item_name",
        "sale_price",
        "fees",
        "shipping",
        "cost",
        "profit",
        "status",
    ],
    "all": [
        "ebay_order_id",
        "sale_date",
        "item_name",
        "qty",
        "sale_price",
        "fees",
        "shipping",
        "cost",
        "profit",
        "status",
    ],
}
MONEY = {"sale_price", "fees", "shipping", "cost", "profit"}
TEXT = {"ebay_order_id", "item_name"}
TRICKY = ["+1 555 0100 phone case", "-20% coupon bundle", "@home lamp", "\tTabbed title"]


async def seed_records(deps: Deps, org: str, account: str, rows: int) -> None:
    async with deps.db.acquire() as conn:
        await demo.seed(conn, org_id=org, account_id=account, rows=rows)


async def seed_world(deps: Deps) -> None:
    """acme/main with 300 records (some soft-deleted, some formula-like), plus neighbours."""
    await seed_records(deps, "acme", "main", 300)
    await seed_records(deps, "acme", "other", 20)
    await seed_records(deps, "globex", "main", 10)
    ids = await deps.db.fetch(
        "SELECT id FROM bookkeeping_records WHERE org_id = 'acme' AND account_id = 'main' "
        "ORDER BY id LIMIT 8"
    )
    for record, title in zip(ids[:4], TRICKY, strict=True):
        await deps.db.execute(
            "UPDATE bookkeeping_records SET item_name = $2 WHERE id = $1", record["id"], title
        )
    await deps.db.execute(
        "UPDATE bookkeeping_records SET deleted_at = now() WHERE id = ANY($1::bigint[])",
        [r["id"] for r in ids[4:8]],
    )


Record = dict[str, Any]


async def records(
    deps: Deps, *, org: str = "acme", account: str | None = "main", live: bool = True
) -> list[Record]:
    """The dataset's records as plain values, in export order (sale date, id)."""
    rows = await deps.db.fetch(
        "SELECT * FROM bookkeeping_records WHERE org_id = $1 "
        "AND ($2::text IS NULL OR account_id = $2) AND (deleted_at IS NULL OR NOT $3) "
        "ORDER BY sale_date, id",
        org,
        account,
        live,
    )
    out = []
    for r in rows:
        out.append(
            {
                "ebay_order_id": r["ebay_order_id"],
                "sale_date": r["sale_date"],
                "item_name": r["item_name"],
                "qty": r["qty"],
                "sale_price": r["sale_price_cents"],
                "fees": r["fees_cents"],
                "shipping": r["shipping_cents"],
                "cost": r["cost_cents"],
                "profit": r["sale_price_cents"]
                - r["fees_cents"]
                - r["shipping_cents"]
                - r["cost_cents"],
                "status": r["status"],
                "deleted": r["deleted_at"] is not None,
            }
        )
    return out


def where(rows: list[Record], keep: Callable[[Record], bool]) -> list[Record]:
    return [r for r in rows if keep(r)]


def neutral(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def as_text(name: str, value: Any) -> str:
    """A value as the CSV shows it."""
    if name in MONEY:
        return f"{Decimal(value) / 100:.2f}"
    if name in TEXT:
        return neutral(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def as_json(name: str, value: Any) -> Any:
    if name in MONEY:
        return value / 100
    if name in TEXT:
        return neutral(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def as_cell(name: str, value: Any) -> Any:
    if name in MONEY:
        return value / 100
    if name in TEXT:
        return neutral(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)  # noqa: DTZ001 - as openpyxl reads it
    return value


def read_csv(data: bytes, columns: list[str], expected: list[Record]) -> None:
    """The CSV has the labels as header and exactly the expected rows."""
    table = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert table[0] == [LABELS[c] for c in columns]
    assert table[1:] == [[as_text(c, r[c]) for c in columns] for r in expected]


def read_json(data: bytes, columns: list[str], expected: list[Record], *, lines: bool) -> None:
    if lines:
        assert data.endswith(b"\n") or not expected
        items = [json.loads(line) for line in data.decode().splitlines()]
    else:
        items = json.loads(data)
        assert isinstance(items, list)
    assert items == [{c: as_json(c, r[c]) for c in columns} for r in expected]


def excel_text(value: Any) -> Any:
    """A string cell as Excel shows it: ``_xHHHH_`` is the escape of one character.

    openpyxl hands the stored text over as it is; Excel (and both engines) use this
    escape for characters XML cannot hold, and for a literal ``_xHHHH_``.
    """
    if not isinstance(value, str):
        return value
    return re.sub(r"_x([0-9A-Fa-f]{4})_", lambda m: chr(int(m[1], 16)), value)


def read_xlsx(data: bytes, columns: list[str], expected: list[Record]) -> None:
    """Labels in a bold frozen header, money as currency numbers, dates as dates, text as text."""
    ws = openpyxl.load_workbook(io.BytesIO(data)).active
    assert ws is not None
    assert ws.freeze_panes == "A2"
    header = [c.value for c in ws[1]]
    assert header == [LABELS[c] for c in columns]
    assert all(c.font.b for c in ws[1])
    body = list(ws.iter_rows(min_row=2))
    assert len(body) == len(expected)
    for cells, record in zip(body, expected, strict=True):
        for cell, name in zip(cells, columns, strict=True):
            want = as_cell(name, record[name])
            assert excel_text(cell.value) == want, (name, cell.value, want)
            if name in MONEY:
                assert cell.data_type == "n"
                assert "0.00" in cell.number_format
                assert "$" in cell.number_format
            elif name == "sale_date":
                assert cell.is_date
            elif isinstance(want, str):
                assert cell.data_type == "s"  # a string cell, never a formula
    widths = [ws.column_dimensions[chr(ord("A") + i)].width for i in range(len(columns))]
    assert all(8 <= w <= 62 for w in widths), widths


# Arrow types of the Parquet columns, as pyarrow names them.
ARROW = {"ebay_order_id": "string", "sale_date": "date32[day]", "item_name": "string"}
ARROW |= {"qty": "int64", "status": "string"} | dict.fromkeys(MONEY, "decimal128(12, 2)")


def as_arrow(name: str, value: Any) -> Any:
    if name in MONEY:
        return Decimal(value).scaleb(-2)
    if name in TEXT:
        return neutral(value)
    return value


def read_parquet(data: bytes, columns: list[str], expected: list[Record]) -> None:
    """Columns named by field and typed (dates, decimal money, int64), values as stored."""
    table = pq.read_table(io.BytesIO(data))
    assert [(f.name, str(f.type)) for f in table.schema] == [(c, ARROW[c]) for c in columns]
    assert table.to_pylist() == [{c: as_arrow(c, r[c]) for c in columns} for r in expected]


def check_file(fmt: str, data: bytes, columns: list[str], expected: list[Record]) -> None:
    if fmt == "parquet":
        read_parquet(data, columns, expected)
    elif fmt == "csv":
        read_csv(data, columns, expected)
    elif fmt in ("json", "ndjson"):
        read_json(data, columns, expected, lines=fmt == "ndjson")
    else:
        read_xlsx(data, columns, expected)
