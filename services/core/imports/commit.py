"""Commit a staged import as one batch, and roll a batch back.

Commit: one transaction inserts the ``import_batches`` row — ``job_id`` is UNIQUE, so
a retried or duplicated commit of the same import stops right there — then every
valid staged row with one ``INSERT … SELECT``. Either both land or neither does.

Rollback: the batch row is locked, then every live record of the batch
(``SELECT … FOR UPDATE``), so an edit racing the rollback either happened before
(and is reported as an edit) or waits and then finds the record deleted; never a
live record of a rolled-back batch.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.core.datasets import Dataset
from services.core.datasets.sql import ident, table
from services.core.db.pool import Connection
from services.core.db.queries import Q
from services.core.errors import Conflict
from services.core.imports import staging
from services.core.jobs import Job

EDITED_SHOWN = 100


def batch_document(row: Any) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "rows": row["row_count"],
        "skipped": row["skipped_count"],
        "created_at": row["created_at"].isoformat(),
        "rollback_until": row["rollback_until"].isoformat(),
        "rolled_back_at": row["rolled_back_at"].isoformat() if row["rolled_back_at"] else None,
    }


def check_committable(job: Job, *, on_error: str, report: str | None = None) -> None:
    """Refuse (409) to commit a validated import that is not ready: the api answers
    with it, and the worker checks again before it writes anything."""
    result = job.result or {}
    totals = result.get("totals") or {}
    if result.get("unmapped_required"):
        missing = ", ".join(result["unmapped_required"])
        raise Conflict(
            f"required fields are not mapped: {missing}; map a column to each with "
            f"PUT /v1/imports/{job.id}/mapping",
            unmapped_required=result["unmapped_required"],
        )
    if not totals.get("valid"):
        raise Conflict(
            "no row of this file is valid; fix the file and upload it again",
            totals=totals,
            error_report=report,
        )
    if totals.get("invalid") and on_error != "skip":
        raise Conflict(
            f"{totals['invalid']} of {totals['rows']} rows are invalid, so nothing was "
            'committed; fix them (see error_report) or send {"on_error": "skip"} to commit '
            f"the {totals['valid']} valid rows only",
            totals=totals,
            error_report=report,
        )


async def find_batch(conn: Any, job_id: uuid.UUID) -> Any:
    return await conn.fetchrow(Q.find_batch, job_id)


async def insert_batch(
    conn: Connection, ds: Dataset, job: Job, *, window: timedelta, skipped: int
) -> Any | None:
    """The batch row of this import, or None when the import was committed already."""
    try:
        return await conn.fetchrow(
            Q.insert_batch,
            uuid.uuid4(),
            job.id,
            job.org_id,
            job.params["account_id"],
            job.user_id,
            ds.name,
            job.params.get("filename", ""),
            skipped,
            window,
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "import_batches_job_id_key":
            return None
        raise


async def insert_records(conn: Connection, ds: Dataset, job: Job, batch_id: uuid.UUID) -> int:
    """Every valid staged row of ``job`` into the dataset's table, tagged with the batch."""
    columns = staging.staged_columns(ds)
    target = ", ".join(
        ident(c) for c in [ds.org_column, ds.scope_column, ds.batch_column, *columns]
    )
    values = ", ".join(ident(c) for c in columns)
    # In the dataset's export order: the export index then grows at its right edge
    # instead of taking random inserts (about 10% faster), and the rows lie in it.
    order = ", ".join([ident(c) for c in ds.order_by if c in columns] or ["line"])
    await conn.execute("SET LOCAL work_mem = '256MB'")
    try:
        status = await conn.execute(
            f"INSERT INTO {table(ds)} ({target}) SELECT $1, $2, $3, {values} "
            f"FROM {staging.staging_name(job.id)} WHERE errors IS NULL ORDER BY {order}",
            job.org_id,
            job.params["account_id"],
            batch_id,
        )
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(
            "a record with the same key was added to this account after the file was "
            f"validated ({exc.detail or exc}); nothing was imported — upload the file again",
        ) from None
    return int(status.split()[-1])


async def rollback(
    conn: Connection, ds: Dataset, job: Job, *, confirm: bool
) -> tuple[Any, int, bool]:
    """Soft-delete the batch's live records; ``(batch, rows, already_rolled_back)``.

    Runs inside the caller's transaction. Raises Conflict when the window closed, or
    when records were edited since the import and ``confirm`` is false.
    """
    batch = await conn.fetchrow(Q.lock_batch, job.id)
    if batch is None:
        raise Conflict("this import has no committed batch to roll back")
    if batch["rolled_back_at"] is not None:
        return batch, 0, True
    if batch["closed"]:
        until: datetime = batch["rollback_until"]
        raise Conflict(
            f"the rollback window of this import closed at {until.isoformat()}; "
            "its records can only be changed one by one now",
            rollback_until=until.isoformat(),
        )
    records = table(ds)
    key, deleted = ident(ds.primary_key), ident(ds.soft_delete_column)
    batch_col = ident(ds.batch_column)
    locked = await conn.fetchrow(
        f"SELECT count(*) AS live, count(*) FILTER (WHERE edited) AS edited, "
        f"(array_agg(id ORDER BY id) FILTER (WHERE edited))[1:{EDITED_SHOWN}] AS ids "
        f"FROM (SELECT {key} AS id, updated_at > created_at AS edited FROM {records} "
        f"WHERE {batch_col} = $1 AND {deleted} IS NULL FOR UPDATE) locked",
        batch["id"],
    )
    assert locked is not None
    if locked["edited"] and not confirm:
        raise Conflict(
            f"{locked['edited']} record(s) of this import were edited since it was committed; "
            'send {"confirm": true} to roll back anyway (the edits are lost)',
            edited_count=locked["edited"],
            records=list(locked["ids"] or []),
            requires_confirmation=True,
        )
    status = await conn.execute(
        f"UPDATE {records} SET {deleted} = now() WHERE {batch_col} = $1 AND {deleted} IS NULL",
        batch["id"],
    )
    batch = await conn.fetchrow(Q.mark_batch_rolled_back, batch["id"])
    return batch, int(status.split()[-1]), False
