"""Import jobs: validate an upload, commit it, and the crons that tidy up after imports."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any

from services.core import jobs, uploads
from services.core.db.queries import Q
from services.core.deps import Deps
from services.core.errors import Conflict
from services.core.imports import commit, pipeline, staging
from services.core.imports import mapping as mappings
from services.core.jobs import JobStatus
from services.core.storage import keys
from services.worker.context import deps
from services.worker.runner import JobRun, run_job

log = logging.getLogger(__name__)


async def validate_import(ctx: dict[str, Any], job_id: str, run: int) -> None:
    """Read the upload, check every row into the staging table; the job waits ``validated``."""

    async def body(attempt: JobRun) -> None:
        job = attempt.job

        async def progress(done: int, total: int | None, rows: int, unit: str) -> None:
            await attempt.progress(done, total, rows=rows, unit=unit)

        try:
            document = await pipeline.validate_upload(attempt.deps, job, progress)
        except BaseException:
            if not attempt.lease_lost:  # else the staging table is a newer attempt's
                await asyncio.shield(_drop_staging(attempt.deps, job.id))
            raise
        await attempt.finish(JobStatus.VALIDATED, result=document)
        log.info(
            "import validated",
            extra={"action": "import_validated", "job_id": job_id, **document["totals"]},
        )

    await run_job(ctx, job_id, run, stage=jobs.VALIDATE_IMPORT, body=body)


async def commit_import(ctx: dict[str, Any], job_id: str, run: int) -> None:
    """Insert the valid staged rows as one batch, exactly once; the job ends ``committed``."""

    async def body(attempt: JobRun) -> None:
        d, job = attempt.deps, attempt.job
        ds = d.registry.get(job.dataset)
        document = dict(job.result or {})

        async def committed(batch: Any) -> None:
            result = {**document, "batch": commit.batch_document(batch)}
            await attempt.finish(JobStatus.COMMITTED, result=result)

        async with d.db.acquire() as conn:
            done = await commit.find_batch(conn, job.id)
            if done is not None:  # an earlier attempt committed and died before saying so
                await committed(done)
                await _drop_staging(d, job.id)
                return
            mode = job.params.get("mode", "insert")
            commit.check_committable(job, on_error=job.params.get("on_error", "abort"), mode=mode)
            if not await staging.exists(conn, job.id):
                raise Conflict(
                    "the validated rows of this import are gone (the database restarted?); "
                    "change the mapping or upload the file again to validate it anew"
                )
            rows, valid = await staging.totals(conn, job.id)
            if (rows, valid) != (document["totals"]["rows"], document["totals"]["valid"]):
                raise Conflict("the staged rows do not match the validation; upload the file again")
            await attempt.progress(
                0, commit.mode_totals(document, mode)["valid"], rows=0, unit="rows"
            )
            transaction = conn.transaction()
            await transaction.start()
            settled = False  # the transaction was committed or rolled back
            try:
                window = timedelta(hours=d.settings.rollback_window_hours)
                usable = commit.mode_totals(document, mode)["valid"]
                batch = await commit.insert_batch(
                    conn, ds, job, window=window, skipped=rows - usable, mode=mode
                )
                if batch is None:  # a concurrent attempt committed first
                    await transaction.rollback()
                    settled = True
                    await committed(await commit.find_batch(conn, job.id))
                    return
                fields = [
                    f for f in mappings.document_choices(document.get("mapping")).values() if f
                ]
                inserted, updated, skipped = await commit.write_records(
                    conn, ds, job, batch["id"], mode=mode, fields=fields, pool=d.db
                )
                batch = await conn.fetchrow(
                    Q.count_batch_rows, batch["id"], inserted + updated, updated, skipped
                )
                choices = job.params.get("accepted_mapping")
                if isinstance(choices, dict):
                    await mappings.remember(
                        conn, job.org_id, job.dataset, document["source"]["headers"], choices
                    )
                await attempt.progress(usable, usable, rows=inserted + updated, unit="rows")
                # From here on the batch is in: a cancel request waits until the job says so.
                async with attempt.critical():
                    await transaction.commit()
                    settled = True
                    await committed(batch)
            finally:
                if not settled:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(transaction.rollback())
        log.info("import committed", extra={"action": "import_committed", "job_id": job_id})
        await _drop_staging(d, job.id)

    await run_job(ctx, job_id, run, stage=jobs.COMMIT_IMPORT, body=body)


async def rollback_import(ctx: dict[str, Any], job_id: str, run: int) -> None:
    """Undo a committed batch in one transaction, with progress; ``rolled_back``, or back to
    ``committed`` with the reason (records edited meanwhile, the window closed)."""

    async def body(attempt: JobRun) -> None:
        d, job = attempt.deps, attempt.job
        ds = d.registry.get(job.dataset)
        confirm = bool(job.params.get("rollback_confirm"))

        async def progress(done: int, total: int) -> None:
            await attempt.progress(done, total, rows=done, unit="rows")

        async with d.db.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            settled = False  # the transaction was committed
            try:
                batch, rows, already = await commit.rollback(
                    conn, ds, job, confirm=confirm, progress=progress
                )
                result = {**(job.result or {}), "batch": commit.batch_document(batch)}
                if not already:
                    result["rolled_back_rows"] = rows
                # The commit and the job's word on it go together.
                async with attempt.critical():
                    await transaction.commit()
                    settled = True
                    await attempt.finish(JobStatus.ROLLED_BACK, result=result)
            finally:
                if not settled:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(transaction.rollback())
        log.info(
            "import rolled back",
            extra={"action": "import_rolled_back", "job_id": job_id, "rows": rows},
        )

    await run_job(ctx, job_id, run, stage=jobs.ROLLBACK_IMPORT, body=body)


async def _drop_staging(d: Deps, job_id: Any) -> None:
    try:
        await staging.drop(d.db, job_id)
    except Exception:  # tidy-up only; the cron drops leftovers
        log.warning("staging table not dropped", extra={"job_id": str(job_id)})


# --- crons ------------------------------------------------------------------------------


async def close_rollback_windows(ctx: dict[str, Any]) -> int:
    """Batches past their window can no longer be rolled back; their upload is deleted."""
    d = deps(ctx)
    rows = await d.db.fetch(Q.close_rollback_windows)
    for row in rows:
        await d.storage.delete_prefix(keys.import_prefix(row["org_id"], row["job_id"]))
    await jobs.mark_files_deleted(d.db, [row["job_id"] for row in rows])
    if rows:
        log.info("rollback windows closed", extra={"action": "windows_closed", "count": len(rows)})
    return len(rows)


async def expire_uploads(ctx: dict[str, Any]) -> int:
    """Direct uploads nobody imported: their files go an hour after their URL expired."""
    d = deps(ctx)
    removed = await uploads.expire_uploads(d.db, d.storage, grace_seconds=3600)
    if removed:
        log.info("uploads expired", extra={"action": "uploads_expired", "count": removed})
    return removed


async def purge_import_batches(ctx: dict[str, Any]) -> int:
    """Batch rows older than the retention are deleted (records keep their data)."""
    d = deps(ctx)
    status = await d.db.execute(Q.purge_import_batches, d.settings.batch_retention_days)
    purged = int(status.split()[-1])
    if purged:
        log.info("import batches purged", extra={"action": "batches_purged", "count": purged})
    return purged


async def clean_imports(ctx: dict[str, Any]) -> dict[str, int]:
    """Abandoned imports: staging tables of finished jobs, and uploads nobody committed.

    A ``validated`` import not committed within ``import_keep_days`` is cancelled; failed,
    cancelled and rolled-back imports lose their upload and error report then too.
    """
    d = deps(ctx)
    keep = d.settings.import_keep_days
    expired = await jobs.expire_validated_imports(d.db, days=keep)
    stale = await jobs.mark_stale_files_deleted(d.db, days=keep, also=expired)
    for org_id, job_id in stale:
        await d.storage.delete_prefix(keys.import_prefix(org_id, job_id))
    tables = await d.db.fetch(Q.leftover_staging_tables, staging.SCHEMA, jobs.values(jobs.TERMINAL))
    for row in tables:
        await staging.drop(d.db, row["relname"])
    return {"expired": len(expired), "files": len(stale), "tables": len(tables)}
