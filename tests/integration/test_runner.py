"""The attempt machinery every job function runs in, exercised by a real arq worker."""

import asyncio
from typing import Any

from arq.worker import func

from services.core import jobs
from services.core.deps import Deps
from services.core.errors import InvalidInput, Transient
from services.core.events import job_stream
from services.worker.runner import JobRun, run_job
from tests.conftest import WorkerRun

calls: list[int] = []


def job_function(body: Any) -> Any:
    async def run_export(ctx: dict[str, Any], job_id: str, run: int) -> None:
        calls.append(ctx["job_try"])

        async def _body(attempt: JobRun) -> None:
            await body(ctx, attempt)

        await run_job(ctx, job_id, run, stage=jobs.RUN_EXPORT, body=_body)

    return func(run_export, name="run_export")


async def test_a_job_reports_progress_and_finishes(
    deps: Deps, run_worker: WorkerRun, job: jobs.Job
) -> None:
    async def body(ctx: dict[str, Any], attempt: JobRun) -> None:
        for done in range(3):
            await attempt.progress(done, 3)
        await attempt.finish("succeeded", result={"rows": 3})

    await run_worker(functions=[job_function(body)])
    row = await jobs.get_job(deps.db, job.id, "acme")
    assert row.status == "succeeded"
    assert row.result == {"rows": 3}
    assert row.attempt == 1
    assert row.lease_until is None
    events = await deps.events.read(job_stream(job.id))
    types = [e.type for e in events]
    assert types[0] == "status"
    assert types[-1] == "succeeded"
    assert "progress" in types
    assert events[-1].data["result"] == {"rows": 3}


async def test_a_transient_failure_is_retried(
    deps: Deps, run_worker: WorkerRun, job: jobs.Job
) -> None:
    async def body(ctx: dict[str, Any], attempt: JobRun) -> None:
        if ctx["job_try"] == 1:
            raise Transient("storage said 503")
        await attempt.finish("succeeded", result={"try": ctx["job_try"]})

    # The retry is deferred by 2 s of backoff; the burst worker waits for it.
    await run_worker(functions=[job_function(body)])
    row = await jobs.get_job(deps.db, job.id, "acme")
    assert row.status == "succeeded"
    assert row.result == {"try": 2}
    assert row.attempt == 2


async def test_a_permanent_failure_fails_the_job_with_its_message(
    deps: Deps, run_worker: WorkerRun, job: jobs.Job
) -> None:
    async def body(ctx: dict[str, Any], attempt: JobRun) -> None:
        raise InvalidInput("column 'colour' does not exist")

    await run_worker(functions=[job_function(body)])
    row = await jobs.get_job(deps.db, job.id, "acme")
    assert row.status == "failed"
    assert row.error == {"type": "invalid-input", "message": "column 'colour' does not exist"}
    events = await deps.events.read(job_stream(job.id))
    assert events[-1].type == "failed"


async def test_a_cancel_request_stops_a_running_job(
    deps: Deps, run_worker: WorkerRun, job: jobs.Job
) -> None:
    stopped: list[bool] = []

    async def body(ctx: dict[str, Any], attempt: JobRun) -> None:
        try:
            for done in range(10_000):
                await attempt.progress(done, None)
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            stopped.append(True)
            raise
        await attempt.finish("succeeded")

    async def cancel_once_running() -> None:
        after = "0-0"
        while True:
            events = await deps.events.read(job_stream(job.id), after, block_ms=5000)
            if any(e.type == "progress" for e in events):
                break
            after = events[-1].id if events else after
        await deps.db.execute("UPDATE jobs SET cancel_requested_at = now() WHERE id = $1", job.id)

    await asyncio.gather(run_worker(functions=[job_function(body)]), cancel_once_running())
    row = await jobs.get_job(deps.db, job.id, "acme")
    assert row.status == "cancelled"
    assert stopped == [True]
    assert row.finished_at is not None
    assert row.progress is not None
    assert row.progress["done"] < 9_999


async def test_a_stale_delivery_does_nothing(
    deps: Deps, run_worker: WorkerRun, job: jobs.Job
) -> None:
    ran: list[str] = []

    async def body(ctx: dict[str, Any], attempt: JobRun) -> None:
        ran.append(str(attempt.job.id))
        await attempt.finish("succeeded")

    await deps.db.execute("UPDATE jobs SET run = run + 1 WHERE id = $1", job.id)  # reconciler
    await run_worker(functions=[job_function(body)])
    assert ran == []
    assert (await jobs.get_job(deps.db, job.id, "acme")).status == "queued"
