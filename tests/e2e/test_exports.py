"""Background exports through HTTP and a real worker, on local and S3 storage.

Every produced file is downloaded the way a user would and read back (csv module,
json, openpyxl) against the database rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from python_calamine import CalamineWorkbook

from services.core import jobs
from services.core.deps import Deps
from services.core.events import job_stream
from services.core.queue import arq_redis
from services.core.settings import Settings
from services.worker.jobs.exports import expire_exports
from services.worker.jobs.maintenance import reconcile_jobs
from services.worker.settings import drain
from tests.conftest import SECRET, WorkerRun, ferry_env
from tests.e2e.export_files import (
    LABELS,
    PRESETS,
    check_file,
    records,
    seed_records,
    seed_world,
    where,
)
from tests.e2e.sse import Sse

pytestmark = pytest.mark.parametrize("storage_backend", ["local", "s3"], indirect=True)

FERRY = Path(sys.executable).parent / "ferry"
DEADLINE = 20.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, sse_heartbeat_seconds=0.3)


@pytest.fixture
async def world(deps: Deps) -> None:
    await seed_world(deps)


@pytest.fixture
async def http(live_server: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app on a real uvicorn (SSE tests use it, never the test client)."""
    async with httpx.AsyncClient(base_url=live_server, timeout=DEADLINE) as c:
        yield c


def since(days: int) -> str:
    return (datetime.now(UTC).date() - timedelta(days=days)).isoformat()


async def until(check: Any, what: str, deadline: float = DEADLINE) -> Any:
    """Poll ``check()`` (the job row, storage) until it is truthy, within a deadline."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if value := await check():
            return value
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


async def job_row(deps: Deps, job_id: str) -> jobs.Job:
    return await jobs.get_job(deps.db, job_id, "acme")


async def download(
    client: AsyncTestClient[Litestar], view: dict[str, Any], auth: dict[str, str]
) -> httpx.Response:
    """Follow ``links.download`` as a browser would: the file, or 307 to a presigned URL."""
    response = await client.get(view["links"]["download"], headers=auth, follow_redirects=False)
    if response.status_code == 307:
        assert response.headers["cache-control"] == "no-store"
        async with httpx.AsyncClient() as plain:
            response = await plain.get(response.headers["location"])
    assert response.status_code == 200, response.text
    return response


async def stored_keys(deps: Deps, prefix: str) -> list[str]:
    """Finished files under a prefix."""
    storage: Any = deps.storage
    if storage.backend == "local":
        base = storage.path(prefix.rstrip("/"))
        return sorted(str(p.relative_to(storage.root)) for p in base.rglob("*") if p.is_file())
    page = await storage.client.list_objects_v2(Bucket=storage.bucket, Prefix=prefix)
    return sorted(obj["Key"] for obj in page.get("Contents", []))


async def unfinished_uploads(deps: Deps) -> int:
    storage: Any = deps.storage
    if storage.backend == "local":
        return len(list((storage.root / ".uploads").glob("*.part")))
    page = await storage.client.list_multipart_uploads(Bucket=storage.bucket)
    return len(page.get("Uploads", []))


# --- the happy path, every format ------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "compression"),
    [("csv", "gzip"), ("json", None), ("ndjson", None), ("xlsx", None), ("parquet", None)],
)
async def test_a_background_export_runs_and_its_file_downloads(
    client: AsyncTestClient[Litestar],
    auth: dict[str, str],
    deps: Deps,
    world: None,
    run_worker: WorkerRun,
    fmt: str,
    compression: str | None,
) -> None:
    start = since(200)
    body = {
        "dataset": "bookkeeping_records",
        "format": fmt,
        "preset": "financial",
        "account_id": "main",
        "filters": {"sale_date_from": start, "status": ["shipped", "delivered", "paid"]},
        "compression": compression,
    }
    response = await client.post("/v1/exports", json=body, headers=auth)
    assert response.status_code == 202, response.text
    queued = response.json()
    assert response.headers["location"] == f"/v1/jobs/{queued['id']}"
    assert queued["status"] == "queued"
    assert queued["queue_position"] == 1
    assert queued["links"]["download"] is None
    assert queued["params"]["columns"] == PRESETS["financial"]

    await run_worker()

    view = (await client.get(f"/v1/jobs/{queued['id']}", headers=auth)).json()
    assert view["status"] == "succeeded", view
    expected = where(
        await records(deps),
        lambda r: (
            r["sale_date"].isoformat() >= start and r["status"] in ("shipped", "delivered", "paid")
        ),
    )
    result = view["result"]
    assert result["rows"] == len(expected) > 0
    assert view["progress"] == {"done": len(expected), "total": len(expected)}
    assert view["started_at"]
    assert view["finished_at"]
    assert result["filename"].startswith("bookkeeping_records-main-")
    assert result["filename"].endswith(f".{fmt}.gz" if compression else f".{fmt}")
    expires = datetime.fromisoformat(result["expires_at"])
    assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)
    assert view["links"]["download"] == f"/v1/exports/{queued['id']}/download"

    file = await download(client, view, auth)
    assert result["filename"] in file.headers["content-disposition"]
    assert len(file.content) == result["bytes"]
    assert hashlib.sha256(file.content).hexdigest() == result["sha256"]
    data = gzip.decompress(file.content) if compression else file.content
    check_file(fmt, data, PRESETS["financial"], expected)


# --- progress over SSE -------------------------------------------------------------------


async def test_progress_streams_as_sse_from_snapshot_to_terminal_and_resumes(
    live_server: str,
    http: httpx.AsyncClient,
    auth: dict[str, str],
    world: None,
    run_worker: WorkerRun,
) -> None:
    body = {"dataset": "bookkeeping_records", "format": "xlsx", "account_id": "main"}
    view = (await http.post("/v1/exports", json=body, headers=auth)).json()
    events_url = live_server + view["links"]["events"]  # carries its own token, no header
    sse = Sse()
    reading = asyncio.create_task(sse.read(events_url))
    await asyncio.wait_for(sse.opened.wait(), DEADLINE)
    await run_worker()
    await asyncio.wait_for(reading, DEADLINE)  # the terminal event closed the stream

    assert sse.status == 200
    assert sse.types[0] == "status"
    assert sse.events[0]["data"]["status"] == "queued"  # the snapshot
    assert sse.types[-1] == "succeeded"
    assert sse.events[-1]["data"]["links"]["download"] == f"/v1/exports/{view['id']}/download"
    assert sse.events[-1]["data"]["result"]["rows"] == 296
    progress = [e["data"] for e in sse.events if e["event"] == "progress"]
    assert progress
    # A small export's total is counted exactly before the first row (a large one's is
    # PostgreSQL's estimate), and done never passes it.
    assert progress[0]["total"] == 296
    assert all(p["done"] <= p["total"] for p in progress)
    assert sse.events[-1]["data"]["progress"] == {"done": 296, "total": 296}
    ids = [e["id"] for e in sse.events]
    assert all(ids)
    as_pairs = [tuple(map(int, i.split("-"))) for i in ids[1:]]
    assert as_pairs == sorted(set(as_pairs))  # increasing, none twice

    # A reconnect with Last-Event-ID gets exactly what came after it.
    resumed = Sse()
    await asyncio.wait_for(
        resumed.read(events_url, {"Last-Event-ID": sse.events[1]["id"]}), DEADLINE
    )
    assert [e["id"] for e in resumed.events] == ids[2:]
    # After the end, 204 tells the browser to stop reconnecting.
    done = Sse()
    await asyncio.wait_for(done.read(events_url, {"Last-Event-ID": ids[-1]}), DEADLINE)
    assert done.status == 204


async def test_an_idle_stream_sends_heartbeats_and_a_cancel_ends_it(
    live_server: str, http: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    body = {"dataset": "bookkeeping_records", "format": "csv"}
    view = (await http.post("/v1/exports", json=body, headers=auth)).json()
    sse = Sse()
    reading = asyncio.create_task(sse.read(f"{live_server}/v1/jobs/{view['id']}/events", auth))
    await until(lambda: _true(len(sse.comments) >= 2), "two heartbeats (0.3 s apart)")
    cancelled = await http.post(f"/v1/jobs/{view['id']}/cancel", headers=auth)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    await asyncio.wait_for(reading, DEADLINE)
    assert sse.types == ["status", "cancelled"]
    assert set(sse.comments) == {"heartbeat"}


async def _true(value: bool) -> bool:
    return value


async def test_the_feed_streams_every_job_event_of_the_caller(
    live_server: str,
    http: httpx.AsyncClient,
    auth: dict[str, str],
    make_token: Any,
    world: None,
    run_worker: WorkerRun,
) -> None:
    feed_url = (await http.get("/v1/jobs", headers=auth)).json()["links"]["events"]
    assert feed_url.startswith("/v1/events?token=")
    feed = Sse()
    reading = asyncio.create_task(feed.read(live_server + feed_url))
    await asyncio.wait_for(feed.opened.wait(), DEADLINE)
    body = {"dataset": "bookkeeping_records", "format": "ndjson", "account_id": "other"}
    mine = (await http.post("/v1/exports", json=body, headers=auth)).json()
    bob = {"Authorization": f"Bearer {make_token(sub='bob')}"}
    theirs = (await http.post("/v1/exports", json=body, headers=bob)).json()
    await run_worker()
    await until(lambda: _true("succeeded" in feed.types), "the succeeded notification")
    reading.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reading
    assert {e["data"]["job_id"] for e in feed.events} == {mine["id"]}
    done = feed.events[feed.types.index("succeeded")]["data"]
    assert done["links"]["download"] == f"/v1/exports/{mine['id']}/download"
    assert theirs["id"] != mine["id"]


async def test_event_links_that_expired_or_were_forged_are_401(
    client: AsyncTestClient[Litestar], auth: dict[str, str], deps: Deps
) -> None:
    body = {"dataset": "bookkeeping_records", "format": "csv"}
    job = (await client.post("/v1/exports", json=body, headers=auth)).json()
    other = (await client.post("/v1/exports", json={**body, "format": "json"}, headers=auth)).json()
    # An expired link still opens a running job's events; this job ended an hour ago.
    await client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
    await deps.db.execute(
        "UPDATE jobs SET finished_at = now() - interval '1 hour' WHERE id = $1", job["id"]
    )
    now = int(time.time())
    claims = {"sub": "alice", "org": "acme", "job": job["id"], "aud": "ferry:events"}
    claims |= {"iss": "ferry", "iat": now - 700, "exp": now - 100}
    expired = jwt.encode(claims, SECRET, algorithm="HS256")
    forged = jwt.encode({**claims, "exp": now + 600}, "not-the-secret" * 4, algorithm="HS256")
    wrong_job = other["links"]["events"].split("token=")[1]
    url = f"/v1/jobs/{job['id']}/events?token="
    for token, says in ((expired, "expired"), (forged, "not valid"), (wrong_job, "another")):
        response = await client.get(url + token)
        assert response.status_code == 401
        assert says in response.json()["detail"]
    assert (await client.get(f"/v1/jobs/{job['id']}/events")).status_code == 401
    assert (await client.get("/v1/events?token=" + forged)).status_code == 401


# --- control --------------------------------------------------------------------------


class Gate:
    """Storage that lets ``passing`` bytes through, then holds every write until opened.

    A stand-in for a slow or stalled object store: the only way to catch an export
    reliably in the middle.
    """

    def __init__(self, inner: Any, passing: int = 0) -> None:
        self.inner = inner
        self.passing = passing
        self.passed = 0
        self.open = asyncio.Event()
        self.held = asyncio.Event()
        self.writing = 0
        self.most_writing = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @contextlib.asynccontextmanager
    async def writer(self, key: str, *, content_type: str) -> AsyncIterator[Any]:
        self.writing += 1
        self.most_writing = max(self.most_writing, self.writing)
        try:
            async with self.inner.writer(key, content_type=content_type) as upload:
                real = upload.write

                async def write(data: bytes) -> None:
                    if self.passed >= self.passing and not self.open.is_set():
                        self.held.set()
                        await self.open.wait()
                    self.passed += len(data)
                    await real(data)

                upload.write = write
                yield upload
        finally:
            self.writing -= 1


async def gated_worker(settings: Settings, deps: Deps, gate: Gate) -> None:
    await drain(settings, msgspec_replace(deps, storage=gate))


def msgspec_replace(deps: Deps, **changes: Any) -> Deps:
    import dataclasses

    return dataclasses.replace(deps, **changes)


async def test_cancel_stops_a_running_export_and_removes_its_partial_upload(
    client: AsyncTestClient[Litestar],
    auth: dict[str, str],
    settings: Settings,
    deps: Deps,
) -> None:
    await seed_records(deps, "acme", "big", 90_000)  # about 6 MB of CSV
    gate = Gate(deps.storage, passing=5_500_000)  # S3: one part sent, a multipart open
    body = {"dataset": "bookkeeping_records", "format": "csv", "account_id": "big"}
    view = (await client.post("/v1/exports", json=body, headers=auth)).json()
    working = asyncio.create_task(gated_worker(settings, deps, gate))
    await asyncio.wait_for(gate.held.wait(), DEADLINE)
    if deps.storage.backend == "s3":
        assert await unfinished_uploads(deps) == 1

    response = await client.post(f"/v1/jobs/{view['id']}/cancel", headers=auth)
    assert response.status_code == 202
    assert response.json()["cancel_requested"] is True
    # The gate never opens again: only the cancel can end this job.
    row = await until(lambda: _final(deps, view["id"]), "the worker to stop the export")
    await asyncio.wait_for(working, DEADLINE)
    assert row.status == "cancelled"
    assert row.progress["done"] < 90_000
    assert await unfinished_uploads(deps) == 0
    assert await stored_keys(deps, f"acme/exports/{view['id']}/") == []
    download_url = f"/v1/exports/{view['id']}/download"
    assert (await client.get(download_url, headers=auth)).status_code == 409
    events = await deps.events.read(job_stream(view["id"]))
    assert events[-1].type == "cancelled"
    again = await client.post(f"/v1/jobs/{view['id']}/cancel", headers=auth)
    assert again.status_code == 409


async def _final(deps: Deps, job_id: str) -> jobs.Job | None:
    row = await job_row(deps, job_id)
    return row if row.final else None


async def test_at_most_three_exports_run_per_user_and_the_rest_wait_their_turn(
    client: AsyncTestClient[Litestar],
    auth: dict[str, str],
    settings: Settings,
    deps: Deps,
    world: None,
) -> None:
    gate = Gate(deps.storage)
    ids = []
    for n in range(5):
        body = {"dataset": "bookkeeping_records", "format": "csv", "filters": {"qty_min": n}}
        ids.append((await client.post("/v1/exports", json=body, headers=auth)).json()["id"])
    working = asyncio.create_task(gated_worker(settings, deps, gate))

    async def three_running() -> bool:
        rows = [await job_row(deps, i) for i in ids]
        running = [r.status for r in rows].count("running")
        return running == 3 and await deps.redis.zcard("arq:queue") == 3

    await until(three_running, "three exports running, two deliveries turned away")
    views = [(await client.get(f"/v1/jobs/{i}", headers=auth)).json() for i in ids]
    assert [v["status"] for v in views] == ["running"] * 3 + ["queued"] * 2
    assert [v["queue_position"] for v in views] == [None, None, None, 1, 2]

    # The reconciler leaves jobs held back by the limit alone.
    await deps.db.execute(
        "UPDATE jobs SET updated_at = now() - interval '5 minutes' WHERE id = ANY($1::uuid[])",
        ids[3:],
    )
    ctx = {"deps": deps, "redis": arq_redis(deps.redis), "settings": settings}
    assert await reconcile_jobs(ctx) == {"revived": 0, "crashed_out": 0, "requeued": 0}
    assert await deps.redis.zcard("arq:queue") == 3

    gate.open.set()
    await asyncio.wait_for(working, DEADLINE)
    for _ in range(3):  # the burst worker ends once the queue is empty; the next turn runs
        if all([(await job_row(deps, i)).final for i in ids]):
            break
        await gated_worker(settings, deps, gate)
    assert [(await job_row(deps, i)).status for i in ids] == ["succeeded"] * 5
    assert gate.most_writing == 3


async def test_twenty_one_identical_idempotent_posts_make_one_job(
    client: AsyncTestClient[Litestar], auth: dict[str, str], deps: Deps
) -> None:
    body = {"dataset": "bookkeeping_records", "format": "xlsx", "preset": "essential"}
    headers = {**auth, "Idempotency-Key": "export-42"}
    responses = await asyncio.gather(
        *(client.post("/v1/exports", json=body, headers=headers) for _ in range(21))
    )
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 20
    assert await deps.db.fetchval("SELECT count(*) FROM jobs") == 1
    different = await client.post("/v1/exports", json={**body, "format": "csv"}, headers=headers)
    assert different.status_code == 422
    assert different.json()["errors"][0]["field"] == "Idempotency-Key"


async def test_another_orgs_job_is_404_on_status_events_download_and_cancel(
    client: AsyncTestClient[Litestar],
    auth: dict[str, str],
    make_token: Any,
    world: None,
    run_worker: WorkerRun,
) -> None:
    body = {"dataset": "bookkeeping_records", "format": "csv", "account_id": "main"}
    job = (await client.post("/v1/exports", json=body, headers=auth)).json()
    await run_worker()
    globex = {"Authorization": f"Bearer {make_token(org='globex')}"}
    for method, url in (
        ("GET", f"/v1/jobs/{job['id']}"),
        ("GET", f"/v1/jobs/{job['id']}/events"),
        ("GET", f"/v1/exports/{job['id']}/download"),
        ("POST", f"/v1/jobs/{job['id']}/cancel"),
    ):
        response = await client.request(method, url, headers=globex)
        assert response.status_code == 404, url
        assert response.json()["type"] == "urn:ferry:problem:not-found"
    # The owner still can.
    mine = await client.get(
        f"/v1/exports/{job['id']}/download", headers=auth, follow_redirects=False
    )
    assert mine.status_code in (200, 307)


async def test_files_expire_after_their_ttl(
    client: AsyncTestClient[Litestar],
    auth: dict[str, str],
    deps: Deps,
    settings: Settings,
    world: None,
    run_worker: WorkerRun,
) -> None:
    body = {"dataset": "bookkeeping_records", "format": "json", "account_id": "other"}
    job = (await client.post("/v1/exports", json=body, headers=auth)).json()
    await run_worker()
    prefix = f"acme/exports/{job['id']}/"
    assert len(await stored_keys(deps, prefix)) == 1
    ctx = {"deps": deps, "redis": arq_redis(deps.redis), "settings": settings}
    assert await expire_exports(ctx) == 0  # not yet: 7 days
    await deps.db.execute(
        "UPDATE jobs SET result = jsonb_set(result, '{expires_at}', to_jsonb(now())) WHERE id = $1",
        uuid.UUID(job["id"]),
    )
    assert await expire_exports(ctx) == 1
    view = (await client.get(f"/v1/jobs/{job['id']}", headers=auth)).json()
    assert view["status"] == "expired"
    assert view["links"]["download"] is None
    assert await stored_keys(deps, prefix) == []
    gone = await client.get(f"/v1/exports/{job['id']}/download", headers=auth)
    assert gone.status_code == 410
    assert (await deps.events.read(job_stream(job["id"])))[-1].type == "expired"


async def test_storage_refusing_writes_fails_the_job_with_a_message_to_act_on(
    client: AsyncTestClient[Litestar],
    auth: dict[str, str],
    deps: Deps,
    world: None,
    run_worker: WorkerRun,
) -> None:
    storage: Any = deps.storage
    if storage.backend == "s3":
        broken = msgspec_replace(deps, storage=type(storage)(storage.client, "no-such-bucket"))
        fix = "FERRY_S3_BUCKET"
    else:
        uploads = storage.root / ".uploads"
        uploads.rmdir()
        uploads.write_text("a file where the folder should be")
        broken, fix = deps, "FERRY_STORAGE_DIR"
    body = {"dataset": "bookkeeping_records", "format": "csv", "account_id": "main"}
    job = (await client.post("/v1/exports", json=body, headers=auth)).json()
    await run_worker(deps=broken)
    view = (await client.get(f"/v1/jobs/{job['id']}", headers=auth)).json()
    assert view["status"] == "failed"
    assert "storage refused" in view["error"]["message"]
    assert fix in view["error"]["message"]
    assert view["links"]["download"] is None


# --- crash recovery ---------------------------------------------------------------------


async def test_a_worker_killed_mid_export_leaves_exactly_one_file_after_recovery(
    client: AsyncTestClient[Litestar],
    auth: dict[str, str],
    deps: Deps,
    settings: Settings,
    tmp_path: Path,
    run_worker: WorkerRun,
) -> None:
    await seed_records(deps, "acme", "big", 30_000)
    body = {"dataset": "bookkeeping_records", "format": "xlsx", "account_id": "big"}
    job = (await client.post("/v1/exports", json=body, headers=auth)).json()
    with open(tmp_path / "worker.log", "wb") as log:  # noqa: ASYNC230 - a log file
        proc = subprocess.Popen(  # noqa: ASYNC220 - a real worker process, to SIGKILL
            [str(FERRY), "worker"],
            env=ferry_env(
                settings,
                job_lease_seconds="2",
                xlsx_engine="xlsxwriter",  # the slow engine: time to kill it mid-file
                log_level="WARNING",
            ),
            stdout=log,
            stderr=log,
        )
    try:

        async def half_way() -> bool:
            events = await deps.events.read(job_stream(job["id"]))
            return any(
                e.type == "progress" and 0 < e.data["done"] < e.data["total"] for e in events
            )

        await until(half_way, "the worker to be half way", deadline=30)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed = await job_row(deps, job["id"])
    assert killed.status == "running"
    assert killed.attempt == 1

    async def lapsed() -> bool:
        return bool(
            await deps.db.fetchval("SELECT lease_until < now() FROM jobs WHERE id = $1", killed.id)
        )

    await until(lapsed, "the dead worker's lease to lapse", deadline=10)
    ctx = {"deps": deps, "redis": arq_redis(deps.redis), "settings": settings}
    assert (await reconcile_jobs(ctx))["revived"] == 1
    # The reconciler dropped the dead worker's delivery, so only the new run is queued
    # (beside the dead worker's next cron tick) and a burst worker ends once it is done.
    queued = [m.decode() for m in await deps.redis.zrange("arq:queue", 0, -1)]
    assert [q for q in queued if not q.startswith("cron:")] == [f"run_export:{job['id']}:1"]
    await run_worker()

    done = await job_row(deps, job["id"])
    assert done.status == "succeeded"
    assert done.attempt == 2
    assert done.result is not None
    keys = await stored_keys(deps, f"acme/exports/{job['id']}/")
    assert keys == [f"acme/exports/{job['id']}/{done.result['filename']}"]
    view = (await client.get(f"/v1/jobs/{job['id']}", headers=auth)).json()
    file = await download(client, view, auth)
    assert hashlib.sha256(file.content).hexdigest() == done.result["sha256"]
    (tmp_path / "out.xlsx").write_bytes(file.content)
    sheet = CalamineWorkbook.from_path(str(tmp_path / "out.xlsx")).get_sheet_by_index(0)
    table = sheet.to_python()
    expected = await records(deps, account="big")
    assert table[0] == [LABELS[c] for c in PRESETS["all"]]
    assert len(table) - 1 == len(expected) == 30_000
    assert [row[0] for row in table[1:]] == [r["ebay_order_id"] for r in expected]
