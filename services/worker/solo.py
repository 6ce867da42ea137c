"""A job whose worker died under it runs its next attempts in a process of its own.

A worker that dies (killed, out of memory) takes every job it was running with it, and
nobody can tell which one was to blame. So each of them — a job with ``crashes`` —
runs from then on alone, in a child process the worker starts and waits for: if the
job takes that process down, the crash is its own (the reconciler counts it when the
lease lapses, and fails the job at FERRY_JOB_MAX_CRASHES), while the worker and every
other job on it carry on.

The child runs the same job function through the same runner; it exits 0 when the
attempt ended, ``RETRY`` when the runner asked for a retry (the parent raises
``arq.Retry`` in its place), and hands the job back on SIGTERM like a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
from arq import Retry
from arq.worker import Function, func

from services.core import jobs
from services.core.deps import open_deps
from services.core.imports import tune_process
from services.core.logs import log_config
from services.core.queue import arq_redis
from services.core.settings import Settings, environ, load_settings
from services.worker.context import deps, job_try

log = logging.getLogger(__name__)

JobFunction = Callable[[dict[str, Any], str, int], Awaitable[None]]

CHILD = [sys.executable, "-m", "services.worker.solo"]
RETRY = 75  # EX_TEMPFAIL: the attempt failed for a transient reason, try again later
STOP_SECONDS = 15.0  # a stopping parent waits this long for its child to hand back


def isolated(function: JobFunction, *, child: list[str] = CHILD) -> Function:
    """``function`` as an arq job that runs alone in a child process once it has crashed."""
    name = function.__name__

    async def run(ctx: dict[str, Any], job_id: str, run: int) -> None:
        if not ctx.get("alone"):
            job = await jobs.load_job(deps(ctx).db, job_id)
            if job is not None and job.crashes and job.run == run and not job.final:
                await run_alone(ctx, [*child, name, job_id, str(run), str(job_try(ctx))])
                return
        await function(ctx, job_id, run)

    run.__qualname__ = run.__name__ = name
    return func(run, name=name)


async def run_alone(ctx: dict[str, Any], argv: list[str]) -> None:
    """Run one job in a child process and wait for it; stop it when this task is cancelled."""
    settings = deps(ctx).settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    proc = await asyncio.create_subprocess_exec(*argv, env=env | environ(settings))
    try:
        code = await proc.wait()
    except asyncio.CancelledError:
        # This worker is stopping, or the job ran out of time: the child hands it back.
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proc.wait()), STOP_SECONDS)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if code == RETRY:
        raise Retry(defer=2 ** job_try(ctx))
    if code:
        log.warning(
            "a job running alone ended its process",
            extra={"action": "job_process_died", "job_id": argv[-3], "code": code},
        )


def main(functions: Mapping[str, JobFunction] | None = None) -> None:
    """The child: ``python -m services.worker.solo <function> <job id> <run> <try>``."""
    if functions is None:
        from services.worker.settings import JOB_FUNCTIONS

        functions = {f.__name__: f for f in JOB_FUNCTIONS}
    name, job_id, run, tries = sys.argv[-4:]
    settings = load_settings(os.environ)
    log_config(settings.log_level, settings.log_format)
    code = asyncio.run(_alone(settings, functions[name], job_id, int(run), int(tries)))
    sys.exit(code)


async def _alone(
    settings: Settings, function: JobFunction, job_id: str, run: int, tries: int
) -> int:
    tune_process(settings)
    # The parent's arq timeout stops it a little later, so the runner sees its own first.
    timeout = max(settings.job_timeout_seconds - 2, 1)
    settings = msgspec.structs.replace(settings, job_timeout_seconds=timeout)
    async with open_deps(settings, check_schema=False, role="ferry-worker") as d:
        ctx = {"deps": d, "settings": settings, "redis": arq_redis(d.redis)}
        ctx |= {"alone": True, "job_try": tries}
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        try:
            await asyncio.wait_for(function(ctx, job_id, run), timeout)
        except Retry:
            return RETRY
        except (asyncio.CancelledError, TimeoutError):
            pass  # handed back, or failed for its time: the job row says which
    return 0


if __name__ == "__main__":
    main()
