"""The arq worker: one plain settings class, plus what comes from Ferry's Settings."""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar, cast

from arq import cron
from arq.connections import RedisSettings
from arq.cron import CronJob
from arq.worker import Worker, get_kwargs

from services.core.deps import Deps, open_deps
from services.core.imports import tune_process
from services.core.queue import deserialize, serialize
from services.core.settings import Settings
from services.worker.jobs.exports import expire_exports, run_export
from services.worker.jobs.imports import (
    clean_imports,
    close_rollback_windows,
    commit_import,
    expire_uploads,
    purge_import_batches,
    rollback_import,
    validate_import,
)
from services.worker.jobs.maintenance import abort_stale_uploads, reconcile_jobs
from services.worker.jobs.webhooks import deliver_webhooks, purge_webhook_log
from services.worker.runner import MAX_TRIES


async def startup(ctx: dict[str, Any]) -> None:
    """Tune the process for imports; open Ferry's dependencies unless a test handed them in."""
    tune_process(ctx["settings"])
    if "deps" in ctx:
        return
    stack = contextlib.AsyncExitStack()
    ctx["deps"] = await stack.enter_async_context(open_deps(ctx["settings"]))
    ctx["exit_stack"] = stack


async def shutdown(ctx: dict[str, Any]) -> None:
    stack = ctx.pop("exit_stack", None)
    if stack is not None:
        await stack.aclose()


class WorkerSettings:
    """What every Ferry worker runs; ``worker_kwargs`` adds the per-deployment parts."""

    functions: ClassVar[list[Any]] = [
        run_export,
        validate_import,
        commit_import,
        rollback_import,
        deliver_webhooks,
    ]
    cron_jobs: ClassVar[list[CronJob]] = [
        cron(reconcile_jobs, second={5, 35}, run_at_startup=True, timeout=60),
        cron(abort_stale_uploads, minute={17}, second=0, timeout=300),
        cron(expire_exports, minute={7, 37}, second=0, timeout=300),
        cron(close_rollback_windows, minute=set(range(2, 60, 10)), second=0, timeout=300),
        cron(clean_imports, minute={27}, second=0, timeout=600),
        cron(expire_uploads, minute={47}, second=0, timeout=300),
        cron(purge_import_batches, hour={3}, minute={41}, second=0, timeout=1800),
        # Deliveries whose wake-up was lost (Redis) or whose worker died; woken otherwise.
        cron(deliver_webhooks, second={20, 50}, timeout=300),
        cron(purge_webhook_log, hour={4}, minute={11}, second=0, timeout=600),
    ]
    on_startup = startup
    on_shutdown = shutdown
    job_serializer = serialize  # msgpack, never pickle
    job_deserializer = deserialize
    health_check_interval = 15
    keep_result = 0  # the job row keeps results; a kept arq result would block re-runs
    allow_abort_jobs = True
    max_tries = MAX_TRIES


def worker_kwargs(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for ``arq.Worker`` from WorkerSettings and Ferry's Settings."""
    return {
        **get_kwargs(cast(Any, WorkerSettings)),
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "max_jobs": settings.worker_concurrency,
        "job_timeout": settings.job_timeout_seconds,
        "ctx": {"settings": settings},
        **overrides,
    }


def create_worker(settings: Settings, **overrides: Any) -> Worker:
    return Worker(**worker_kwargs(settings, **overrides))


async def drain(settings: Settings, deps: Deps, **overrides: Any) -> None:
    """Run a worker on ``deps`` in this process until the queue is empty (tests, benchmarks)."""
    worker = create_worker(
        settings,
        burst=True,
        handle_signals=False,
        poll_delay=0.05,
        cron_jobs=[],
        ctx={"settings": settings, "deps": deps},
        **overrides,
    )
    try:
        await worker.main()
    finally:
        await worker.close()
