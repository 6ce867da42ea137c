"""Hostile workbooks (issue 8.1): refused with a message naming the sheet and its range,
never taking the worker down — also when the file lies where no scan can see."""

from __future__ import annotations

import asyncio
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from services.core.deps import Deps
from services.core.errors import InvalidInput
from services.core.imports import readers
from services.core.settings import Settings
from tests import workbooks
from tests.conftest import WorkerRun
from tests.e2e.imports_helpers import XLSX, Client, imported, upload
from tests.e2e.test_import_recovery import start_worker
from tests.workbooks import HOSTILE, ORDERS


def lying_xls() -> bytes:
    """A small .xls whose DIMENSIONS record declares 4 billion rows: calamine reserves
    room for them at open, before any cell — no scan of ours reads inside the OLE file."""
    data = bytearray(workbooks.xls({"Orders": ORDERS}))
    at = data.find(b"\x00\x02\x0e\x00")  # record 0x0200, 14 bytes
    struct.pack_into("<II", data, at + 4, 0, 0xFFFF_FFF0)
    struct.pack_into("<HH", data, at + 12, 0, 255)
    return bytes(data)


@pytest.mark.parametrize("shape", list(HOSTILE))
async def test_each_shape_fails_clearly_or_imports(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, shape: str
) -> None:
    doc = await imported(client, auth, run_worker, workbooks.hostile_xlsx(shape), filename="o.xlsx")
    expected = HOSTILE[shape][1]
    if expected is None:
        assert doc["status"] == "validated", doc["error"]
        assert doc["totals"]["valid"] == 3
        assert doc["source"]["sheets"][0]["range"] == "A1:D4"
        return
    assert doc["status"] == "failed"
    message = doc["error"]["message"]
    assert message.startswith(f"the sheet 'Orders' uses the range {expected} (it declares A1:D4)")
    assert "Delete the rows and columns after the data" in message


async def test_a_workbook_of_many_sheets_imports_its_orders(
    client: Client, auth: dict[str, str], run_worker: WorkerRun
) -> None:
    content = workbooks.many_sheets_xlsx(300, data_at=40)
    doc = await imported(client, auth, run_worker, content, filename="many.xlsx")
    assert doc["status"] == "validated", doc["error"]
    assert doc["source"]["sheet"] == "Orders"
    assert doc["totals"]["valid"] == 3
    sheets = doc["source"]["sheets"]
    assert len(sheets) == 300
    assert sheets[40]["chosen"] is True
    assert sheets[0]["score"] < sheets[40]["score"]
    assert sheets[299]["score"] is None
    assert sheets[299]["reason"] == "not compared: only the first 64 sheets are"


async def test_an_xls_that_lies_about_its_size_is_refused(
    client: Client, auth: dict[str, str], run_worker: WorkerRun
) -> None:
    content = lying_xls()
    assert len(content) < 10_000
    doc = await imported(client, auth, run_worker, content, filename="o.xls")
    assert doc["status"] == "failed"
    assert doc["error"]["message"].startswith(
        "the workbook needs more memory than Ferry allows for reading a workbook (1,024 MiB); "
        "remove what is not data"
    )


def test_the_reader_process_holds_what_the_scan_lets_through(tmp_path: Path) -> None:
    """With the scan's budget out of the way, calamine's 670 MB range still cannot
    reach the worker: the reader process hits its memory cap and the file is refused."""
    path = tmp_path / "far.xlsx"
    path.write_bytes(workbooks.hostile_xlsx("far-row"))
    limits = readers.Limits(memory_bytes=256 * 1024 * 1024, max_cells=10**9)
    with pytest.raises(InvalidInput) as refused:
        readers.Workbook(path, "xlsx", limits)  # it loads the sheet to sample its rows
    assert str(refused.value).startswith(
        "the sheet 'Orders' needs more memory than Ferry allows for reading a workbook (256 MiB)"
    )


async def status_of(client: Client, auth: dict[str, str], job_id: str, wanted: set[str]) -> Any:
    deadline = time.monotonic() + 60
    while True:
        doc = (await client.get(f"/v1/imports/{job_id}", headers=auth)).json()
        if doc["status"] in wanted:
            return doc
        assert time.monotonic() < deadline, doc["status"]
        await asyncio.sleep(0.1)


async def test_a_worker_process_lives_through_every_hostile_file(
    client: Client, auth: dict[str, str], deps: Deps, settings: Settings
) -> None:
    worker = start_worker(settings)
    try:
        hostile = [workbooks.hostile_xlsx("far-both"), lying_xls()]
        jobs = []
        for content in hostile:
            answer = await upload(client, auth, content, filename="o.xlsx", content_type=XLSX)
            assert answer.status_code == 202
            jobs.append(answer.json()["id"])
        for job_id in jobs:
            doc = await status_of(client, auth, job_id, {"failed", "validated"})
            assert doc["status"] == "failed"
            assert doc["error"]["type"] == "invalid-input"
        # The same worker then validates a good workbook.
        good = workbooks.xlsx({"Orders": ORDERS})
        answer = await upload(client, auth, good, filename="o.xlsx", content_type=XLSX)
        doc = await status_of(client, auth, answer.json()["id"], {"failed", "validated"})
        assert doc["status"] == "validated"
        assert worker.poll() is None
        attempts = await deps.db.fetchval("SELECT max(attempt) FROM jobs")
        assert attempts == 1  # no job ran twice: no worker died under one
    finally:
        worker.terminate()
        worker.wait(timeout=30)
