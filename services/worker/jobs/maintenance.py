"""Cron jobs that keep the queue honest and storage tidy."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from services.core import jobs
from services.core.queue import admit_next, drop_delivery, enqueue, taker_died
from services.worker.context import deps, queue

log = logging.getLogger(__name__)

# A job just created is enqueued by the api right after its row is written; give
# that a moment before deciding Redis lost it.
WAITING_GRACE_SECONDS = 30.0


async def reconcile_jobs(ctx: dict[str, Any]) -> dict[str, int]:
    """Re-enqueue jobs whose worker died (lease lapsed) or that Redis lost.

    A lapsed lease counts a crash and bumps the job's run, so the new arq job id is
    free; the dead worker's delivery is dropped (were it ever run, it would find a newer
    run and do nothing). A job at its FERRY_JOB_MAX_CRASHES-th crash fails instead.
    A waiting job is enqueued under its current id, which arq refuses when it still
    holds it, so this is safe to repeat. One that a worker took and died with before
    claiming it (``taker_died``: arq would hold it for the job timeout) gets a new run
    first; that is not a crash, as it never started.
    """
    d, redis = deps(ctx), queue(ctx)
    owners: set[tuple[str, str]] = set()  # whose waiting exports may start now
    counts = {"revived": 0, "crashed_out": 0, "requeued": 0}
    for job in await jobs.expired_leases(d.db, max_crashes=d.settings.job_max_crashes):
        extra = {"job_id": str(job.id), "run": job.run, "crashes": job.crashes}
        if job.final:
            counts["crashed_out"] += 1
            await drop_delivery(redis, job, job.run)
            await d.events.announce(job, job.status)
            log.error(
                "job kept stopping its worker; failed", extra={"action": "job_crashed_out", **extra}
            )
            owners.update([(job.org_id, job.user_id)] if job.kind == "export" else [])
            continue
        await drop_delivery(redis, job, job.run - 1)
        await enqueue(redis, job)
        counts["revived"] += 1
        log.warning("lease lapsed; job enqueued again", extra={"action": "job_revived", **extra})
    for job in await jobs.waiting_jobs(d.db, older_than=WAITING_GRACE_SECONDS):
        if await taker_died(redis, job, grace=WAITING_GRACE_SECONDS):
            renewed = await jobs.renew_run(d.db, job)
            if renewed is None:
                continue  # claimed or changed meanwhile
            await drop_delivery(redis, job, job.run)
            log.warning(
                "job taken by a worker that died before claiming it; enqueued again",
                extra={"action": "job_requeued", "job_id": str(job.id), "run": renewed.run},
            )
            job = renewed
        if job.kind == "export":
            # Exports beyond the per-user limit wait on purpose; only those that may
            # start now are handed to arq (the others would be refused at the claim).
            owners.add((job.org_id, job.user_id))
            continue
        if await enqueue(redis, job):
            counts["requeued"] += 1
            log.warning(
                "waiting job missing from the queue; enqueued again",
                extra={"action": "job_requeued", "job_id": str(job.id)},
            )
    for org_id, user_id in sorted(owners):
        limit = d.settings.max_exports_per_user
        counts["requeued"] += await admit_next(d.db, redis, org_id, user_id, limit=limit)
    return counts


async def abort_stale_uploads(ctx: dict[str, Any]) -> int:
    """Abort multipart uploads (or partial files) nobody finished within a day.

    Also removes XLSX files a killed worker left half-written in its temp folder.
    """
    d = deps(ctx)
    aborted = await d.storage.abort_stale_uploads(timedelta(days=1))
    aborted += await asyncio.to_thread(
        remove_stale_files, d.settings.export_temp_dir or tempfile.gettempdir()
    )
    if aborted:
        log.info("stale uploads aborted", extra={"action": "uploads_aborted", "count": aborted})
    return aborted


def remove_stale_files(directory: str, older_than: float = 24 * 3600) -> int:
    """Remove ``ferry-export-*`` temp files older than ``older_than`` seconds."""
    cutoff = time.time() - older_than
    removed = 0
    for path in Path(directory).glob("ferry-export-*"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed
