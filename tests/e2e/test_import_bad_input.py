"""Bad input: each answered with a clear problem or row error, and nothing written."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import pytest

from services.core.deps import Deps
from tests.conftest import TokenFactory, WorkerRun
from tests.e2e.imports_helpers import (
    DATA,
    XLSX,
    Client,
    download,
    event_types,
    imported,
    orders_csv,
    records,
    upload,
)


def workbook(replace: dict[str, bytes], *, add: dict[str, bytes] | None = None) -> bytes:
    """orders.xlsx with some entries replaced or added."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(DATA / "orders.xlsx") as src,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for info in src.infolist():
            dst.writestr(info.filename, replace.get(info.filename, src.read(info.filename)))
        for name, content in (add or {}).items():
            dst.writestr(name, content)
    return out.getvalue()


async def failed_with(
    client: Client,
    auth: dict[str, str],
    run_worker: WorkerRun,
    content: bytes,
    deps: Deps | None = None,
    **kwargs: Any,
) -> str:
    doc = await imported(client, auth, run_worker, content, **kwargs)
    assert doc["status"] == "failed", doc
    assert doc["error"]["type"] == "invalid-input"
    if deps is not None:
        assert (await event_types(deps, doc["id"]))[-1] == "failed"
    message: str = doc["error"]["message"]
    return message


async def nothing_written(deps: Deps) -> None:
    assert await records(deps) == []
    assert await deps.db.fetchval("SELECT count(*) FROM import_batches") == 0
    tables = await deps.db.fetchval(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'import_staging'"
    )
    assert tables == 0


async def test_a_zip_bomb_is_refused_by_the_guard_whatever_the_parser_did(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    bomb = workbook({}, add={"xl/media/huge.xml": b"\0" * (64 * 1024 * 1024)})
    assert len(bomb) < 200_000
    message = await failed_with(
        client, auth, run_worker, bomb, deps, filename="bomb.xlsx", content_type=XLSX
    )
    assert message.startswith("the workbook is refused:")
    assert "zip bomb" in message
    await nothing_written(deps)


async def test_an_xml_entity_bomb_is_refused(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    lol = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
        b'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="1" '
        b'uniqueCount="1"><si><t>&lol3;</t></si></sst>'
    )
    bomb = workbook({"xl/sharedStrings.xml": lol})
    message = await failed_with(
        client, auth, run_worker, bomb, filename="lol.xlsx", content_type=XLSX
    )
    assert "declares a DTD or XML entities" in message
    await nothing_written(deps)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"\x89PNG\r\n\x1a\n" + b"\0" * 200,
            "this is a PNG image, not a CSV file or a spreadsheet (xlsx, xls, xlsb, ods)",
        ),
        (
            b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj",
            "this is a PDF document, not a CSV file or a spreadsheet (xlsx, xls, xlsb, ods)",
        ),
        (
            bytes(range(256)) * 8,
            "this is binary data, not a CSV file or a spreadsheet (xlsx, xls, xlsb, ods)",
        ),
        (b"", "the file is empty"),
    ],
)
async def test_files_that_are_not_tables_are_refused_at_upload(
    client: Client, auth: dict[str, str], deps: Deps, content: bytes, message: str
) -> None:
    response = await upload(client, auth, content, filename="orders.csv")
    assert response.status_code == 422
    problem = response.json()
    assert problem["detail"] == message
    assert problem["errors"] == [{"field": "file", "message": message}]
    assert await deps.db.fetchval("SELECT count(*) FROM jobs") == 0


async def test_a_workbook_sent_as_csv_is_read_as_a_workbook(
    client: Client, auth: dict[str, str], run_worker: WorkerRun
) -> None:
    content = (DATA / "orders.xlsx").read_bytes()
    doc = await imported(client, auth, run_worker, content, filename="orders.csv")
    assert doc["source"]["kind"] == "xlsx"
    assert doc["totals"]["valid"] == 300


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"ebay_order_id,sale_date,item_name,sale_price\r\n", "header row but no records"),
        (b"\n\n   \n", "no header row"),
        (
            b"Order ID,Date,Title,Price,Price\n1,2026-01-01,x,1,2\n",
            "the header 'Price' appears twice (columns 4 and 5); rename one and upload again",
        ),
        (
            ",".join(f"c{i}" for i in range(20_000)).encode() + b"\n" + b"1," * 19_999 + b"1\n",
            "the file has 20,000 columns; Ferry reads at most 500",
        ),
    ],
    ids=["header-only", "blank", "duplicate-headers", "20000-columns"],
)
async def test_files_without_usable_records_fail_validation_clearly(
    client: Client,
    auth: dict[str, str],
    run_worker: WorkerRun,
    deps: Deps,
    content: bytes,
    message: str,
) -> None:
    assert message in await failed_with(client, auth, run_worker, content)
    await nothing_written(deps)


async def test_a_one_megabyte_field_is_a_row_error(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    lines = orders_csv(4).decode().splitlines()
    lines[2] = lines[2].replace("Item 1", "x" * (1024 * 1024))
    doc = await imported(client, auth, run_worker, ("\n".join(lines) + "\n").encode())
    assert doc["status"] == "validated"
    assert doc["totals"] == {"rows": 4, "valid": 3, "invalid": 1, "skipped_lines": 0}
    assert doc["errors"] == [
        {
            "line": 3,
            "field": None,
            "message": "a value is longer than 65,536 characters (the limit); the row was not read",
        }
    ]
    refused = await client.post(f"/v1/imports/{doc['id']}/commit", headers=auth)
    assert refused.status_code == 409
    assert await records(deps) == []


async def test_nul_and_control_characters_are_row_errors(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    content = (
        b"Order ID,Date,Title,Price,Notes\n"
        b"1-1,2026-01-01,Lamp\x00shade,10.00,ok\n"
        b"1-2,2026-01-01,Desk,11.00,n\x00ul in an unmapped column\n"
        b"1-3,2026-01-01,Bell\x07,12.00,\n"
        b"1-4,2026-01-01,Chair,13.00,\n"
    )
    doc = await imported(client, auth, run_worker, content)
    assert doc["totals"] == {"rows": 4, "valid": 2, "invalid": 2, "skipped_lines": 0}
    assert [(e["line"], e["message"]) for e in doc["errors"]] == [
        (2, "contains a control character (NUL)"),
        (4, "contains a control character (U+0007)"),
    ]
    report = (await download(client, auth, doc["links"]["error_report"])).decode("utf-8-sig")
    assert "Lamp\ufffdshade" in report  # shown, never a NUL in the database or the report
    await client.post(f"/v1/imports/{doc['id']}/commit", headers=auth, json={"on_error": "skip"})
    await run_worker()
    assert sorted(r["item_name"] for r in await records(deps)) == ["Chair", "Desk"]


async def test_missing_required_columns_block_the_commit_until_mapped(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    content = b"Order ID,Date,Title,Total\n1-1,2026-01-01,Lamp,10.00\n"
    doc = await imported(client, auth, run_worker, content)
    assert doc["status"] == "validated"
    assert doc["unmapped_required"] == ["sale_price"]
    assert doc["mapping"]["Total"] is None
    refused = await client.post(f"/v1/imports/{doc['id']}/commit", headers=auth)
    assert refused.status_code == 409
    assert refused.json()["unmapped_required"] == ["sale_price"]
    assert "required fields are not mapped: sale_price" in refused.json()["detail"]
    await client.put(f"/v1/imports/{doc['id']}/mapping", headers=auth, json={"Total": "sale_price"})
    await run_worker()
    assert (await client.post(f"/v1/imports/{doc['id']}/commit", headers=auth)).status_code == 202
    await run_worker()
    assert [r["sale_price_cents"] for r in await records(deps)] == [1000]


async def test_another_orgs_import_is_404_everywhere(
    client: Client,
    auth: dict[str, str],
    run_worker: WorkerRun,
    make_token: TokenFactory,
    deps: Deps,
) -> None:
    doc = await imported(client, auth, run_worker, (DATA / "orders_with_errors.csv").read_bytes())
    other = {"Authorization": f"Bearer {make_token(org='globex')}"}
    base = f"/v1/imports/{doc['id']}"
    answers = [
        await client.get(base, headers=other),
        await client.get(f"/v1/jobs/{doc['id']}", headers=other),
        await client.get(f"{base}/errors.csv", headers=other),
        await client.put(f"{base}/mapping", headers=other, json={"qty": None}),
        await client.post(f"{base}/commit", headers=other, json={"on_error": "skip"}),
        await client.post(f"{base}/rollback", headers=other),
        await client.get("/v1/imports/not-a-uuid", headers=auth),
    ]
    assert [a.status_code for a in answers] == [404] * 7
    assert all(a.headers["content-type"].startswith("application/problem+json") for a in answers)
    assert (await client.get(base, headers=auth)).json()["status"] == "validated"


async def test_without_the_write_permission_the_answer_is_403(
    client: Client,
    auth: dict[str, str],
    run_worker: WorkerRun,
    make_token: TokenFactory,
    deps: Deps,
) -> None:
    reader = {"Authorization": f"Bearer {make_token(perms=['bookkeeping_records.read'])}"}
    refused = await upload(client, reader, orders_csv(2))
    assert refused.status_code == 403
    assert "bookkeeping_records.write" in refused.json()["detail"]
    raw = await client.post(
        "/v1/imports?dataset=bookkeeping_records&account_id=main",
        headers={**reader, "Content-Type": "text/csv"},
        content=orders_csv(2),
    )
    assert raw.status_code == 403
    assert await deps.db.fetchval("SELECT count(*) FROM jobs") == 0

    doc = await imported(client, auth, run_worker, orders_csv(2))
    base = f"/v1/imports/{doc['id']}"
    assert (await client.get(base, headers=reader)).status_code == 200  # reading is fine
    answers = [
        await client.put(f"{base}/mapping", headers=reader, json={"qty": None}),
        await client.post(f"{base}/commit", headers=reader),
        await client.post(f"{base}/rollback", headers=reader),
    ]
    assert [a.status_code for a in answers] == [403, 403, 403]
    assert await records(deps) == []
    nobody = {"Authorization": f"Bearer {make_token(perms=[])}"}
    assert (await client.get(base, headers=nobody)).status_code == 403


async def test_upload_form_errors_name_the_field(
    client: Client, auth: dict[str, str], deps: Deps
) -> None:
    response = await upload(client, auth, orders_csv(1), account_id="")
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "account_id", "message": "required"}]
    unknown = await upload(client, auth, orders_csv(1), dataset="invoices")
    assert unknown.status_code == 422  # as POST /v1/exports says it
    assert unknown.json()["errors"] == [{"field": "dataset", "message": "unknown dataset"}]
    json_body = await client.post("/v1/imports", headers=auth, json={"file": "x"})
    assert json_body.status_code == 422  # JSON names a direct upload, and this does not
    assert json_body.json()["errors"][0]["field"] == "body"
    xml_body = await client.post(
        "/v1/imports", headers={**auth, "Content-Type": "application/xml"}, content=b"<x/>"
    )
    assert xml_body.status_code == 415
    assert await deps.db.fetchval("SELECT count(*) FROM jobs") == 0


async def test_openapi_documents_the_import_routes(client: Client) -> None:
    spec = (await client.get("/schema/openapi.json")).json()
    paths = spec["paths"]
    for path in (
        "/v1/imports",
        "/v1/imports/{job_id}",
        "/v1/imports/{job_id}/mapping",
        "/v1/imports/{job_id}/sheet",
        "/v1/imports/{job_id}/errors.csv",
        "/v1/imports/{job_id}/commit",
        "/v1/imports/{job_id}/rollback",
        "/v1/uploads",
        "/v1/uploads/{upload_id}/content",
    ):
        assert path in paths, path
    commit = paths["/v1/imports/{job_id}/commit"]["post"]
    assert "upsert" in commit["description"]
    assert "202" in paths["/v1/imports/{job_id}/rollback"]["post"]["responses"]
    upload = paths["/v1/imports"]["post"]
    assert "413" in upload["description"]
    assert {p["name"] for p in upload["parameters"]} >= {
        "dataset",
        "account_id",
        "filename",
        "sheet",
        "Idempotency-Key",
    }
