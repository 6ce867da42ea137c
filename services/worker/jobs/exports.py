"""Background exports: `run_export` writes files into storage, `expire_exports` deletes them.

An export is idempotent: every run writes the same object key and the job's
result is published only after the upload completed, so a worker killed half way
leaves at most an unfinished upload (aborted, or removed by the stale-upload
cron) and the next run produces the one finished file.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from services.core import jobs
from services.core.deps import Deps
from services.core.errors import FerryError, Transient
from services.core.exports.run import progress_total, snapshot, write_export
from services.core.exports.spec import ExportSpec
from services.core.queue import admit_next
from services.core.storage import keys
from services.worker.context import deps, queue
from services.worker.runner import TRANSIENT, JobRun, run_job

log = logging.getLogger(__name__)


async def run_export(ctx: dict[str, Any], job_id: str, run: int) -> None:
    """Write one export job's file into object storage, then admit the owner's next export."""
    d = deps(ctx)
    try:
        await run_job(
            ctx,
            job_id,
            run,
            stage=jobs.RUN_EXPORT,
            body=lambda attempt: _export(d, attempt),
            limit=d.settings.max_exports_per_user,
        )
    finally:
        await _admit_next(ctx, d, job_id)


async def _admit_next(ctx: dict[str, Any], d: Deps, job_id: str) -> None:
    """Start the owner's next waiting export; if Redis or PostgreSQL is away, the
    reconciler admits it later (the job's own end is already written)."""
    try:
        job = await jobs.load_job(d.db, job_id)
        if job is not None:
            limit = d.settings.max_exports_per_user
            await admit_next(d.db, queue(ctx), job.org_id, job.user_id, limit=limit)
    except TRANSIENT as exc:
        log.warning("next export not admitted", extra={"job_id": job_id, "error": str(exc)})


async def _export(d: Deps, attempt: JobRun) -> None:
    job = attempt.job
    ds = d.registry.get(job.dataset)
    spec = ExportSpec.from_params(job.dataset, job.params)
    filename = spec.filename(at=job.created_at)
    key = keys.export_file(job.org_id, job.id, filename)
    async with d.db.acquire() as conn, snapshot(conn):
        # No second scan for the total: exact for small exports, estimated for large
        # ones; once more rows came than estimated it is unknown (null), not wrong.
        total = await progress_total(conn, ds, spec, job.org_id)

        async def progress(done: int) -> None:
            await attempt.progress(done, total if total is not None and done <= total else None)

        try:
            async with d.storage.writer(key, content_type=spec.content_type) as upload:
                rows = await write_export(
                    conn,
                    ds,
                    spec,
                    job.org_id,
                    upload.write,
                    progress=progress,
                    xlsx_engine=d.settings.xlsx_engine,
                    temp_dir=d.settings.export_temp_dir or None,
                )
        except (Transient, FerryError):
            raise
        except OSError as exc:
            # The local folder refused (disk full, permissions): retrying will not help.
            raise FerryError(
                f"storage refused the export file ({exc.strerror or exc}); "
                "free space or fix permissions in FERRY_STORAGE_DIR, then export again"
            ) from exc
    stored = upload.result
    assert stored is not None
    expires = datetime.now(UTC) + timedelta(days=d.settings.export_ttl_days)
    await attempt.progress(rows, rows)
    await attempt.finish(
        jobs.JobStatus.SUCCEEDED,
        result={
            "rows": rows,
            "bytes": stored.size,
            "sha256": stored.sha256,
            "filename": filename,
            "content_type": spec.content_type,
            "expires_at": expires.isoformat(),
        },
    )
    log.info(
        "export finished",
        extra={"action": "export_finished", "job_id": str(job.id), "rows": rows},
    )


async def expire_exports(ctx: dict[str, Any]) -> int:
    """Delete export files past their ``expires_at``; their jobs read ``expired``."""
    d = deps(ctx)
    expired = 0
    for job in await jobs.expirable_exports(d.db):
        await d.storage.delete_prefix(keys.export_prefix(job.org_id, job.id))
        done = await jobs.expire_export(d.db, job)
        if done is None:
            continue
        expired += 1
        await d.events.announce(done, done.status)
    if expired:
        log.info("exports expired", extra={"action": "exports_expired", "count": expired})
    return expired
