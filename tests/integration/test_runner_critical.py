"""A critical step of a job (a COMMIT and its record) is not cut short by a cancel request."""

import asyncio
from typing import Any

from services.core import jobs
from services.core.deps import Deps
from services.core.events import job_stream
from services.worker.runner import JobRun
from tests.conftest import WorkerRun
from tests.integration.test_runner import job_function


async def test_a_cancel_during_a_critical_step_waits_for_it(
    deps: Deps, run_worker: WorkerRun, job: jobs.Job
) -> None:
    inside = asyncio.Event()

    async def body(ctx: dict[str, Any], attempt: JobRun) -> None:
        async with attempt.critical():
            await attempt.progress(1, 1)
            inside.set()
            # Long enough for two heartbeats to see the cancel request.
            await asyncio.sleep(2.5)
            await attempt.finish("succeeded", result={"step": "done"})

    async def cancel_inside() -> None:
        await inside.wait()
        await deps.db.execute("UPDATE jobs SET cancel_requested_at = now() WHERE id = $1", job.id)

    await asyncio.gather(run_worker(functions=[job_function(body)]), cancel_inside())
    row = await jobs.get_job(deps.db, job.id, "acme")
    assert row.status == "succeeded"
    assert row.result == {"step": "done"}
    assert [e.type for e in await deps.events.read(job_stream(job.id))][-1] == "succeeded"


async def test_a_cancel_after_a_critical_step_stops_the_job(
    deps: Deps, run_worker: WorkerRun, job: jobs.Job
) -> None:
    inside = asyncio.Event()
    after: list[str] = []

    async def body(ctx: dict[str, Any], attempt: JobRun) -> None:
        async with attempt.critical():
            inside.set()
            await asyncio.sleep(2.5)
        after.append("reached")
        await asyncio.sleep(5)  # cancelled here
        after.append("not reached")

    async def cancel_inside() -> None:
        await inside.wait()
        await deps.db.execute("UPDATE jobs SET cancel_requested_at = now() WHERE id = $1", job.id)

    await asyncio.gather(run_worker(functions=[job_function(body)]), cancel_inside())
    row = await jobs.get_job(deps.db, job.id, "acme")
    assert row.status == "cancelled"
    assert after == ["reached"]
