"""How Ferry jobs travel through arq: function names, job ids, the serializer.

This module is the one place in core that knows arq: the api enqueues through it
and the worker runs what it enqueued, so neither needs the other.

The arq job id is ``<function>:<job id>:<run>``. arq refuses an id it already
holds, so enqueuing the same run twice is harmless; a job that must run again
(re-validation, recovery from a dead worker) gets a new run number first.

PostgreSQL is the truth: a job whose row is written is accepted even when Redis is
away. ``submit`` is how a request hands a job over: it logs a failed enqueue instead
of failing, and the reconciler (``reconcile_jobs``) enqueues the job once Redis is
back.

Idle workers do not poll: they block on the ``WAKE`` list, and ``enqueue`` pushes a
token onto it, so a new job starts within milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime

import msgspec
from arq.connections import ArqRedis
from arq.constants import (
    default_queue_name,
    in_progress_key_prefix,
    job_key_prefix,
    retry_key_prefix,
)
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.core import jobs
from services.core.db.pool import Pool
from services.core.jobs import Job, Stage

log = logging.getLogger(__name__)

SUBMIT_TIMEOUT = 2.0  # seconds a request waits for Redis before leaving it to the reconciler
# Idle workers BLPOP this list; each enqueue pushes a token. Capped: a burst of jobs with
# no worker listening leaves a few spare wake-ups, never a growing list.
WAKE = "ferry:wake"
WAKE_TOKENS = 16
# When the reconciler first saw a run marked in progress by arq while its job row still
# waited unclaimed (``taker_died``); dropped with the run's delivery.
UNCLAIMED = "ferry:unclaimed:"

serialize = msgspec.msgpack.encode
deserialize = msgspec.msgpack.decode

# The worker function that sends due webhook deliveries (no arguments).
DELIVER_WEBHOOKS = "deliver_webhooks"

# The worker function of each stage of a job. Renaming one is a wire change.
FUNCTIONS: dict[str, Stage] = {
    "run_export": jobs.RUN_EXPORT,
    "validate_import": jobs.VALIDATE_IMPORT,
    "commit_import": jobs.COMMIT_IMPORT,
    "rollback_import": jobs.ROLLBACK_IMPORT,
}


def arq_redis(redis: Redis) -> ArqRedis:
    """An arq client sharing ``redis``'s connection pool."""
    return ArqRedis(redis.connection_pool, job_serializer=serialize, job_deserializer=deserialize)


def arq_job_id(function: str, job: Job) -> str:
    return f"{function}:{job.id}:{job.run}"


def function_for(job: Job) -> str | None:
    """The worker function that moves ``job`` on from its status, if any."""
    for function, stage in FUNCTIONS.items():
        if stage.kind == job.kind and job.status in stage.claimable:
            return function
    return None


async def enqueue(redis: ArqRedis, job: Job) -> bool:
    """Hand a job to the workers; False when arq already holds this run."""
    function = function_for(job)
    if function is None:
        raise ValueError(f"a {job.kind} job in status {job.status} is not run by a worker")
    queued = await redis.enqueue_job(
        function, str(job.id), job.run, _job_id=arq_job_id(function, job)
    )
    if queued is None:
        return False
    await wake(redis)
    return True


async def wake(redis: Redis) -> None:
    """Wake one idle worker (it takes every job that is due, not only this one)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.lpush(WAKE, b"1")
        pipe.ltrim(WAKE, 0, WAKE_TOKENS - 1)
        await pipe.execute()


async def submit(redis: ArqRedis, job: Job) -> bool:
    """``enqueue``, but Redis being away is no failure: the job row is written, and the
    reconciler enqueues it when Redis is back. False when it was not enqueued now."""
    try:
        async with asyncio.timeout(SUBMIT_TIMEOUT):
            return await enqueue(redis, job)
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning(
            "enqueue failed; the reconciler will enqueue the job",
            extra={"action": "enqueue_deferred", "job_id": str(job.id), "error": repr(exc)[:200]},
        )
        return False


async def taker_died(redis: ArqRedis, job: Job, *, grace: float) -> bool:
    """Did a worker take this run of a waiting job and die before claiming it?

    arq marks a run in progress when a worker takes it and holds the mark for the job
    timeout (an hour), refusing to enqueue the run again meanwhile; a live worker
    claims the job row within milliseconds. So a run still marked, its row still
    waiting, ``grace`` seconds after the reconciler first saw it so, was taken by a
    worker that died in between (a SIGKILL, the OOM killer).
    """
    function = function_for(job)
    if function is None:
        return False
    delivery = arq_job_id(function, job)
    if not await redis.exists(in_progress_key_prefix + delivery):
        return False
    now = time.time()
    if await redis.set(UNCLAIMED + delivery, repr(now), nx=True, ex=24 * 3600):
        return False  # first seen now
    seen = await redis.get(UNCLAIMED + delivery)
    return seen is not None and now - float(seen) >= grace


async def drop_delivery(redis: ArqRedis, job: Job, run: int) -> None:
    """Remove arq's delivery of an older run of ``job`` (a dead or stopping worker's).

    Left alone it would sit in the queue until arq's in-progress mark expires (the
    job timeout), counting as queue depth, and then only find a newer run. A job that
    ended (crashed out) may have been delivered to any function of its kind.
    """
    function = function_for(job)
    functions = [function] if function else [f for f, s in FUNCTIONS.items() if s.kind == job.kind]
    async with redis.pipeline(transaction=True) as pipe:
        for name in functions:
            stale = f"{name}:{job.id}:{run}"
            pipe.zrem(default_queue_name, stale)
            pipe.delete(
                job_key_prefix + stale,
                in_progress_key_prefix + stale,
                retry_key_prefix + stale,
                UNCLAIMED + stale,
            )
        await pipe.execute()


async def admit_next(db: Pool, redis: ArqRedis, org_id: str, user_id: str, *, limit: int) -> int:
    """Enqueue the owner's oldest waiting exports that fit under the per-user limit.

    Enqueuing is idempotent (arq refuses an id it holds), so racing with the api or
    the reconciler is harmless.
    """
    ready = await jobs.admissible_jobs(
        db, org_id=org_id, user_id=user_id, stage=jobs.RUN_EXPORT, limit=limit
    )
    started = 0
    for job in ready:
        started += await submit(redis, job)
    return started


async def wake_webhooks(
    redis: ArqRedis, *, at: datetime | None = None, key: str | None = None
) -> None:
    """Have a worker send the due webhook deliveries now, or at ``at`` (a retry).

    ``key`` makes the wake-up one of a kind (arq refuses an id it holds). Losing a
    wake-up delays deliveries until the next cron run, never loses them.
    """
    queued = await redis.enqueue_job(DELIVER_WEBHOOKS, _job_id=key, _defer_until=at)
    if queued is not None and at is None:
        await wake(redis)  # an idle worker sends them now, not at its next poll
