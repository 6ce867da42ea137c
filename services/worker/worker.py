"""The worker process: arq's Worker, made to outlive Redis restarts and to leave on a
deploy without losing work.

- Redis (or, at start, PostgreSQL) unreachable: one log line, a pause with backoff,
  try again; the worker never exits on it. Running jobs carry on, since their truth is
  in PostgreSQL and the events they publish meanwhile are best effort.
- An idle worker blocks on ``core.queue.WAKE`` instead of sleeping between polls, so a
  new job starts within milliseconds of its enqueue.
- SIGTERM (a deploy): take no new job, let running ones finish for up to
  FERRY_WORKER_DRAIN_SECONDS, then cancel the rest — each hands its job back to the
  queue at once (``runner.hand_back``) — and exit. SIGINT (Ctrl-C) or a second signal
  skips the drain. A watchdog ends the process should anything still hang after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from typing import Any, cast

import asyncpg
import redis.exceptions
from arq.constants import in_progress_key_prefix
from arq.worker import Worker as ArqWorker

from services.core.queue import WAKE

log = logging.getLogger(__name__)

# What "Redis (or PostgreSQL) is not there right now" looks like.
UNREACHABLE: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,  # refused, reset, no route; asyncpg's too
    asyncpg.CannotConnectNowError,  # PostgreSQL starting up
)
IDLE_WAIT_SECONDS = 0.5  # longest an idle worker blocks on WAKE (crons, health, deferred jobs)
BUSY_POLL_SECONDS = 0.5  # a worker with no free slot, or draining, polls as arq does
BACKOFF_SECONDS = (0.2, 5.0)  # first and longest pause while Redis is unreachable
HAND_BACK_SECONDS = 10.0  # after the drain: cancelled jobs hand back, connections close


class Worker(ArqWorker):
    """arq's Worker with reconnects, wake-ups and a drain; see the module docstring."""

    def __init__(self, *args: Any, drain_seconds: float = 30.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.drain_seconds = drain_seconds
        self._pause = 0.0  # the current backoff; 0 while Redis answers
        self._marked: set[str] = set()  # arq jobs an outage left marked in progress
        self._stopping: asyncio.Task[None] | None = None
        self._now = asyncio.Event()  # stop without (more) draining

    # --- outages -------------------------------------------------------------------

    async def main(self) -> None:
        while True:
            try:
                await super().main()
                return
            except UNREACHABLE as exc:  # at start: the poll loop below never raises these
                await self._unreachable(exc)

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
            if self._marked:
                await self._unmark()
            await self._idle()
        except UNREACHABLE as exc:
            await self._unreachable(exc)
            return
        if self._pause:
            log.warning("Redis answers again", extra={"action": "redis_back"})
            self._pause = 0.0

    async def _unreachable(self, exc: BaseException) -> None:
        first, longest = BACKOFF_SECONDS
        self._pause = min(max(self._pause * 2, first), longest)
        log.warning(
            "Redis or PostgreSQL unreachable (%s); retrying in %.1f s",
            exc,
            self._pause,
            extra={"action": "unreachable", "error": str(exc)},
        )
        await asyncio.sleep(self._pause)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        for job_id in job_ids:
            try:
                await super().start_jobs([job_id])
            except UNREACHABLE:
                # arq took a slot before asking Redis; without this it would leak.
                self.job_counter -= 1
                self.sem.release()
                raise

    async def run_job(self, job_id: str, score: int) -> None:
        try:
            await super().run_job(job_id, score)
        except UNREACHABLE:
            # arq could not start or finish this delivery. Its in-progress mark would hide
            # it for the whole job timeout: clear it once Redis answers, so the delivery
            # runs (or, if it ran, finds its job ended and is closed).
            self._marked.add(job_id)

    async def _unmark(self) -> None:
        await self.pool.delete(*(in_progress_key_prefix + job_id for job_id in self._marked))
        self._marked.clear()

    async def _idle(self) -> None:
        """Wait for the next poll: on WAKE while a slot is free, else a plain pause."""
        if self.burst:
            return  # in-process test workers poll at their own poll_delay
        if self.allow_pick_jobs and self.job_counter < self.max_jobs:
            # redis-py's stubs want whole seconds; Redis takes fractions since 6.0.
            await cast(Any, self.pool).blpop([WAKE], timeout=IDLE_WAIT_SECONDS)
        else:
            await asyncio.sleep(BUSY_POLL_SECONDS)

    # --- stopping ------------------------------------------------------------------

    def handle_sig(self, signum: signal.Signals) -> None:
        if self._stopping is not None or signum != signal.SIGTERM:
            self._now.set()
        if self._stopping is not None:
            return
        self.allow_pick_jobs = False
        _watchdog(self.drain_seconds + HAND_BACK_SECONDS)
        self._stopping = self.loop.create_task(self._stop(signal.Signals(signum)))

    async def _stop(self, signum: signal.Signals) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_seconds
        running = self._running()
        log.info(
            "stopping on %s: %d jobs running, drain up to %.0f s",
            signum.name,
            len(running),
            0 if self._now.is_set() else self.drain_seconds,
            extra={"action": "worker_stopping", "jobs": len(running)},
        )
        while running and not self._now.is_set() and loop.time() < deadline:
            now = asyncio.ensure_future(self._now.wait())
            await asyncio.wait(
                [*running, now], timeout=deadline - loop.time(), return_when="FIRST_COMPLETED"
            )
            now.cancel()
            running = self._running()
        for task in running:
            task.cancel()  # each job hands itself back (runner.hand_back)
        if running:
            await asyncio.wait(running, timeout=HAND_BACK_SECONDS)
        if self.main_task is not None:
            self.main_task.cancel()

    def _running(self) -> list[asyncio.Task[Any]]:
        return [task for task in self.tasks.values() if not task.done()]

    async def close(self) -> None:
        """arq's close, minus what fails while Redis is away."""
        if not self._handle_signals:  # an in-process worker (tests): stop what runs
            for task in self._running():
                task.cancel()
        if not self._pool:
            return
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        with contextlib.suppress(*UNREACHABLE):
            await self.pool.delete(self.health_check_key)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        await self.pool.aclose()
        self._pool = None


def _watchdog(seconds: float) -> None:
    """End the process ``seconds`` from now if it has not ended by itself (a hung thread,
    a job that ignores cancellation): a stop signal always stops the worker."""

    def expire() -> None:
        log.error(
            "still running %.0f s after the stop signal; exiting",
            seconds,
            extra={"action": "worker_killed_itself"},
        )
        os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
