"""A worker killed during a commit: after recovery the batch is in exactly once, never half."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from services.core.deps import Deps
from services.core.queue import arq_redis
from services.core.settings import Settings
from services.worker.jobs.maintenance import reconcile_jobs
from tests.conftest import ROOT, WorkerRun, ferry_env
from tests.e2e.imports_helpers import Client, imported, job_row, orders_csv, records

ROWS = 3000


def start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "worker"],
        env=ferry_env(settings, log_level="WARNING"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# The statement of a commit that writes the records (COPY; INSERT … SELECT without a
# second connection free).
WRITING_RECORDS = (
    "(query LIKE 'COPY \"bookkeeping_records\"%' "
    "OR query LIKE 'INSERT INTO \"bookkeeping_records\"%')"
)


@contextlib.asynccontextmanager
async def holding_the_last_order(deps: Deps) -> AsyncIterator[None]:
    """An uncommitted row with the file's last order id: a commit's COPY (or INSERT …
    SELECT) inserts the rows before it and then waits on it — mid-transaction, half done."""
    last = f"10-{ROWS - 1:05d}-{(ROWS - 1) * 7 % 100000:05d}"
    async with deps.db.acquire() as blocker:
        hold = blocker.transaction()
        await hold.start()
        await blocker.execute(
            "INSERT INTO bookkeeping_records (org_id, account_id, ebay_order_id, sale_date, "
            "item_name, sale_price_cents) VALUES ('acme', 'main', $1, '2026-01-01', 'x', 1)",
            last,
        )
        try:
            yield
        finally:
            await hold.rollback()


async def wait_for(deps: Deps, sql: str, *args: Any) -> None:
    deadline = time.monotonic() + 30
    while not await deps.db.fetchval(sql, *args):
        assert time.monotonic() < deadline, f"timed out waiting for: {sql}"
        await asyncio.sleep(0.05)


async def recover(deps: Deps, job_id: str, run_worker: WorkerRun) -> None:
    """What happens after a worker died: its lease lapses, the reconciler re-enqueues."""
    await deps.db.execute(
        "UPDATE jobs SET lease_until = now() - interval '1 second' "
        "WHERE id = $1::uuid AND lease_until IS NOT NULL",
        job_id,
    )
    await reconcile_jobs({"deps": deps, "redis": arq_redis(deps.redis)})
    await run_worker()


async def test_a_worker_killed_mid_insert_commits_exactly_once_after_recovery(
    client: Client,
    auth: dict[str, str],
    run_worker: WorkerRun,
    deps: Deps,
    settings: Settings,
) -> None:
    doc = await imported(client, auth, run_worker, orders_csv(ROWS))
    async with holding_the_last_order(deps):
        accepted = await client.post(f"/v1/imports/{doc['id']}/commit", headers=auth)
        assert accepted.status_code == 202
        worker = start_worker(settings)
        try:
            await wait_for(
                deps,
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database() "
                f"AND {WRITING_RECORDS}",
            )
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    # The dead worker's backend finishes its statement, finds its client gone, rolls back.
    await wait_for(
        deps,
        "SELECT count(*) = 0 FROM pg_stat_activity WHERE datname = current_database() "
        f"AND {WRITING_RECORDS} AND pid <> pg_backend_pid()",
    )
    assert await records(deps) == []
    assert await deps.db.fetchval("SELECT count(*) FROM import_batches") == 0
    assert (await job_row(deps, doc["id"]))["status"] == "committing"

    await recover(deps, doc["id"], run_worker)
    job = await job_row(deps, doc["id"])
    assert job["status"] == "committed"
    assert job["attempt"] == 3  # validation, the killed commit, the one that finished
    rows = await records(deps)
    assert len(rows) == ROWS
    assert len({r["ebay_order_id"] for r in rows}) == ROWS
    assert await deps.db.fetchval("SELECT count(*) FROM import_batches") == 1
    assert job["result"]["batch"]["rows"] == ROWS


async def test_a_commit_that_landed_before_the_worker_died_is_not_repeated(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    doc = await imported(client, auth, run_worker, orders_csv(50))
    await client.post(f"/v1/imports/{doc['id']}/commit", headers=auth)
    await run_worker()
    batch = (await job_row(deps, doc["id"]))["result"]["batch"]
    # As if the worker died after COMMIT but before writing the job row.
    await deps.db.execute(
        "UPDATE jobs SET status = 'committing', finished_at = NULL, result = result - 'batch', "
        "lease_until = now() + interval '1 minute' WHERE id = $1::uuid",
        doc["id"],
    )
    await recover(deps, doc["id"], run_worker)
    job = await job_row(deps, doc["id"])
    assert job["status"] == "committed"
    assert job["result"]["batch"]["id"] == batch["id"]
    assert len(await records(deps)) == 50
    assert await deps.db.fetchval("SELECT count(*) FROM import_batches") == 1


async def test_a_cancel_during_the_commit_leaves_nothing_half_committed(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    doc = await imported(client, auth, run_worker, orders_csv(ROWS))
    async with holding_the_last_order(deps):
        await client.post(f"/v1/imports/{doc['id']}/commit", headers=auth)

        async def cancel_when_blocked() -> None:
            await wait_for(
                deps,
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database() "
                f"AND {WRITING_RECORDS}",
            )
            await deps.db.execute(
                "UPDATE jobs SET cancel_requested_at = now() WHERE id = $1::uuid", doc["id"]
            )

        await asyncio.gather(run_worker(), cancel_when_blocked())
    job = await job_row(deps, doc["id"])
    assert job["status"] == "cancelled"
    assert await records(deps) == []
    assert await deps.db.fetchval("SELECT count(*) FROM import_batches") == 0
