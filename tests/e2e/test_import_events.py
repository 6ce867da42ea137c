"""Import progress on the same SSE endpoints as exports, through a real uvicorn."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import WorkerRun
from tests.e2e.imports_helpers import DATA, DATASET
from tests.e2e.sse import DEADLINE, Sse


@pytest.fixture
async def http(live_server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server, timeout=DEADLINE) as c:
        yield c


async def follow(url: str, run_worker: WorkerRun, headers: dict[str, str] | None = None) -> Sse:
    """Open the stream, let a real worker do the job, return what the stream carried."""
    sse = Sse()
    reading = asyncio.create_task(sse.read(url, headers))
    await asyncio.wait_for(sse.opened.wait(), DEADLINE)
    await run_worker()
    await asyncio.wait_for(reading, DEADLINE)  # a terminal event ends the stream
    return sse


async def test_validation_and_commit_stream_as_server_sent_events(
    live_server: str, http: httpx.AsyncClient, auth: dict[str, str], run_worker: WorkerRun
) -> None:
    content = (DATA / "marketplace_orders_report.csv").read_bytes()
    upload = await http.post(
        "/v1/imports",
        headers=auth,
        data={"dataset": DATASET, "account_id": "main"},
        files={"file": ("report.csv", content, "text/csv")},
    )
    assert upload.status_code == 202, upload.text
    job = upload.json()
    feed = Sse()  # the caller's notification feed sees the same events
    feed_reading = asyncio.create_task(feed.read(f"{live_server}/v1/events", auth))
    await asyncio.wait_for(feed.opened.wait(), DEADLINE)

    # Browsers' EventSource sends no header: the link carries its own token.
    validating = await follow(live_server + job["links"]["events"], run_worker)
    assert validating.status == 200
    assert validating.types[0] == "status"
    assert validating.events[0]["data"]["status"] == "uploaded"  # the snapshot
    assert validating.types[-1] == "validated"
    assert validating.events[-1]["data"]["result"]["totals"]["valid"] == 250

    committed = await http.post(f"/v1/imports/{job['id']}/commit", headers=auth)
    assert committed.status_code == 202, committed.text
    # Resuming after the last event seen: nothing repeated, the commit's events follow.
    committing = await follow(
        f"{live_server}/v1/jobs/{job['id']}/events",
        run_worker,
        {**auth, "Last-Event-ID": validating.events[-1]["id"]},
    )
    assert "validated" not in committing.types
    assert committing.types[-1] == "committed"
    assert committing.events[-1]["data"]["result"]["batch"]["rows"] == 250
    assert [e["id"] for e in committing.events] == sorted(
        {e["id"] for e in committing.events}, key=lambda i: tuple(map(int, i.split("-")))
    )

    feed_reading.cancel()
    await asyncio.gather(feed_reading, return_exceptions=True)
    assert {"validated", "committed"} <= set(feed.types)
    assert {e["data"]["job_id"] for e in feed.events} == {job["id"]}
