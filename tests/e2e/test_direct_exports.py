"""Direct downloads: `GET /v1/datasets/{name}/export.{csv,json,ndjson,xlsx}`, read back."""

from __future__ import annotations

import csv
import gzip
import io
from datetime import date, timedelta
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from services.core import jobs
from services.core.deps import Deps
from services.core.exports.run import snapshot, write_export
from services.core.exports.spec import build_spec
from services.core.settings import Settings
from tests.conftest import WorkerRun
from tests.e2e.export_files import (
    LABELS,
    PRESETS,
    TRICKY,
    check_file,
    neutral,
    records,
    seed_records,
    seed_world,
    where,
)

URL = "/v1/datasets/bookkeeping_records/export"
PROBLEM = "application/problem+json"
MEDIA_TYPES = {
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "parquet": "application/vnd.apache.parquet",
}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, direct_export_max_rows=250)


@pytest.fixture
async def world(deps: Deps) -> None:
    await seed_world(deps)


def since(days: int) -> date:
    return date.today() - timedelta(days=days)  # noqa: DTZ011 - the demo data's calendar


async def test_csv_streams_labels_decimal_money_dates_profit_and_no_deleted_rows(
    client: AsyncTestClient[Litestar], auth: dict[str, str], deps: Deps, world: None
) -> None:
    start = since(120)
    response = await client.get(
        f"{URL}.csv?account_id=main&preset=financial&sale_date_from={start}", headers=auth
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="bookkeeping_records-main-')
    assert ".csv\"; filename*=UTF-8''bookkeeping_records-main-" in disposition
    everything = await records(deps)
    expected = where(everything, lambda r: r["sale_date"] >= start)
    assert 0 < len(expected) < 250
    assert int(response.headers["x-ferry-rows"]) == len(expected)
    check_file("csv", response.content, PRESETS["financial"], expected)
    # What a user checks by eye: money as 12.34, profit computed, no deleted rows.
    first = next(csv.DictReader(io.StringIO(response.text)))
    assert first["Sale Price"] == f"{expected[0]['sale_price'] / 100:.2f}"
    deleted = {r["ebay_order_id"] for r in await records(deps, live=False) if r["deleted"]}
    assert deleted
    assert not deleted & {r[0] for r in csv.reader(io.StringIO(response.text))}


async def test_formula_like_text_is_neutralised_unless_asked_not_to(
    client: AsyncTestClient[Litestar], auth: dict[str, str], world: None
) -> None:
    for title in TRICKY:
        response = await client.get(
            f"{URL}.csv", params={"columns": "item_name", "item_name": title}, headers=auth
        )
        assert list(csv.reader(io.StringIO(response.text))) == [["Item Name"], [neutral(title)]]
    response = await client.get(
        f"{URL}.csv?account_id=main&columns=item_name&item_name_contains=hyperlink", headers=auth
    )
    assert {row[0] for row in csv.reader(io.StringIO(response.text))} == {
        "Item Name",
        "'=HYPERLINK Vintage Poster",
    }
    raw = await client.get(
        f"{URL}.csv?account_id=main&columns=item_name&escape_formulas=false"
        "&item_name_contains=hyperlink",
        headers=auth,
    )
    assert {row[0] for row in csv.reader(io.StringIO(raw.text))} == {
        "Item Name",
        "=HYPERLINK Vintage Poster",
    }


@pytest.mark.parametrize("fmt", ["json", "ndjson", "xlsx", "parquet"])
async def test_json_ndjson_xlsx_and_parquet_hold_the_same_rows(
    client: AsyncTestClient[Litestar], auth: dict[str, str], deps: Deps, world: None, fmt: str
) -> None:
    columns = ["ebay_order_id", "sale_date", "item_name", "qty", "sale_price", "profit", "status"]
    response = await client.get(
        f"{URL}.{fmt}?account_id=main&columns={','.join(columns)}&status=shipped,PAID",
        headers=auth,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"].endswith(f".{fmt}")
    assert response.headers["content-type"].partition(";")[0] == MEDIA_TYPES[fmt]
    expected = where(await records(deps), lambda r: r["status"] in ("shipped", "paid"))
    assert 0 < len(expected) < 250
    check_file(fmt, response.content, columns, expected)


async def test_gzip_sends_a_gz_file_of_the_same_csv(
    client: AsyncTestClient[Litestar], auth: dict[str, str], deps: Deps, world: None
) -> None:
    response = await client.get(
        f"{URL}.csv?account_id=other&preset=essential&gzip=true", headers=auth
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/gzip"
    assert response.headers["content-disposition"].endswith(".csv.gz")
    check_file(
        "csv",
        gzip.decompress(response.content),
        PRESETS["essential"],
        await records(deps, account="other"),
    )


async def test_without_account_id_every_account_of_the_org_and_never_another_org(
    client: AsyncTestClient[Litestar], auth: dict[str, str], deps: Deps, world: None
) -> None:
    start = since(60)
    response = await client.get(f"{URL}.ndjson?sale_date_from={start}", headers=auth)
    expected = where(await records(deps, account=None), lambda r: r["sale_date"] >= start)
    mine = {r["ebay_order_id"] for r in expected}
    theirs = {r["ebay_order_id"] for r in await records(deps, org="globex", account=None)}
    got = {
        line["ebay_order_id"]
        for line in msgspec.json.decode(b"[" + b",".join(response.content.splitlines()) + b"]")
    }
    assert got == mine
    assert len(mine) > 0
    assert not theirs - mine or not got & (theirs - mine)


async def test_over_the_limit_is_413_pointing_at_background_exports(
    client: AsyncTestClient[Litestar],
    auth: dict[str, str],
    deps: Deps,
    world: None,
    run_worker: WorkerRun,
) -> None:
    response = await client.get(f"{URL}.csv?account_id=main&preset=all", headers=auth)
    assert response.status_code == 413
    assert response.headers["content-type"].startswith(PROBLEM)
    problem = response.json()
    assert "POST /v1/exports" in problem["detail"]
    assert "more than 250 rows" in problem["detail"]
    assert problem["limit"] == 250
    # The problem carries the body of the equivalent background export: it works.
    started = await client.post("/v1/exports", json=problem["export_request"], headers=auth)
    assert started.status_code == 202
    await run_worker()
    job = await jobs.get_job(deps.db, started.json()["id"], "acme")
    assert job.status == "succeeded"
    assert job.result is not None
    assert job.result["rows"] == 296


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("sale_date_form=2026-01-01", "sale_date_form", "unknown filter"),
        ("sale_date_from=01/02/2026", "sale_date_from", "YYYY-MM-DD"),
        ("status=shipped,lost", "status", "unknown value(s) lost"),
        ("profit_min=lots", "profit_min", "an amount"),
        ("columns=item_name,colour", "columns", "unknown column 'colour'"),
        ("preset=everything", "preset", "unknown preset"),
    ],
)
async def test_bad_requests_are_422_naming_the_parameter(
    client: AsyncTestClient[Litestar], auth: dict[str, str], query: str, field: str, message: str
) -> None:
    response = await client.get(f"{URL}.csv?{query}", headers=auth)
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["field"] == field
    assert message in error["message"]


async def test_money_filters_use_currency_units(
    client: AsyncTestClient[Litestar], auth: dict[str, str], deps: Deps, world: None
) -> None:
    response = await client.get(
        f"{URL}.json?account_id=main&columns=ebay_order_id,profit&profit_min=50.00&profit_max=100",
        headers=auth,
    )
    expected = where(await records(deps), lambda r: 5000 <= r["profit"] <= 10000)
    check_file("json", response.content, ["ebay_order_id", "profit"], expected)


async def test_reading_needs_the_read_permission_and_a_known_format(
    client: AsyncTestClient[Litestar], make_token: Any, auth: dict[str, str]
) -> None:
    writer = {"Authorization": f"Bearer {make_token(perms=['bookkeeping_records.write'])}"}
    assert (await client.get(f"{URL}.csv", headers=writer)).status_code == 403
    assert (await client.get(f"{URL}.pdf", headers=auth)).status_code == 422
    assert (await client.get(f"{URL}.xlsx?gzip=true", headers=auth)).status_code == 422
    assert (await client.get(f"{URL}.parquet?gzip=true", headers=auth)).status_code == 422
    assert (await client.get(f"{URL}.csv")).status_code == 401


async def test_an_empty_export_is_a_header_only_file(
    client: AsyncTestClient[Litestar], auth: dict[str, str], world: None
) -> None:
    response = await client.get(f"{URL}.csv?account_id=nobody&columns=qty,status", headers=auth)
    assert response.text.splitlines() == [f"{LABELS['qty']},{LABELS['status']}"]
    response = await client.get(f"{URL}.json?account_id=nobody", headers=auth)
    assert response.json() == []


async def test_openapi_documents_the_export_routes(client: AsyncTestClient[Litestar]) -> None:
    spec = (await client.get("/schema/openapi.json")).json()
    for path, method in (
        ("/v1/datasets/{name}/{file}", "get"),
        ("/v1/exports", "post"),
        ("/v1/exports/{job_id}/download", "get"),
        ("/v1/jobs/{job_id}/cancel", "post"),
        ("/v1/jobs/{job_id}/events", "get"),
        ("/v1/events", "get"),
    ):
        assert method in spec["paths"][path], path
    direct = spec["paths"]["/v1/datasets/{name}/{file}"]["get"]
    assert "413" in direct["description"] or "413" in str(direct)
    body = spec["paths"]["/v1/exports"]["post"]
    assert "Idempotency-Key" in {p["name"] for p in body["parameters"]}


# Text a seller may really type, and the characters each format must escape its own way.
ODD = [
    'Tom & Jerry <DVD> "boxed"',
    "tab\tnewline\nCRLF\r\nbackslash \\ end",
    "bell\x07 and _x0041_ stay as typed",
    "  spaced both ends  ",
    "emoji 📦 ünïcode ]]> cdata end",
    "N/A",
    "C:\\new\\table, form\x0cfeed, vtab\x0b, backspace\x08, unit\x1fsep",
]


@pytest.mark.parametrize(
    ("fmt", "engine"),
    [
        ("csv", "postgres"),
        ("json", "postgres"),
        ("ndjson", "postgres"),
        ("xlsx", "postgres"),
        ("xlsx", "xlsxwriter"),
        ("parquet", "postgres"),
    ],
)
async def test_any_text_comes_back_exactly_as_typed(deps: Deps, fmt: str, engine: str) -> None:
    await seed_records(deps, "acme", "odd", 12)
    ids = await deps.db.fetch(
        "SELECT id FROM bookkeeping_records WHERE account_id = 'odd' ORDER BY id LIMIT $1",
        len(ODD),
    )
    for record, title in zip(ids, ODD, strict=True):
        await deps.db.execute(
            "UPDATE bookkeeping_records SET item_name = $2 WHERE id = $1", record["id"], title
        )
    ds = deps.registry.get("bookkeeping_records")
    spec = build_spec(ds, format=fmt, preset="all", filters={"account_id": "odd"})
    data = bytearray()

    async def sink(block: bytes) -> None:
        data.extend(block)

    async with deps.db.acquire() as conn, snapshot(conn):
        rows = await write_export(conn, ds, spec, "acme", sink, xlsx_engine=engine)
    assert rows == 12
    expected = await records(deps, account="odd")
    assert {r["item_name"] for r in expected} >= set(ODD)
    check_file(fmt, bytes(data), PRESETS["all"], expected)
