"""ferry_client against a real running Ferry: ``ferry api`` and ``ferry worker`` processes
on real PostgreSQL and Redis, with a proxy in between where a fault is needed."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import zipfile
from pathlib import Path

import pytest
from ferry_client import (
    AsyncFerry,
    ChecksumMismatch,
    Conflict,
    ConnectionFailed,
    Ferry,
    Invalid,
    NotFound,
    Progress,
    Unauthorized,
)

from tests.conftest import free_port
from tests.e2e.running import Rule, Running, answer, fault_proxy, write_orders

DATASET = "bookkeeping_records"
BIG = 200_000
PROBLEM = {"Content-Type": "application/problem+json"}


@pytest.fixture(scope="module")
def big_account(ferry: Running) -> str:
    ferry.seed("big", BIG)
    return "big"


def sheet_rows(path: Path) -> int:
    """Rows of an XLSX file's first sheet, counted in its XML as it streams out of the zip."""
    count = 0
    tail = b""
    with zipfile.ZipFile(path) as book, book.open("xl/worksheets/sheet1.xml") as sheet:
        while chunk := sheet.read(1 << 20):
            data = tail + chunk
            count += data.count(b"<row ") + data.count(b"<row>")
            tail = data[-4:]  # a tag cut in two; too short to hold a whole one
    return count


@pytest.mark.slow
def test_a_200k_row_xlsx_export_reports_progress_and_downloads_verified(
    ferry: Running, big_account: str, tmp_path: Path
) -> None:
    seen: list[Progress] = []
    with Ferry(ferry.url, ferry.token()) as client:
        job = client.export(DATASET, "xlsx", preset="financial", account_id=big_account)
        assert job.status == "queued"
        job.wait(progress=seen.append)
        assert job.status == "succeeded"
        path = job.download(tmp_path / "year.xlsx")
    assert job.result is not None
    assert job.result.rows == BIG
    # Progress never went backwards and ended at the total (a fast export may finish
    # before the first throttled progress event: the final document still reports it).
    assert seen
    assert [p.done for p in seen] == sorted(p.done for p in seen)
    assert seen[-1].done == BIG
    # The file on disk is whole: the checksum the job reported, every row in the sheet.
    assert hashlib.sha256(path.read_bytes()).hexdigest() == job.result.sha256
    assert path.stat().st_size == job.result.bytes
    assert sheet_rows(path) == BIG + 1  # and the header
    assert not list(tmp_path.glob("*.part"))


def test_a_download_that_does_not_match_its_checksum_is_refused(
    ferry: Running, tmp_path: Path
) -> None:
    ferry.seed("tampered", 50)
    with Ferry(ferry.url, ferry.token()) as client:
        job = client.export(DATASET, "csv", account_id="tampered").wait()
        assert job.result is not None
        stored = next(Path(ferry.settings.storage_dir).rglob(job.result.filename))
        stored.write_bytes(stored.read_bytes().replace(b",", b";", 1))  # same size, other bytes
        with pytest.raises(ChecksumMismatch):
            job.download(tmp_path / "out.csv")
    assert list(tmp_path.iterdir()) == []  # neither the file nor a partial one


def exported(client: Ferry, account: str, path: Path) -> list[dict[str, str]]:
    client.export_to_file(
        path, DATASET, account_id=account, columns=["ebay_order_id", "sale_price"]
    )
    with path.open(newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def test_an_import_from_upload_to_rollback(ferry: Running, tmp_path: Path) -> None:
    source = write_orders(tmp_path / "orders.csv")
    with Ferry(ferry.url, ferry.token()) as client:
        imp = client.import_file(source, DATASET, "imports").wait()
        assert imp.status == "validated"
        assert imp.source.encoding in {"utf-8", "ascii"}
        assert list(imp.mapping) == imp.source.headers  # the file's order
        sold_for = imp.mapping["Sold For"]
        assert sold_for is not None
        assert sold_for.field == "sale_price"
        assert imp.mapping["Total Price"] is None

        # The price is the total: map it, validate again.
        imp.set_mapping({"Total Price": "sale_price"}).wait()
        total = imp.mapping["Total Price"]
        assert total is not None
        assert (total.field, total.reason) == ("sale_price", "chosen")
        assert imp.mapping["Sold For"] is None
        assert imp.data.preview is not None
        assert imp.data.preview[0].values["sale_price"] == "15.50"
        assert imp.totals is not None
        assert (imp.totals.valid, imp.totals.invalid) == (10, 2)
        assert [e.line for e in imp.errors] == [6, 11]

        report = imp.errors_report(tmp_path / "errors.csv")
        with report.open(newline="", encoding="utf-8-sig") as f:
            failed = list(csv.DictReader(f))
        assert [row["_row"] for row in failed] == ["6", "11"]
        assert failed[0]["Sale Date"] == "2026-02-30"
        assert failed[0]["_errors"]

        # All or nothing: refused, and nothing was written.
        with pytest.raises(Conflict) as refused:
            imp.commit()
        assert refused.value.problem["totals"]["invalid"] == 2
        assert exported(client, "imports", tmp_path / "before.csv") == []

        imp.commit(on_error="skip")
        assert imp.status == "committed"
        assert imp.data.batch is not None
        assert imp.data.batch.rows == 10
        rows = exported(client, "imports", tmp_path / "after.csv")
        assert len(rows) == 10
        assert {r["Sale Price"] for r in rows} == {f"{15 + i}.50" for i in range(12)} - {
            "19.50",
            "24.50",
        }

        imp.rollback()
        assert imp.status == "rolled_back"
        assert exported(client, "imports", tmp_path / "undone.csv") == []
        imp.rollback()  # twice is harmless
        assert imp.status == "rolled_back"


def test_a_retry_after_a_dropped_connection_does_not_create_a_second_job(
    ferry: Running,
) -> None:
    ferry.seed("dropped", 10)
    drop = Rule("POST /v1/exports", drop=True)
    with fault_proxy(ferry.url, drop) as proxy, Ferry(proxy.url, ferry.token("dora")) as client:
        job = client.export(DATASET, "csv", account_id="dropped")
        posts = proxy.requests("POST /v1/exports")
        jobs = list(client.jobs())
    assert drop.times == 0  # the first answer was lost on the way
    assert len(posts) == 2
    keys = {p.headers["idempotency-key"] for p in posts}
    assert len(keys) == 1  # the retry carried the same key …
    assert [j.id for j in jobs] == [job.id]  # … so the server kept one job


EVENTS = r"^GET /v1/jobs/[^/]+/events"


def test_a_dropped_event_stream_resumes_after_the_last_event(
    ferry: Running, big_account: str
) -> None:
    cut = Rule(EVENTS, cut_after=b"event: status")
    with fault_proxy(ferry.url, cut) as proxy, Ferry(proxy.url, ferry.token("cuthbert")) as client:
        job = client.export(DATASET, "csv", account_id=big_account).wait()
        streams = proxy.requests(EVENTS)
    assert job.status == "succeeded"
    assert cut.times == 0
    assert len(streams) >= 2
    assert "last-event-id" not in streams[0].headers
    assert streams[1].headers["last-event-id"]  # it resumed where it was cut


def test_without_an_event_stream_it_polls(ferry: Running) -> None:
    ferry.seed("polled", 10)
    html = answer(404, "Not Found", {"Content-Type": "text/html"}, b"<h1>no such page</h1>")
    hidden = Rule(EVENTS, answer=html, times=100)  # e.g. a proxy that does not pass SSE
    seen: list[Progress] = []
    with fault_proxy(ferry.url, hidden) as proxy, Ferry(proxy.url, ferry.token("polly")) as client:
        job = client.export(DATASET, "csv", account_id="polled").wait(progress=seen.append)
        polls = proxy.requests(r"^GET /v1/jobs/[^/]+$")
    assert job.status == "succeeded"
    assert len(proxy.requests(EVENTS)) == 1  # one look was enough to give up on SSE
    assert len(polls) >= 2  # polled until it ended, then read it once more
    assert seen[-1].done == 10


def test_errors_are_typed_and_name_the_field(ferry: Running) -> None:
    with Ferry(ferry.url, ferry.token()) as client:
        with pytest.raises(NotFound):
            client.job("00000000-0000-0000-0000-000000000000")
        with pytest.raises(Invalid) as invalid:
            client.export(DATASET, "csv", filters={"colour": "red"})
        assert [e.field for e in invalid.value.errors] == ["colour"]
    with Ferry(ferry.url, "not-a-token") as client, pytest.raises(Unauthorized):
        client.dataset(DATASET)
    nobody = f"http://127.0.0.1:{free_port()}"
    with Ferry(nobody, "t", retries=1) as client, pytest.raises(ConnectionFailed):
        client.dataset(DATASET)


def test_jobs_come_page_by_page_newest_first(ferry: Running) -> None:
    ferry.seed("paged", 5)
    with Ferry(ferry.url, ferry.token("pam")) as client:
        started = [client.export(DATASET, "csv", account_id="paged").id for _ in range(3)]
        pages = list(client.job_pages(page_size=2))
        every = [job.id for job in client.jobs(kind="export")]
    assert [len(p.items) for p in pages] == [2, 1]
    assert every == started[::-1]


async def test_the_async_client_exports_and_imports(ferry: Running, tmp_path: Path) -> None:
    await asyncio.to_thread(ferry.seed, "async", 100)
    seen: list[Progress] = []
    async with AsyncFerry(ferry.url, ferry.token("asa")) as client:
        job = await client.export(DATASET, "ndjson", account_id="async")
        await job.wait(progress=seen.append)
        path = await job.download(tmp_path / "async.ndjson")
        assert len(path.read_bytes().splitlines()) == 100

        imp = await client.import_file(write_orders(tmp_path / "a.csv"), DATASET, "async-in")
        await imp.wait()
        await imp.commit("skip")
        assert imp.status == "committed"
        pages = [page async for page in client.job_pages(page_size=1)]
    assert len(pages) == 2
