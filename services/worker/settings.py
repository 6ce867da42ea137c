"""The arq worker: one plain settings class, plus what comes from Ferry's Settings."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
from typing import Any, ClassVar, cast

from arq import cron
from arq.connections import RedisSettings
from arq.constants import default_queue_name, health_check_key_suffix
from arq.cron import CronJob
from arq.worker import get_kwargs
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.core.deps import Deps, open_deps
from services.core.imports import pipeline, readers, tune_process
from services.core.queue import deserialize, serialize
from services.core.settings import Settings, required
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
from services.worker.jobs.webhooks import (
    deliver_webhooks,
    purge_webhook_log,
    seal_webhook_secrets,
)
from services.worker.runner import MAX_TRIES
from services.worker.solo import isolated
from services.worker.worker import Worker

log = logging.getLogger(__name__)

HEALTH_SECONDS = 15  # how often a worker records its health (arq's health check)

# The functions that move a job on; each runs alone in a child process once it crashed.
JOB_FUNCTIONS = (run_export, validate_import, commit_import, rollback_import)


async def startup(ctx: dict[str, Any]) -> None:
    """Tune the process for imports and start a workbook reader ahead; open Ferry's
    dependencies unless a test handed them in."""
    tune_process(ctx["settings"])
    readers.keep_spare(pipeline.limits(ctx["settings"]))
    if "deps" in ctx:
        return
    stack = contextlib.AsyncExitStack()
    ctx["deps"] = await stack.enter_async_context(open_deps(ctx["settings"], role="ferry-worker"))
    ctx["exit_stack"] = stack
    log.info("worker ready", extra={"action": "worker_ready", "pid": os.getpid()})


async def shutdown(ctx: dict[str, Any]) -> None:
    readers.keep_spare(None)
    stack = ctx.pop("exit_stack", None)
    if stack is not None:
        await stack.aclose()


class WorkerSettings:
    """What every Ferry worker runs; ``worker_kwargs`` adds the per-deployment parts."""

    functions: ClassVar[list[Any]] = [*(isolated(f) for f in JOB_FUNCTIONS), deliver_webhooks]
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
        cron(seal_webhook_secrets, minute={53}, second=0, run_at_startup=True, timeout=300),
    ]
    on_startup = startup
    on_shutdown = shutdown
    job_serializer = serialize  # msgpack, never pickle
    job_deserializer = deserialize
    health_check_interval = HEALTH_SECONDS
    poll_delay = 0  # idle workers block on the wake list instead (worker.Worker._idle)
    keep_result = 0  # the job row keeps results; a kept arq result would block re-runs
    allow_abort_jobs = True
    max_tries = MAX_TRIES


def health_key() -> str:
    """Where this host's worker records its health (``ferry worker --check`` reads it).

    One key per host (a pod, a container), so one hung worker cannot hide behind another.
    """
    return f"{default_queue_name}{health_check_key_suffix}:{socket.gethostname()}"


async def health(settings: Settings) -> tuple[bool, str]:
    """``ferry worker --check``: is this host's worker alive? And one line saying so.

    Alive means its health record is fresh: a worker rewrites it every
    ``health_check_interval`` seconds from its poll loop, and it expires soon after.
    """
    redis = Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2)
    try:
        record = await redis.get(health_key())
    except (RedisError, OSError) as exc:
        return False, f"unhealthy: cannot reach Redis ({exc})"
    finally:
        await redis.aclose()
    if record is None:
        return False, f"unhealthy: no worker on this host reported within {HEALTH_SECONDS + 1} s"
    return True, f"healthy: {record.decode()}"


def redis_settings(settings: Settings) -> RedisSettings:
    # No retries inside arq: Worker.main retries with backoff and says so in one line.
    return dataclasses.replace(
        RedisSettings.from_dsn(required(settings, "redis_url")), conn_retries=0
    )


def worker_kwargs(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for ``Worker`` from WorkerSettings and Ferry's Settings."""
    return {
        **get_kwargs(cast(Any, WorkerSettings)),
        "redis_settings": redis_settings(settings),
        "max_jobs": settings.worker_concurrency,
        "job_timeout": settings.job_timeout_seconds,
        "health_check_key": health_key(),
        "drain_seconds": settings.worker_drain_seconds,
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
