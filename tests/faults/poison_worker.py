"""A `ferry worker` whose exports marked ``{"poison": true}`` kill the process running them.

It stands in for a file that takes down whatever reads it (the imports' own guard
refuses the ones known today): the job is claimed like any other, then its process
ends at once, as an out-of-memory kill would. Every other job runs the real code.

``python -m tests.faults.poison_worker`` runs the worker; with ``alone <function> <job
id> <run> <try>`` it is the child a crashed job runs in (services.worker.solo).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from services.core import jobs
from services.core.logs import log_config
from services.core.settings import load_settings
from services.worker import solo
from services.worker.jobs.exports import run_export as real_run_export
from services.worker.runner import JobRun, run_job
from services.worker.settings import JOB_FUNCTIONS, create_worker

CHILD = [sys.executable, "-m", "tests.faults.poison_worker", "alone"]
DIES_WITH = 70


async def run_export(ctx: dict[str, Any], job_id: str, run: int) -> None:
    job = await jobs.load_job(ctx["deps"].db, job_id)
    if job is None or not job.params.get("poison"):
        await real_run_export(ctx, job_id, run)
        return

    async def die(attempt: JobRun) -> None:
        os._exit(DIES_WITH)

    await run_job(ctx, job_id, run, stage=jobs.RUN_EXPORT, body=die)


FUNCTIONS = {f.__name__: f for f in JOB_FUNCTIONS} | {"run_export": run_export}


def main() -> None:
    if sys.argv[1:2] == ["alone"]:
        solo.main(FUNCTIONS)
        return
    settings = load_settings(os.environ)
    log_config(settings.log_level, settings.log_format)
    functions = [solo.isolated(f, child=CHILD) for f in FUNCTIONS.values()]
    create_worker(settings, functions=functions).run()


if __name__ == "__main__":
    main()
