"""A rolling deploy: SIGTERM to a worker while another one runs beside it."""

from __future__ import annotations

import signal

from services.core.deps import Deps
from tests.conftest import JobFactory, TokenFactory
from tests.e2e.export_files import seed_records
from tests.e2e.imports_helpers import Client, orders_csv, records, upload
from tests.faults.conftest import (
    HAND_BACK_SECONDS,
    Workers,
    assert_exported_once,
    claimed,
    export,
    job,
    reached,
    records_locked,
    until,
)

ROWS = 60_000
DRAIN = 1.0
LEASE = 60  # far longer than the test: nothing here waits for a lease to lapse


async def test_a_stopped_worker_finishes_short_jobs_and_hands_long_ones_to_another_at_once(
    client: Client,
    make_token: TokenFactory,
    deps: Deps,
    make_job: JobFactory,
    workers: Workers,
) -> None:
    auth = {"Authorization": f"Bearer {make_token()}"}
    await seed_records(deps, "acme", "big", ROWS)
    a = await workers.start("a", job_lease_seconds=LEASE, worker_drain_seconds=DRAIN).ready()
    uploaded = await upload(client, auth, orders_csv(50))
    assert uploaded.status_code == 202, uploaded.text
    commit = uploaded.json()["id"]
    await until(reached(deps, commit, "validated"), "the import to validate", workers)

    async with records_locked(deps):  # a holds both jobs, each waiting in its first query
        long = await export(deps, make_job, "xlsx", "big")
        committing = await client.post(f"/v1/imports/{commit}/commit", headers=auth)
        assert committing.status_code == 202, committing.text
        await until(claimed(deps, long.id), "a to start the export", workers)
        await until(claimed(deps, commit), "a to start the commit", workers)
        b = workers.start("b", job_lease_seconds=LEASE)  # it starts up once the lock is gone
        a.signal(signal.SIGTERM)
    # The commit takes milliseconds: it ends on a, within the drain. The export does not.
    assert await a.exited(DRAIN + HAND_BACK_SECONDS) == 0
    committed = await job(deps, commit)
    assert (committed.status, committed.attempt) == ("committed", 2)  # validation, then a's
    assert len(await records(deps)) == 50
    assert await deps.db.fetchval("SELECT count(*) FROM import_batches") == 1

    # Handed back under a new run, not revived after its lease (that would count a crash).
    done = await until(reached(deps, long.id, "succeeded", "failed"), "b to export", workers)
    await assert_exported_once(deps, done, ROWS)
    assert (done.run, done.attempt, done.crashes) == (1, 2, 0)
    assert b.alive
