"""PostgreSQL drops the worker's connections (pg_terminate_backend) in the middle of jobs."""

from __future__ import annotations

from services.core.deps import Deps
from tests.conftest import JobFactory, TokenFactory
from tests.e2e.export_files import seed_records
from tests.e2e.imports_helpers import Client, orders_csv, upload
from tests.faults.conftest import (
    Workers,
    assert_exported_once,
    claimed,
    export,
    reached,
    records_locked,
    running,
    until,
)

ROWS = 40_000


async def kill_worker_backends(deps: Deps) -> int:
    """Terminate every connection the workers hold to this test's database."""
    killed: int = await deps.db.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'ferry-worker'"
    )
    return killed


async def waiting_on_the_lock(deps: Deps, queries: int) -> bool:
    """At least ``queries`` of the workers' statements wait for the held table lock."""
    waiting: int = await deps.db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'ferry-worker' AND wait_event_type = 'Lock'"
    )
    return waiting >= queries


async def test_jobs_whose_database_connections_are_killed_retry_and_end_once(
    client: Client,
    make_token: TokenFactory,
    deps: Deps,
    make_job: JobFactory,
    workers: Workers,
) -> None:
    auth = {"Authorization": f"Bearer {make_token()}"}
    await seed_records(deps, "acme", "big", ROWS)
    worker = await workers.start("worker").ready()
    async with records_locked(deps):  # both jobs wait inside a query
        xlsx = await export(deps, make_job, "xlsx", "big")
        uploaded = await upload(client, auth, orders_csv(2_000))
        assert uploaded.status_code == 202, uploaded.text
        validation = uploaded.json()["id"]
        await until(claimed(deps, xlsx.id), "the export to start", workers)
        await until(claimed(deps, validation), "the validation to start", workers)
        await until(lambda: waiting_on_the_lock(deps, 2), "both jobs in a query", workers)
        assert await kill_worker_backends(deps) >= 2
    # And once more in the middle of the export's sheet.
    await until(running(deps, xlsx.id), "the export to write rows again", workers)
    assert await kill_worker_backends(deps) >= 1

    done = await until(reached(deps, xlsx.id, "succeeded", "failed"), "the export", workers)
    await assert_exported_once(deps, done, ROWS)
    assert (done.attempt, done.crashes) == (3, 0)  # two transient failures, no crash
    validated = await until(reached(deps, validation, "validated", "failed"), "import", workers)
    assert validated.status == "validated", validated.error
    assert validated.attempt >= 2  # the second kill may have caught its retry too
    assert validated.crashes == 0
    assert validated.result is not None
    assert validated.result["totals"]["valid"] == 2_000
    staged = await deps.db.fetchval(f'SELECT count(*) FROM import_staging."{validation}"')
    assert staged == 2_000  # one staging table, each row once
    assert worker.alive
