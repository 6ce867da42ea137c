"""Every file a seller really has (issue 12.1-12.5), several variants of each: each validates
with the right totals and commits exact amounts — the cents in the table add up to the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest

from services.core.deps import Deps
from tests import workbooks
from tests.conftest import WorkerRun
from tests.e2e.imports_helpers import Client, imported


@dataclass
class Order:
    order_id: str
    day: date
    title: str
    price: int  # cents
    fees: int  # cents


TITLES = ["Lampe für Büro", "Crème brûlée torch", "Smørrebrød board", "Niño poncho", "Desk"]


def orders(n: int = 12) -> list[Order]:
    """Orders with known cents: thousands, a refund (negative), fees with odd cents."""
    out = []
    for i in range(n):
        price = 123456 if i == 0 else (-1234 if i == 1 else 1000 + i * 137)
        out.append(Order(f"21-{i:05d}", date(2026, 3, 1 + i % 28), TITLES[i % 5], price, 5 + i * 3))
    return out


def dollars(cents: int) -> str:
    return f"{abs(cents) // 100:,}.{abs(cents) % 100:02d}"


async def committed_cents(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps, doc: dict[str, Any]
) -> tuple[int, int, int]:
    """Commit the validated import; (records, sum of prices, sum of fees) in the table."""
    answer = await client.post(
        f"/v1/imports/{doc['id']}/commit", headers=auth, json={"on_error": "skip"}
    )
    assert answer.status_code == 202, answer.text
    await run_worker()
    row = await deps.db.fetchrow(
        "SELECT count(*) AS n, sum(sale_price_cents) AS price, sum(fees_cents) AS fees "
        "FROM bookkeeping_records WHERE deleted_at IS NULL"
    )
    assert row is not None
    return int(row["n"]), int(row["price"] or 0), int(row["fees"] or 0)


def expected(rows: list[Order]) -> tuple[int, int, int]:
    return len(rows), sum(o.price for o in rows), sum(o.fees for o in rows)


# --- amounts as a marketplace shows them -----------------------------------------------------

US_FORMS = [
    lambda c: f"US ${dollars(c)}" if c >= 0 else f"-US ${dollars(c)}",
    lambda c: f"${dollars(c)}" if c >= 0 else f"(${dollars(c)})",
    lambda c: f"USD {dollars(c)}" if c >= 0 else f"USD {dollars(c)}-",
    lambda c: f"{dollars(c)} USD" if c >= 0 else f"({dollars(c)})",
    lambda c: f"US$ {dollars(c)}" if c >= 0 else f"US$ -{dollars(c)}",
]


@pytest.mark.parametrize("form", range(len(US_FORMS)))
async def test_amounts_in_the_forms_marketplaces_show(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps, form: int
) -> None:
    rows = orders()
    show = US_FORMS[form]
    lines = ["Order Number,Sale Date,Item Title,Sold For,Fees"] + [
        f'{o.order_id},{o.day.isoformat()},Desk,"{show(o.price)}","{show(o.fees)}"' for o in rows
    ]
    doc = await imported(client, auth, run_worker, ("\r\n".join(lines) + "\r\n").encode())
    assert doc["totals"] == {"rows": 12, "valid": 12, "invalid": 0, "skipped_lines": 0}, doc[
        "errors"
    ]
    assert await committed_cents(client, auth, run_worker, deps, doc) == expected(rows)


async def test_a_currency_that_is_not_the_accounts_is_refused_where_it_is_clear(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    content = (
        "Order Number,Sale Date,Item Title,Sold For\n"
        '1-1,2026-03-01,Lamp,"$12.00"\n'  # any dollar: fine in a USD account
        '1-2,2026-03-01,Desk,"C $12.00"\n'
        '1-3,2026-03-01,Chair,"AU $1,000.00"\n'
        '1-4,2026-03-01,Rug,"£5.00"\n'
        '1-5,2026-03-01,Vase,"12.00 EUR"\n'
        '1-6,2026-03-01,Pen,"US $3.50"\n'
    ).encode()
    doc = await imported(client, auth, run_worker, content)
    assert doc["totals"]["invalid"] == 4
    assert [(e["line"], e["message"]) for e in doc["errors"]] == [
        (3, "in CAD (C$), but this account's currency is USD"),
        (4, "in AUD (AU$), but this account's currency is USD"),
        (5, "in GBP (£), but this account's currency is USD"),
        (6, "in EUR (EUR), but this account's currency is USD"),
    ]
    assert doc["account"] == {"id": "main", "currency": "USD", "time_zone": "UTC"}
    assert await committed_cents(client, auth, run_worker, deps, doc) == (2, 1550, 0)


# --- workbooks: the sheet with the orders, in every format -----------------------------------


def sheet_rows(rows: list[Order], *, typed: bool) -> list[list[Any]]:
    """The orders as a sheet: real dates and numbers, or text as a report writes them."""
    head: list[Any] = ["Order Number", "Sale Date", "Item Title", "Sold For", "Fees"]
    body = [
        [o.order_id, o.day, o.title, o.price / 100, o.fees / 100]
        if typed
        else [o.order_id, o.day.isoformat(), o.title, f"${dollars(o.price)}", str(o.fees / 100)]
        for o in rows
    ]
    if not typed:
        for row, o in zip(body, rows, strict=True):
            if o.price < 0:
                row[3] = f"(${dollars(o.price)})"
    return [head, *body]


SUMMARY = [["Monthly summary", None], ["Total sales", 1234.5], ["Orders", 12]]


async def imported_workbook(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, kind: str, sheets: Any
) -> dict[str, Any]:
    """These sheets written as a workbook of ``kind``, uploaded and validated."""
    content = workbooks.WRITERS[kind](sheets)
    return await imported(
        client,
        auth,
        run_worker,
        content,
        filename=f"orders.{kind}",
        content_type=workbooks.MEDIA_TYPES[kind],
    )


@pytest.mark.parametrize("kind", ["xlsx", "ods"])
async def test_a_long_sheet_of_numbers_and_dates_commits_its_exact_cents(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps, kind: str
) -> None:
    """Whole chunks of numbers and dates cross from the reader process as they are
    (numbers as float64), not as text: the cents still add up to the file's. The xlsx,
    7 MB of sheet XML, is cut into parts loaded typed by fastexcel (``readers.typed``)."""
    rows = orders(25_000)
    grid = sheet_rows(rows, typed=True)
    grid[0].append("Quantity")
    for i, line in enumerate(grid[1:]):
        line.append(float(1 + i % 3))
    doc = await imported_workbook(client, auth, run_worker, kind, {"Orders": grid})
    assert doc["status"] == "validated", doc["error"]
    assert doc["totals"] == {"rows": 25_000, "valid": 25_000, "invalid": 0, "skipped_lines": 0}
    assert await committed_cents(client, auth, run_worker, deps, doc) == expected(rows)
    quantities = await deps.db.fetchval("SELECT sum(qty) FROM bookkeeping_records")
    assert quantities == sum(1 + i % 3 for i in range(25_000))
    late = await deps.db.fetchrow(
        "SELECT sale_date, sale_price_cents FROM bookkeeping_records WHERE ebay_order_id = $1",
        rows[-1].order_id,
    )
    assert late is not None
    assert (late["sale_date"], late["sale_price_cents"]) == (rows[-1].day, rows[-1].price)


@pytest.mark.parametrize("kind", ["xlsx", "xlsb", "xls", "ods"])
@pytest.mark.parametrize("typed", [True, False], ids=["typed-cells", "text-cells"])
async def test_a_workbook_whose_first_sheet_is_a_summary(
    client: Client,
    auth: dict[str, str],
    run_worker: WorkerRun,
    deps: Deps,
    kind: str,
    typed: bool,
) -> None:
    rows = orders()
    if kind == "xlsb" and typed:
        # Our xlsb writer has no date styles: dates go in as Excel day numbers.
        grid = sheet_rows(rows, typed=True)
        for line in grid[1:]:
            line[1] = (line[1] - date(1899, 12, 30)).days
    else:
        grid = sheet_rows(rows, typed=typed)
    sheets = {"Summary": SUMMARY, "Orders": grid, "Notes": [["x"]]}
    doc = await imported_workbook(client, auth, run_worker, kind, sheets)
    assert doc["status"] == "validated", doc["error"]
    source = doc["source"]
    assert (source["kind"], source["sheet"]) == (kind, "Orders")
    assert source["sheet_reason"].startswith("its headers match the dataset best")
    scores = {s["name"]: s["score"] for s in source["sheets"]}
    assert scores["Orders"] > scores["Summary"]
    assert doc["totals"] == {"rows": 12, "valid": 12, "invalid": 0, "skipped_lines": 0}
    assert doc["preview"][0]["values"]["sale_date"] == "2026-03-01"
    assert await committed_cents(client, auth, run_worker, deps, doc) == expected(rows)


async def test_another_sheet_can_be_asked_for_by_name(
    client: Client, auth: dict[str, str], run_worker: WorkerRun
) -> None:
    rows = orders(4)
    content = workbooks.xlsx(
        {"Orders": sheet_rows(rows, typed=True), "Returns": sheet_rows(rows[:2], typed=True)}
    )
    doc = await imported(client, auth, run_worker, content, filename="o.xlsx", sheet="Returns")
    assert doc["source"]["sheet"] == "Returns"
    assert doc["source"]["sheet_reason"] == "chosen by the request"
    assert [s["chosen"] for s in doc["source"]["sheets"]] == [False, True]
    assert doc["totals"]["rows"] == 2


async def test_a_hidden_sheet_is_listed_but_not_chosen(
    client: Client, auth: dict[str, str], run_worker: WorkerRun
) -> None:
    grid = sheet_rows(orders(3), typed=True)
    content = workbooks.xlsx({"Old": grid, "Orders": grid[:3]}, hidden={"Old"})
    doc = await imported(client, auth, run_worker, content, filename="o.xlsx")
    assert doc["source"]["sheet"] == "Orders"
    assert doc["source"]["sheets"][0]["hidden"] is True


# --- CSV from every machine: encodings and line ends -----------------------------------------


@pytest.mark.parametrize(
    ("codec", "label", "ending", "titles"),
    [
        ("mac_roman", "mac-roman", "\r", ["Größe für Bären", "Niño poncho", "Crème brûlée"]),
        ("mac_roman", "mac-roman", "\r\n", ["Weiße Socken", "Cañón pequeño"]),
        ("cp1252", "windows-1252", "\r\n", ["Müsli für Bären", "Smørrebrød æble"]),
        ("cp1252", "windows-1252", "mixed", ["Crème brûlée", "Blåbær øl"]),
        ("cp1250", "windows-1250", "\n", ["Zażółć gęślą jaźń", "Łódź świętokrzyskie"]),
        ("utf-8", "utf-8", "\r", ["Größe für Bären", "Smørrebrød æble"]),
    ],
    ids=[
        "excel-for-mac-cr",
        "mac-roman-crlf",
        "windows-1252-crlf",
        "windows-1252-mixed-ends",
        "windows-1250-lf",
        "utf-8-cr",
    ],
)
async def test_csv_in_legacy_encodings_with_any_line_ends(
    client: Client,
    auth: dict[str, str],
    run_worker: WorkerRun,
    deps: Deps,
    codec: str,
    label: str,
    ending: str,
    titles: list[str],
) -> None:
    rows = orders(10)
    lines = ["Order Number;Sale Date;Item Title;Sold For;Fees"]
    for i, o in enumerate(rows):
        price = f"{o.price / 100:.2f}".replace(".", ",")
        fees = f"{o.fees / 100:.2f}".replace(".", ",")
        lines.append(f"{o.order_id};{o.day:%d/%m/%Y};{titles[i % len(titles)]};{price};{fees}")
    ends = ["\r", "\n", "\r\n"] if ending == "mixed" else [ending]
    text = "".join(line + ends[i % len(ends)] for i, line in enumerate(lines))
    doc = await imported(client, auth, run_worker, text.encode(codec))
    assert doc["source"]["encoding"] == label
    assert doc["totals"] == {"rows": 10, "valid": 10, "invalid": 0, "skipped_lines": 0}
    assert await committed_cents(client, auth, run_worker, deps, doc) == expected(rows)
    stored = {
        r["item_name"] for r in await deps.db.fetch("SELECT item_name FROM bookkeeping_records")
    }
    assert stored == set(titles)


# --- headers in code style; timestamps filling a date ----------------------------------------


async def test_snake_and_camel_case_headers_with_units(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    rows = orders(6)
    lines = ["order_id,createdAt,itemTitle,sale_price_usd,fees_cents,orderStatus"] + [
        f"{o.order_id},{o.day.isoformat()}T10:00:00Z,Desk,{o.price / 100:.2f},{o.fees},Shipped"
        for o in rows
    ]
    doc = await imported(client, auth, run_worker, ("\n".join(lines) + "\n").encode())
    mapped = {h: (m["field"], m.get("unit")) for h, m in doc["mapping"].items() if m}
    assert mapped == {
        "order_id": ("ebay_order_id", None),
        "createdAt": ("sale_date", None),
        "itemTitle": ("item_name", None),
        "sale_price_usd": ("sale_price", "USD"),
        "fees_cents": ("fees", "cents"),
        "orderStatus": ("status", None),
    }
    assert doc["totals"]["valid"] == 6
    assert await committed_cents(client, auth, run_worker, deps, doc) == expected(rows)


async def test_fees_in_cents_in_brackets_are_cents(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    content = b"Order ID,Date,Title,Price,Fees (cents)\n1-1,2026-03-01,Lamp,12.00,1234\n"
    doc = await imported(client, auth, run_worker, content)
    assert doc["mapping"]["Fees (cents)"]["unit"] == "cents"
    assert await committed_cents(client, auth, run_worker, deps, doc) == (1, 1200, 1234)


async def test_a_timestamp_with_a_zone_fills_the_date_in_the_accounts_zone(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    content = (
        b"Order ID,Created At,Title,Price\n"
        b"1-1,2026-03-01T02:30:00+05:00,Lamp,1.00\n"  # 28 Feb 21:30 in UTC
        b"1-2,2026-02-28T23:30:00-08:00,Desk,1.00\n"  # 1 Mar 07:30 in UTC
        b"1-3,2026-03-05 10:00:00 PST,Chair,1.00\n"
        b"1-4,2026-03-06 23:59,Rug,1.00\n"  # no zone: the day written
    )
    doc = await imported(client, auth, run_worker, content)
    assert [p["values"]["sale_date"] for p in doc["preview"]] == [
        "2026-02-28",
        "2026-03-01",
        "2026-03-05",
        "2026-03-06",
    ]
    assert doc["formats"]["sale_date"]["time_zone"] == "UTC"
    await committed_cents(client, auth, run_worker, deps, doc)
    days = await deps.db.fetch("SELECT sale_date FROM bookkeeping_records ORDER BY ebay_order_id")
    assert [r["sale_date"] for r in days] == [
        date(2026, 2, 28),
        date(2026, 3, 1),
        date(2026, 3, 5),
        date(2026, 3, 6),
    ]
