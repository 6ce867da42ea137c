"""Workers that die under a job: SIGKILL mid-export, and a job that kills every worker."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable

from services.core.deps import Deps
from tests import workbooks
from tests.conftest import JobFactory, TokenFactory
from tests.e2e.export_files import seed_records
from tests.e2e.imports_helpers import XLSX, Client, upload
from tests.faults.conftest import (
    Workers,
    assert_exported_once,
    claimed,
    export,
    job,
    reached,
    reconcile,
    records_locked,
    running,
    until,
)
from tests.workbooks import HOSTILE

ROWS = 40_000


async def test_a_worker_killed_mid_export_leaves_the_job_to_another_which_finishes_it_once(
    deps: Deps, make_job: JobFactory, workers: Workers
) -> None:
    await seed_records(deps, "acme", "big", ROWS)
    a = workers.start("a")
    job_a = await export(deps, make_job, "xlsx", "big")
    await until(running(deps, job_a.id), "worker a to be half way", workers)
    a.signal(signal.SIGKILL)
    await a.exited(10)

    counts = await reconcile(deps, workers, job_a.id)
    assert counts == {"revived": 1, "crashed_out": 0, "requeued": 0}
    # Started only now: its own reconciler tick would otherwise race this one.
    b = workers.start("b")
    done = await until(reached(deps, job_a.id, "succeeded", "failed"), "worker b", workers)
    await assert_exported_once(deps, done, ROWS)
    assert (done.attempt, done.crashes) == (2, 1)
    assert b.alive


async def test_a_job_that_keeps_killing_its_worker_fails_at_three_crashes_and_spares_the_rest(
    deps: Deps, make_job: JobFactory, workers: Workers
) -> None:
    await seed_records(deps, "acme", "big", 5_000)
    first = await workers.start("first", module="tests.faults.poison_worker").ready()
    async with records_locked(deps):  # the bystander is still running when the poison strikes
        bystander = await export(deps, make_job, "xlsx", "big")
        await until(claimed(deps, bystander.id), "the bystander export to start", workers)
        poison = await export(deps, make_job, "csv", "big", poison=True)
        await first.exited(30)  # the poison took the worker down, and the bystander with it

    counts = await reconcile(deps, workers, poison.id, bystander.id)
    assert counts == {"revived": 2, "crashed_out": 0, "requeued": 0}
    # From now on each of the two runs alone, in a process of its own: the worker lives.
    second = workers.start("second", module="tests.faults.poison_worker")
    spared = await until(reached(deps, bystander.id, "succeeded", "failed"), "bystander", workers)
    await assert_exported_once(deps, spared, 5_000)
    assert spared.crashes == 1
    for crashes in (2, 3):
        await until(attempted(deps, poison.id, crashes - 1), "the poison's next attempt", workers)
        counts = await reconcile(deps, workers, poison.id)
        assert counts["crashed_out" if crashes == 3 else "revived"] == 1
    failed = await job(deps, poison.id)
    assert (failed.status, failed.crashes) == ("failed", 3)
    assert failed.error is not None
    assert failed.error["message"].startswith("this job stopped its worker 3 times")
    assert "it was not retried again" in failed.error["message"]
    assert second.alive
    # Never revived again, and the worker still takes new work.
    assert (await reconcile(deps, workers))["revived"] == 0
    fresh = await export(deps, make_job, "csv", "big")
    finished = await until(reached(deps, fresh.id, "succeeded"), "a new export", workers)
    assert (finished.attempt, finished.crashes) == (1, 0)
    assert second.alive


def attempted(deps: Deps, job_id: object, crashes: int) -> Callable[[], Awaitable[bool]]:
    """A check: an attempt after ``crashes`` crashes holds the job (its lease is set)."""

    async def check() -> bool:
        row = await job(deps, job_id)
        return row.lease_until is not None and row.crashes == crashes

    return check


async def test_sparse_sheets_are_refused_by_a_worker_that_lives_on_with_its_other_jobs(
    client: Client, make_token: TokenFactory, deps: Deps, make_job: JobFactory, workers: Workers
) -> None:
    auth = {"Authorization": f"Bearer {make_token()}"}
    await seed_records(deps, "acme", "big", 5_000)
    worker = await workers.start("worker").ready()
    uploads = {}
    for shape in HOSTILE:
        sent = await upload(
            client, auth, workbooks.hostile_xlsx(shape), filename=f"{shape}.xlsx", content_type=XLSX
        )
        assert sent.status_code == 202, sent.text
        uploads[shape] = sent.json()["id"]
    beside = await export(deps, make_job, "xlsx", "big")
    for shape, job_id in uploads.items():
        ended = await until(reached(deps, job_id, "validated", "failed"), shape, workers)
        assert ended.crashes == 0, shape
        if HOSTILE[shape][1] is None:
            assert ended.status == "validated", (shape, ended.error)
        else:
            assert ended.status == "failed", shape
            assert ended.error is not None
            assert f"uses the range {HOSTILE[shape][1]}" in ended.error["message"]
    await assert_exported_once(
        deps, await until(reached(deps, beside.id, "succeeded", "failed"), "export", workers), 5_000
    )
    assert worker.alive
