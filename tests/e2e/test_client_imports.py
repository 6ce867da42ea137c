"""ferry_client's imports against a running Ferry on S3 (moto): the file straight to
storage, another sheet without a new upload, commit modes with their counts, and a
rollback followed as a job to ``rolled_back``."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
from ferry_client import Conflict, Ferry, NotFound, Progress

from tests.conftest import moto_storage
from tests.e2e.imports_helpers import orders_csv
from tests.e2e.running import Rule, Running, answer, fault_proxy, start_ferry
from tests.e2e.test_import_sheets import workbook

DATASET = "bookkeeping_records"


@pytest.fixture(scope="module")
def on_s3(
    pg_admin_url: str,
    template_db: str,
    redis_base_url: str,
    redis_db: int,
    moto_endpoint: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Running]:
    """A Ferry whose files are in an S3 bucket (moto)."""
    bucket = "ferry-client-imports"

    async def create_bucket() -> None:
        async with moto_storage(moto_endpoint, bucket):
            pass

    asyncio.run(create_bucket())
    with start_ferry(
        pg_admin_url,
        template_db,
        f"{redis_base_url}/{redis_db}",
        tmp_path_factory.mktemp("on-s3"),
        s3_bucket=bucket,
        s3_endpoint_url=moto_endpoint,
        s3_access_key_id="testing",
        s3_secret_access_key="testing",
        s3_part_size=5 * 1024 * 1024,
    ) as running:
        yield running


def exported(client: Ferry, account: str, path: Path) -> dict[str, dict[str, str]]:
    """The account's records by order id, as an export shows them."""
    client.export_to_file(path, DATASET, account_id=account)
    with path.open(newline="", encoding="utf-8-sig") as f:
        return {row["eBay Order ID"]: row for row in csv.DictReader(f)}


def test_the_file_goes_straight_to_storage_unless_told_to_stream(
    on_s3: Running, tmp_path: Path
) -> None:
    source = tmp_path / "orders.csv"
    source.write_bytes(orders_csv(20))
    with fault_proxy(on_s3.url) as proxy, Ferry(proxy.url, on_s3.token("dora")) as client:
        direct = client.import_file(source, DATASET, "direct").wait()
        assert direct.status == "validated"
        assert direct.totals is not None
        assert direct.totals.valid == 20
        assert direct.data.params["upload_id"]
        # The file went to the presigned S3 URL: the api saw its size, not its bytes.
        assert len(proxy.requests(r"^POST /v1/uploads$")) == 1
        assert proxy.requests(r"^PUT ") == []
        (created,) = proxy.requests(r"^POST /v1/imports$")
        assert created.headers["content-type"] == "application/json"

        streamed = client.import_file(source, DATASET, "streamed", via="stream").wait()
        assert streamed.totals is not None
        assert streamed.totals.valid == 20
        assert "upload_id" not in streamed.data.params
        assert len(proxy.requests(r"^POST /v1/uploads$")) == 1  # not asked again
        assert len(proxy.requests(r"^POST /v1/imports\?")) == 1  # the file as the body


def test_without_direct_uploads_on_the_server_the_file_is_streamed(
    on_s3: Running, tmp_path: Path
) -> None:
    source = tmp_path / "orders.csv"
    source.write_bytes(orders_csv(3))
    body = b'{"status": 404, "title": "Not Found", "detail": "no such route"}'
    older = Rule(
        r"^POST /v1/uploads$",
        answer=answer(404, "Not Found", {"Content-Type": "application/problem+json"}, body),
        times=100,
    )
    with fault_proxy(on_s3.url, older) as proxy, Ferry(proxy.url, on_s3.token("olga")) as client:
        imp = client.import_file(source, DATASET, "older").wait()
        assert imp.status == "validated"
        assert len(proxy.requests(r"^POST /v1/imports\?")) == 1
        with pytest.raises(NotFound, match="no such route"):
            client.import_file(source, DATASET, "older", via="direct")


def test_another_sheet_of_the_uploaded_workbook(on_s3: Running, tmp_path: Path) -> None:
    book = tmp_path / "book.xlsx"
    book.write_bytes(workbook())
    with Ferry(on_s3.url, on_s3.token("sheila")) as client:
        imp = client.import_file(book, DATASET, "sheets").wait()
        assert imp.source.sheet == "Orders"
        assert [(s.name, s.rows > 0) for s in imp.source.sheets] == [
            ("Orders", True),
            ("Empty", False),
            ("March", True),
        ]
        imp.choose_sheet("March").wait()
        assert imp.status == "validated"
        assert imp.source.sheet == "March"
        assert imp.totals is not None
        assert imp.totals.rows == 3
        assert len(list(client.jobs(kind="import"))) == 1  # the file went up once


def test_an_upsert_updates_and_its_rollback_restores(on_s3: Running, tmp_path: Path) -> None:
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_bytes(orders_csv(5))  # orders 0-4, paid
    second.write_bytes(orders_csv(5, start=3).replace(b",paid", b",shipped"))  # orders 3-7
    seen: list[Progress] = []
    with Ferry(on_s3.url, on_s3.token("ursula")) as client:
        base = client.import_file(first, DATASET, "upsert").wait().commit()
        assert base.data.batch is not None
        assert (base.data.batch.mode, base.data.batch.inserted) == ("insert", 5)

        imp = client.import_file(second, DATASET, "upsert").wait()
        assert imp.data.existing == 2
        assert imp.data.modes is not None
        assert imp.data.modes.upsert.valid == 5
        with pytest.raises(Conflict):  # insert: the two existing orders are invalid
            imp.commit()
        imp.commit(mode="upsert")
        batch = imp.data.batch
        assert batch is not None
        assert (batch.mode, batch.rows, batch.inserted, batch.updated) == ("upsert", 5, 3, 2)
        records = exported(client, "upsert", tmp_path / "after.csv")
        assert len(records) == 8
        assert records["10-00003-00021"]["Status"] == "shipped"  # updated

        imp.rollback(progress=seen.append)
        assert imp.status == "rolled_back"
        assert seen
        assert seen[-1].done == seen[-1].total
        records = exported(client, "upsert", tmp_path / "undone.csv")
        assert sorted(records) == [f"10-{i:05d}-{i * 7:05d}" for i in range(5)]
        assert {r["Status"] for r in records.values()} == {"paid"}  # restored as it was

        again = client.import_file(second, DATASET, "upsert").wait()
        again.commit(mode="skip_existing")
        skipped = again.data.batch
        assert skipped is not None
        assert (skipped.inserted, skipped.updated, skipped.skipped_existing) == (3, 0, 2)
