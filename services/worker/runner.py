"""One attempt at a job: claim, lease, progress, cancellation, retry, final write.

arq runs a job at least once, so every job function goes through ``run_job``:

- the claim bumps the attempt and takes a lease in one UPDATE, or finds the job
  is not ours (another run owns it, it was cancelled, it already finished);
- a heartbeat renews the lease every second, stores the latest progress and
  notices a cancel request or a lost lease, and then cancels the job's task, so
  ``async with storage.writer(...)`` aborts its partial upload;
- transient failures go back to the waiting status and ``arq.Retry`` with
  backoff; permanent ones fail the job with a message a user can act on;
- a job cancelled because its worker is stopping (a deploy) is handed back: its
  lease released and a new run enqueued, so another worker starts it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import redis.exceptions
from arq import Retry

from services.core import jobs, logs
from services.core.deps import Deps
from services.core.errors import FerryError, Transient
from services.core.jobs import Job, JobStatus, Stage
from services.core.queue import drop_delivery, enqueue
from services.worker.context import deps, job_try, queue

log = logging.getLogger(__name__)

# Deliveries of one job run, also arq's ``max_tries``: the last transient failure fails it.
MAX_TRIES = 5
HEARTBEAT_SECONDS = 1.0
PROGRESS_SECONDS = 0.5

# Failures of the plumbing, not of the input: worth another try.
TRANSIENT: tuple[type[BaseException], ...] = (
    Transient,
    ConnectionError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,  # pg_terminate_backend, a restart: the next try reconnects
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    # A connection killed mid-COPY can leave asyncpg's protocol in a state its pool
    # reset trips over ("another operation is in progress"); the pool drops it.
    asyncpg.InternalClientError,
    asyncpg.InterfaceError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
# Pauses between tries of the write that hands a failed attempt back for its retry.
RELEASE_PAUSES = (0.0, 0.5, 1.0, 2.0, 4.0)


class JobRun:
    """The attempt a job function works in; see the module docstring."""

    def __init__(self, deps: Deps, job: Job, stage: Stage) -> None:
        self.deps = deps
        self.job = job
        self.stage = stage
        self.cancel_requested = False
        self.lease_lost = False
        self._progress: dict[str, Any] | None = None
        self._published_at = 0.0
        self._task: asyncio.Task[Any] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._critical = False
        self.started = time.monotonic()

    async def __aenter__(self) -> JobRun:
        self._task = asyncio.current_task()
        self._heartbeat = asyncio.create_task(self._beat(), name=f"lease:{self.job.id}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._heartbeat is not None
        self._heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._heartbeat

    @property
    def stopping(self) -> bool:
        """True once the job should stop (for loops running in threads)."""
        return self.cancel_requested or self.lease_lost

    async def progress(self, done: int, total: int | None = None, **extra: Any) -> None:
        """Record progress; stored with the next heartbeat, published about twice a second."""
        self._progress = {"done": done, "total": total, **extra}
        now = time.monotonic()
        if now - self._published_at >= PROGRESS_SECONDS:
            self._published_at = now
            await self.publish("progress", self._progress)

    @contextlib.asynccontextmanager
    async def critical(self) -> AsyncIterator[None]:
        """A step that must not be cut short by a cancel request (a COMMIT and its record).

        A cancel request that arrives inside waits until the block ends; one that
        arrived just before stops the job here, before the step starts.
        """
        task = asyncio.current_task()
        if self.stopping or (task is not None and task.cancelling()):
            raise asyncio.CancelledError
        self._critical = True
        try:
            yield
        finally:
            self._critical = False
        if self.cancel_requested and not self.job.final and task is not None:
            task.cancel()

    async def publish(self, type: str, data: dict[str, Any]) -> None:
        """Best effort: the job row is the truth, events only tell about it."""
        await self.deps.events.announce(self.job, type, data)

    async def finish(
        self,
        status: JobStatus,
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> Job | None:
        """End the attempt in one of its stage's ends (fenced by the attempt); publish it."""
        if status not in self.stage.ends:
            raise ValueError(f"{self.stage.running} does not end in {status}")
        done = await jobs.finish_job(
            self.deps.db, self.job, status, result=result, error=error, progress=self._progress
        )
        await self._announce(done, status)
        return done

    async def _announce(self, job: Job | None, status: str) -> None:
        if job is None:
            log.warning(
                "a newer attempt owns the job, or it ended meanwhile",
                extra={"job_id": str(self.job.id)},
            )
            return
        self.job = job
        await self.publish(status, jobs.job_document(job))

    async def _beat(self) -> None:
        lease = self.deps.settings.job_lease_seconds
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                ours, cancel = await jobs.renew_lease(
                    self.deps.db, self.job, lease_seconds=lease, progress=self._progress
                )
            except TRANSIENT:
                continue  # the lease outlives a short database hiccup
            if cancel and ours and self._critical:
                self.cancel_requested = True  # acted on when the critical step ends
                continue
            if not ours or cancel:
                self.lease_lost, self.cancel_requested = not ours, cancel
                assert self._task is not None
                self._task.cancel()
                return


async def run_job(
    ctx: dict[str, Any],
    job_id: str,
    run: int,
    *,
    stage: Stage,
    body: Callable[[JobRun], Awaitable[None]],
    limit: int | None = None,
) -> None:
    """Claim the job and run ``body`` in a ``JobRun``; see the module docstring.

    ``body`` ends the attempt itself with ``run.finish``. With
    ``limit``, the job is claimed only while fewer than ``limit`` jobs of its owner
    and kind run (see ``jobs.claim_job``); otherwise it stays waiting.
    """
    d = deps(ctx)
    job = await jobs.claim_job(
        d.db,
        job_id,
        run=run,
        stage=stage,
        lease_seconds=d.settings.job_lease_seconds,
        limit=limit,
    )
    if job is None:
        log.info("job not claimed", extra={"action": "job_skipped", "job_id": job_id, "run": run})
        return
    # Each arq job runs in a task of its own: its log lines name the request behind it.
    logs.request_id.set(job.request_id)
    extra = {"job_id": job_id, "kind": job.kind, "attempt": job.attempt}
    log.info("job started", extra={"action": "job_started", **extra})
    attempt = JobRun(d, job, stage)
    await attempt.publish("status", jobs.job_document(job))
    try:
        async with attempt:
            await body(attempt)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if attempt.lease_lost:
            assert task is not None
            task.uncancel()
            log.warning("lease lost; stopping", extra={"action": "job_fenced", **extra})
            return
        if attempt.cancel_requested:
            assert task is not None
            task.uncancel()
            await attempt.finish(JobStatus.CANCELLED, error={"message": "cancelled on request"})
            log.info("job cancelled", extra={"action": "job_cancelled", **extra})
            return
        if time.monotonic() - attempt.started >= d.settings.job_timeout_seconds - 1:
            message = f"the job ran longer than {d.settings.job_timeout_seconds} s and was stopped"
            await asyncio.shield(attempt.finish(stage.failed, error={"message": message}))
            raise
        await asyncio.shield(hand_back(ctx, attempt.job))  # the worker is stopping
        raise
    except TRANSIENT as exc:
        tries = job_try(ctx)
        if tries < MAX_TRIES:
            log.warning(
                "transient failure; retrying",
                extra={"action": "job_retry", "error": str(exc), "try": tries, **extra},
            )
            await _release(d, attempt.job, stage.retry)
            raise Retry(defer=2**tries) from exc
        failed = _error(exc, "storage or database kept failing")
        await attempt.finish(stage.failed, error=failed)
    except FerryError as exc:
        await attempt.finish(stage.failed, error=_error(exc))
    except Exception as exc:
        log.exception("job crashed", extra={"action": "job_crashed", **extra})
        failed = _error(exc, "internal error; the job did not finish")
        await attempt.finish(stage.failed, error=failed)
    else:
        log.info("job ended", extra={"action": "job_ended", "status": attempt.job.status, **extra})


async def _release(d: Deps, job: Job, status: JobStatus) -> None:
    """Hand a failed attempt back for its retry, trying a few times: the failure was
    often the database's, and a job left holding its lease would count as a crash."""
    for pause in RELEASE_PAUSES:
        await asyncio.sleep(pause)
        try:
            await jobs.finish_job(d.db, job, status)
            return
        except TRANSIENT:
            continue
    log.warning("job not released for its retry", extra={"job_id": str(job.id)})


async def hand_back(ctx: dict[str, Any], job: Job) -> None:
    """Release the job and enqueue it under a new run for another worker (not a crash).

    If PostgreSQL or Redis refuses, the job is left to the reconciler: its lease lapses
    (PostgreSQL down) or it waits unqueued (Redis down) until the next reconcile.
    """
    d, extra = deps(ctx), {"job_id": str(job.id), "attempt": job.attempt}
    try:
        back = await jobs.hand_back(d.db, job)
        if back is None:  # it ended, or a newer attempt holds it
            return
        await drop_delivery(queue(ctx), job, job.run)
        await enqueue(queue(ctx), back)
    except TRANSIENT as exc:
        log.warning(
            "job not handed back; the reconciler will revive it",
            extra={"action": "hand_back_failed", "error": str(exc), **extra},
        )
        return
    log.info("job handed back", extra={"action": "job_handed_back", "run": back.run, **extra})


def _error(exc: BaseException, fallback: str | None = None) -> dict[str, Any]:
    if isinstance(exc, FerryError) and fallback is None:
        # The problem's own members (e.g. the edited records of a refused rollback) too.
        doc: dict[str, Any] = {**exc.extra, "type": exc.slug, "message": exc.detail}
        if exc.errors:
            doc["errors"] = exc.errors
        return doc
    return {"type": "internal", "message": f"{fallback}: {exc}" if fallback else str(exc)}
