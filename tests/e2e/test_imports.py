"""Imports through HTTP and a real worker, with the sample files of real sellers."""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from pathlib import Path

import pytest

from services.core.deps import Deps
from services.core.events import job_stream
from services.core.imports import pipeline
from tests.conftest import WorkerRun
from tests.e2e.imports_helpers import (
    DATA,
    XLSX,
    Client,
    download,
    event_types,
    imported,
    job_row,
    orders_csv,
    records,
)

pytestmark = pytest.mark.parametrize("storage_backend", ["local", "s3"], indirect=True)


async def test_errors_are_reported_with_the_lines_a_person_sees(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    expected = json.loads((DATA / "orders_with_errors.expected.json").read_text())
    doc = await imported(client, auth, run_worker, (DATA / "orders_with_errors.csv").read_bytes())
    assert doc["status"] == "validated", doc
    assert doc["totals"] == {"rows": 60, "valid": 53, "invalid": 7, "skipped_lines": 0}
    got: dict[str, list[str]] = {}
    for error in doc["errors"]:
        got.setdefault(str(error["line"]), []).append(f"{error['field']}: {error['message']}")
    assert got == expected["invalid_lines"]
    # The preview shows the rows as mapped, the bad value as it was typed.
    by_line = {row["line"]: row for row in doc["preview"]}
    assert by_line[11]["errors"] == {"qty": "not a whole number"}
    assert by_line[11]["values"]["qty"] == "two"
    assert by_line[2]["values"]["sale_price"] == "157.94"
    formula = by_line[expected["literal_formula_line"]]
    assert formula["errors"] == {}
    assert formula["values"]["item_name"] == '=HYPERLINK("http://evil.example","click")'

    text = (await download(client, auth, doc["links"]["error_report"])).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["_row"] for r in rows] == ["6", "11", "16", "21", "26", "31", "36"]
    assert rows[1]["qty"] == "two"
    assert rows[1]["_errors"] == "qty: not a whole number"
    assert rows[4]["_errors"] == "ebay_order_id: duplicate of line 25"
    header = "ebay_order_id,sale_date,item_name,qty,sale_price,status,_row,_errors"
    assert list(rows[0]) == header.split(",")
    assert "validated" in await event_types(deps, doc["id"])
    assert await records(deps) == []


async def test_the_fixed_error_report_imports_cleanly(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    doc = await imported(client, auth, run_worker, (DATA / "orders_with_errors.csv").read_bytes())
    commit = await client.post(
        f"/v1/imports/{doc['id']}/commit", headers=auth, json={"on_error": "skip"}
    )
    assert commit.status_code == 202
    await run_worker()
    report = (await download(client, auth, doc["links"]["error_report"])).decode("utf-8-sig")
    fixed = (
        report.replace(",two,", ",2,")
        .replace("2026-02-30", "2026-02-28")
        .replace(",free,", ",9.99,")
        .replace(",0,376.13", ",1,376.13")
        .replace("lost-in-space", "shipped")
        .replace('\n"",2026-02-19', "\n99-00000-00001,2026-02-19")  # "" is an empty value
        .replace("16-10611-72567,2026-06-24", "16-10611-72599,2026-06-24")
    )
    again = await imported(client, auth, run_worker, fixed.encode(), filename="fixed.csv")
    assert again["totals"] == {"rows": 7, "valid": 7, "invalid": 0, "skipped_lines": 0}, again[
        "errors"
    ]
    assert again["mapping"]["_row"] is None
    assert again["mapping"]["_errors"] is None
    assert again["links"]["error_report"] is None
    assert (await client.post(f"/v1/imports/{again['id']}/commit", headers=auth)).status_code == 202
    await run_worker()
    assert len(await records(deps)) == 60


async def test_a_marketplace_report_is_understood(
    client: Client, auth: dict[str, str], run_worker: WorkerRun
) -> None:
    content = (DATA / "marketplace_orders_report.csv").read_bytes()
    doc = await imported(client, auth, run_worker, content, filename="report.csv")
    source = doc["source"]
    assert source["encoding"] == "utf-8-sig"
    assert source["encoding_reason"] == "byte order mark"
    assert source["delimiter"] == ","
    assert source["header_line"] == 2
    assert source["headers"][:2] == ["Sales Record Number", "Order Number"]
    mapping = doc["mapping"]
    assert mapping["Order Number"] == {
        "field": "ebay_order_id",
        "confidence": 1.0,
        "reason": "alias",
    }
    assert mapping["Sales Record Number"] is None  # never the order id
    assert mapping["Buyer Username"] is None
    assert mapping["Sold For"]["field"] == "sale_price"
    assert mapping["Shipping And Handling"]["field"] == "shipping"
    assert mapping["Total Price"] is None  # the price is taken by "Sold For"
    assert doc["unmapped_required"] == []
    assert doc["totals"] == {"rows": 250, "valid": 250, "invalid": 0, "skipped_lines": 4}
    skipped = {entry["line"]: entry["reason"] for entry in doc["skipped"]["lines"]}
    assert skipped[1] == "blank line before the header"
    assert skipped[253] == "blank line"
    assert skipped[254].startswith("report footer")
    assert skipped[255].startswith("report footer")
    assert doc["skipped"]["lines"][2]["text"].startswith("250 record(s) downloaded")
    first = doc["preview"][0]
    assert first["line"] == 3
    assert first["values"]["sale_date"] == "2026-09-11"  # Sep-11-26
    assert first["values"]["sale_price"] == "90.04"  # $90.04
    assert first["values"]["shipping"] == "12.99"
    assert first["values"]["status"] == "shipped"  # Shipped
    assert doc["formats"]["sale_date"]["formats"] == {"Mon-DD-YY": 250}
    # In the file's column order, not in the order the database keeps object keys.
    assert list(mapping) == source["headers"]
    mapped = [m["field"] for m in mapping.values() if m is not None]
    assert mapped[:3] == ["ebay_order_id", "item_name", "qty"]
    assert list(first["values"])[: len(mapped)] == mapped


async def test_windows_1252_with_semicolons_and_decimal_commas(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    content = (DATA / "orders_windows1252_semicolon.csv").read_bytes()
    doc = await imported(client, auth, run_worker, content)
    assert doc["source"]["encoding"] == "windows-1252"
    assert doc["source"]["delimiter"] == ";"
    assert doc["totals"]["valid"] == 120
    assert doc["formats"]["sale_date"]["order"] == "day-first"
    assert "28/03/2026" in doc["formats"]["sale_date"]["order_reason"]
    assert doc["formats"]["sale_price"] == {"decimal_mark": "comma"}
    first = doc["preview"][0]["values"]
    assert first["sale_date"] == "2026-03-28"
    assert first["sale_price"] == "39.05"
    assert first["fees"] == "5.47"
    assert (await client.post(f"/v1/imports/{doc['id']}/commit", headers=auth)).status_code == 202
    await run_worker()
    names = {r["item_name"] for r in await records(deps)}
    assert "Crème Brûlée Torch Kit" in names  # accents survive the encoding fallback
    assert "Pokémon Booster Box (Scarlet/Violet)" in names


async def test_quoted_newlines_keep_line_numbers_right(
    client: Client, auth: dict[str, str], run_worker: WorkerRun
) -> None:
    content = (DATA / "orders_quoted_newlines.csv").read_bytes()
    doc = await imported(client, auth, run_worker, content)
    assert doc["totals"]["rows"] == 80
    lines = [row["line"] for row in doc["preview"][:3]]
    assert lines == [2, 4, 5]  # the first record spans lines 2 and 3
    assert doc["preview"][0]["values"]["item_name"].endswith("\nsecond line, with comma")
    # An error after the multi-line records is reported at the line a person sees.
    text = content.decode()
    broken = text.replace("1,312.36,refunded", "1,lots,refunded")
    doc = await imported(client, auth, run_worker, broken.encode())
    physical = next(n for n, line in enumerate(broken.splitlines(), 1) if "1,lots,refunded" in line)
    assert [(e["line"], e["field"]) for e in doc["errors"]] == [(physical, "sale_price")]


async def test_an_xlsx_workbook_with_real_dates_and_two_sheets(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    content = (DATA / "orders.xlsx").read_bytes()
    doc = await imported(
        client, auth, run_worker, content, filename="orders.xlsx", content_type=XLSX
    )
    assert doc["source"]["kind"] == "xlsx"
    assert doc["source"]["sheet"] == "Orders"
    sheets = doc["source"]["sheets"]
    assert [(s["name"], s["chosen"]) for s in sheets] == [("Orders", True), ("Notes", False)]
    assert sheets[0]["score"] > sheets[1]["score"]
    assert sheets[0]["reason"] == "7 of 9 fields matched, every required one"
    assert sheets[0]["range"] == "A1:G301"
    assert doc["source"]["sheet_reason"] == "the only sheet with records"
    assert doc["totals"] == {"rows": 300, "valid": 300, "invalid": 0, "skipped_lines": 0}
    first = doc["preview"][0]
    assert first["line"] == 2
    assert first["values"]["sale_date"] == "2026-09-29"
    assert first["values"]["qty"] == 2
    assert first["values"]["fees"] == "54.65"
    other = await imported(
        client, auth, run_worker, content, filename="orders.xlsx", content_type=XLSX, sheet="Notes"
    )
    assert other["status"] == "failed"
    assert "no records" in other["error"]["message"] or "header" in other["error"]["message"]
    missing = await imported(
        client, auth, run_worker, content, filename="o.xlsx", content_type=XLSX, sheet="Nope"
    )
    assert (
        missing["error"]["message"]
        == "the workbook has no sheet 'Nope'; its sheets are 'Orders', 'Notes'"
    )
    assert (await client.post(f"/v1/imports/{doc['id']}/commit", headers=auth)).status_code == 202
    await run_worker()
    rows = {r["ebay_order_id"]: r for r in await records(deps)}
    assert len(rows) == 300
    assert rows["18-56993-95463"]["sale_date"] == date(2026, 9, 29)
    assert rows["18-56993-95463"]["sale_price_cents"] == 41021
    assert rows["18-56993-95463"]["fees_cents"] == 5465


async def test_a_raw_body_upload_and_idempotent_replays(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    content = orders_csv(5)
    headers = {**auth, "Content-Type": "text/csv", "Idempotency-Key": "upload-1"}
    url = "/v1/imports?dataset=bookkeeping_records&account_id=main&filename=five.csv"
    first = await client.post(url, headers=headers, content=content)
    assert first.status_code == 202
    assert first.headers["location"] == f"/v1/imports/{first.json()['id']}"
    assert first.json()["status"] == "uploaded"
    assert first.json()["source"] == {"filename": "five.csv", "bytes": len(content)}
    again = await client.post(url, headers=headers, content=content)
    assert again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    other = await client.post(url, headers=headers, content=orders_csv(6))
    assert other.status_code == 422
    assert other.json()["errors"][0]["field"] == "Idempotency-Key"
    await run_worker()
    doc = (await client.get(f"/v1/imports/{first.json()['id']}", headers=auth)).json()
    assert doc["status"] == "validated"
    assert doc["totals"]["valid"] == 5
    count = await deps.db.fetchval("SELECT count(*) FROM jobs WHERE kind = 'import'")
    assert count == 1


async def test_commit_is_all_or_nothing_unless_told_to_skip(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    doc = await imported(client, auth, run_worker, (DATA / "orders_with_errors.csv").read_bytes())
    refused = await client.post(f"/v1/imports/{doc['id']}/commit", headers=auth)
    assert refused.status_code == 409
    problem = refused.json()
    assert problem["totals"] == {"rows": 60, "valid": 53, "invalid": 7, "skipped_lines": 0}
    assert problem["error_report"] == f"/v1/imports/{doc['id']}/errors.csv"
    assert "7 of 60 rows are invalid" in problem["detail"]
    assert await records(deps) == []

    key = {**auth, "Idempotency-Key": "commit-1"}
    url = f"/v1/imports/{doc['id']}/commit"
    accepted = await client.post(url, headers=key, json={"on_error": "skip"})
    assert accepted.status_code == 202
    assert accepted.json()["status"] == "committing"
    replay = await client.post(url, headers=key, json={"on_error": "skip"})
    assert replay.status_code == 200
    changed = await client.post(url, headers=key, json={"on_error": "abort"})
    assert changed.status_code == 422
    await run_worker()
    done = (await client.get(f"/v1/imports/{doc['id']}", headers=auth)).json()
    assert done["status"] == "committed"
    batch = done["batch"]
    assert batch["rows"] == 53
    assert batch["skipped"] == 7
    rows = await records(deps)
    assert len(rows) == 53
    assert {str(r["import_batch_id"]) for r in rows} == {batch["id"]}
    # Committing again never inserts twice.
    second = await client.post(url, headers=auth, json={"on_error": "skip"})
    assert second.status_code == 200
    assert second.json()["batch"]["id"] == batch["id"]
    await run_worker()
    assert len(await records(deps)) == 53
    types = await event_types(deps, doc["id"])
    assert types[-1] == "committed"
    assert types.count("committed") == 1
    job = await job_row(deps, doc["id"])
    assert job["attempt"] == 2  # one validation, one commit


async def test_an_order_already_in_the_account_is_an_error(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    doc = await imported(client, auth, run_worker, orders_csv(3))
    await client.post(f"/v1/imports/{doc['id']}/commit", headers=auth)
    await run_worker()
    again = await imported(client, auth, run_worker, orders_csv(4))
    assert again["totals"] == {"rows": 4, "valid": 1, "invalid": 3, "skipped_lines": 0}
    assert again["errors"][0] == {
        "line": 2,
        "field": "ebay_order_id",
        "message": "already exists for this account",
    }
    report = (await download(client, auth, again["links"]["error_report"])).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(report)))
    assert [r["ebay_order_id"] for r in rows] == [
        "10-00000-00000",
        "10-00001-00007",
        "10-00002-00014",
    ]
    # Another account of the same org may hold the same order ids.
    other = await imported(client, auth, run_worker, orders_csv(4), account_id="second")
    assert other["totals"]["invalid"] == 0


async def test_a_changed_mapping_validates_again_and_is_remembered(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    content = b"Order,Day,What,Amount,Notes\n" + b"11-1,2026-01-02,Lamp,12.50,5\n"
    doc = await imported(client, auth, run_worker, content)
    assert doc["mapping"]["Amount"]["field"] == "sale_price"
    assert doc["mapping"]["Notes"] is None
    put = await client.put(
        f"/v1/imports/{doc['id']}/mapping",
        headers=auth,
        json={"Amount": None, "Notes": "sale_price"},
    )
    assert put.status_code == 202
    assert put.json()["status"] == "validating"
    await run_worker()  # a new run: arq takes the same job again
    again = (await client.get(f"/v1/imports/{doc['id']}", headers=auth)).json()
    assert again["status"] == "validated"
    assert again["mapping"]["Notes"] == {
        "field": "sale_price",
        "confidence": 1.0,
        "reason": "chosen",
    }
    assert again["mapping"]["Amount"] is None
    assert again["preview"][0]["values"]["sale_price"] == "5.00"
    assert (await job_row(deps, doc["id"]))["run"] == 1
    types = await event_types(deps, doc["id"])
    assert types.count("validated") == 2

    bad = await client.put(
        f"/v1/imports/{doc['id']}/mapping", headers=auth, json={"Nope": "qty", "Day": "profit"}
    )
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} == {"Nope", "Day"}

    # The same headers, in another order, next time: the accepted mapping comes first.
    later = b"Notes,Amount,Order,Day,What\n" + b"7,3.00,11-2,2026-01-03,Desk\n"
    next_doc = await imported(client, auth, run_worker, later)
    assert next_doc["mapping"]["Notes"] == {
        "field": "sale_price",
        "confidence": 1.0,
        "reason": "remembered",
    }
    assert next_doc["mapping"]["Amount"] is None
    assert next_doc["preview"][0]["values"]["sale_price"] == "7.00"


async def test_progress_and_terminal_events_are_published(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    doc = await imported(client, auth, run_worker, orders_csv(60_000))
    assert doc["totals"]["valid"] == 60_000
    events = await deps.events.read(job_stream(doc["id"]))
    types = [e.type for e in events]
    assert types[0] == "status"
    assert types[-1] == "validated"
    progress = [e.data for e in events if e.type == "progress"]
    assert progress
    assert progress[0]["unit"] == "bytes"
    assert progress[0]["total"] == doc["source"]["bytes"]
    assert events[-1].data["result"]["totals"]["valid"] == 60_000
    await client.post(f"/v1/imports/{doc['id']}/commit", headers=auth)
    await run_worker()
    events = await deps.events.read(job_stream(doc["id"]))
    assert events[-1].type == "committed"
    assert events[-1].data["result"]["batch"]["rows"] == 60_000
    assert any(e.type == "progress" and e.data.get("unit") == "rows" for e in events)


async def test_a_date_order_decided_late_in_the_file_applies_to_every_row(
    client: Client,
    auth: dict[str, str],
    run_worker: WorkerRun,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pipeline, "CHUNK_ROWS", 4)  # the deciding value is chunks away
    rows = [f"1-{i},{1 + i % 12:02d}/{1 + i % 9:02d}/2026,Item,1.00" for i in range(12)]
    rows.append("1-99,25/03/2026,Item,1.00")
    content = ("Order ID,Date,Title,Price\n" + "\n".join(rows) + "\n").encode()
    doc = await imported(client, auth, run_worker, content)
    assert doc["totals"] == {"rows": 13, "valid": 13, "invalid": 0, "skipped_lines": 0}
    assert doc["formats"]["sale_date"]["order"] == "day-first"
    assert "25/03/2026" in doc["formats"]["sale_date"]["order_reason"]
    assert doc["preview"][1]["values"]["sale_date"] == "2026-02-02"
    assert doc["preview"][2]["values"]["sale_date"] == "2026-03-03"
    assert doc["preview"][9]["values"]["sale_date"] == "2026-01-10"  # 10/01: 10 January


async def test_excel_serial_dates_and_the_first_sheet_with_data(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, tmp_path: Path
) -> None:
    import xlsxwriter

    path = tmp_path / "serials.xlsx"
    book = xlsxwriter.Workbook(str(path))
    book.add_worksheet("Cover")  # empty: skipped
    sheet = book.add_worksheet("Data")
    sheet.write_row(0, 0, ["Order Number", "Sale Date", "Item Title", "Sold For", "Notes"])
    sheet.write_row(1, 0, ["0042", 46000, "Lamp", 12.5, 46000])  # a date typed as a number
    sheet.write_row(2, 0, ["0043", "2026-01-31", "Desk", "$1,200.00", "x"])
    book.close()
    doc = await imported(
        client, auth, run_worker, path.read_bytes(), filename="s.xlsx", content_type=XLSX
    )
    assert doc["source"]["sheet"] == "Data"
    assert doc["totals"]["valid"] == 2
    first, second = doc["preview"][0]["values"], doc["preview"][1]["values"]
    assert first["ebay_order_id"] == "0042"  # text keeps its leading zeros
    assert first["sale_date"] == "2025-12-09"  # Excel day 46000
    assert first["sale_price"] == "12.50"
    assert second["sale_price"] == "1200.00"
    assert doc["formats"]["sale_date"]["formats"] == {
        "Excel serial number": 1,
        "YYYY-MM-DD": 1,
    }
