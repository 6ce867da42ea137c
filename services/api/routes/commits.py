"""Committing a validated import, and undoing a committed one: both run as jobs."""

from __future__ import annotations

import logging
from typing import Any

from arq.connections import ArqRedis
from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from services.api.openapi import IMPORT_LINKS, operation, problems, success
from services.api.params import IdempotencyKey
from services.api.routes.imports import load_import, respond
from services.api.schemas import CommitRequest, ImportJob, RollbackRequest
from services.api.views import import_links, import_view
from services.core import jobs
from services.core.auth import Principal
from services.core.deps import Deps
from services.core.errors import Conflict
from services.core.imports import commit as commits
from services.core.imports import mapping as mappings
from services.core.jobs import Job, JobStatus
from services.core.queue import submit

log = logging.getLogger(__name__)

# A commit was asked for already: committing again answers with the import as it is.
COMMIT_REQUESTED = frozenset(
    {JobStatus.COMMITTING, JobStatus.COMMITTED, JobStatus.ROLLING_BACK, JobStatus.ROLLED_BACK}
)
ROLLBACK_REQUESTED = frozenset({JobStatus.ROLLING_BACK, JobStatus.ROLLED_BACK})


@post(
    "/v1/imports/{job_id:str}/commit",
    tags=["imports"],
    summary="Commit a validated import",
    status_code=202,
    operation_id="commitImport",
    responses={
        200: success(ImportJob, "Committed already (or a replay): the import as it is"),
        **problems(400, 403, 404, 409, 422),
    },
    operation_class=operation(links={202: IMPORT_LINKS, 200: IMPORT_LINKS}),
)
async def commit_import(
    request: Request[Any, Any, Any],
    job_id: FromPath[str],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
    queue: NamedDependency[ArqRedis],
    idempotency_key: IdempotencyKey,
    data: JSONBody[CommitRequest | None] = None,
) -> Response[ImportJob]:
    """All-or-nothing: with any invalid row the answer is 409 with the counts and the
    error report. `{"on_error": "skip"}` commits the valid rows and records how many
    were skipped. `mode` says what a row whose natural key (`ebay_order_id`) names a live
    record of the account does: `insert` (an error), `upsert` (updates it) or
    `skip_existing` (left out); the import's `modes` shows what each would commit. The
    job goes `committing → committed` with `batch` set (`inserted`, `updated`,
    `skipped_existing`). Committing again (or replaying an `Idempotency-Key`) returns
    the same import and never inserts twice; the same key with another body is refused.
    """
    body = data or CommitRequest()
    job = await load_import(deps, principal, job_id, "commit")
    if job.status in COMMIT_REQUESTED:
        return respond(await _replayed(request, deps, principal, job, body, idempotency_key))
    _committable(job, body)
    result = job.result or {}
    accepted = mappings.document_choices(result.get("mapping"))
    requested = await jobs.request_commit(
        deps.db,
        job,
        on_error=body.on_error,
        commit_key=idempotency_key,
        accepted_mapping=accepted,
        mode=body.mode,
    )
    if requested is None:  # a concurrent commit (or cancel) won
        job = await load_import(deps, principal, job_id, "commit")
        if job.status in COMMIT_REQUESTED:
            return respond(await _replayed(request, deps, principal, job, body, idempotency_key))
        raise Conflict(f"the import is {job.status}; it cannot be committed", job_status=job.status)
    job = requested
    await submit(queue, job)
    await deps.events.announce(job, "status")
    return respond(await import_view(request, deps, principal, job), 202)


async def _replayed(
    request: Request[Any, Any, Any],
    deps: Deps,
    principal: Principal,
    job: Job,
    body: CommitRequest,
    key: str | None,
) -> ImportJob:
    same_key = key is not None and job.params.get("commit_key") == key
    sent = (job.params.get("on_error"), job.params.get("mode", "insert"))
    if same_key and sent != (body.on_error, body.mode):
        raise jobs.key_reused()
    return await import_view(request, deps, principal, job)


def _committable(job: Job, body: CommitRequest) -> None:
    if job.status in {JobStatus.UPLOADED, JobStatus.VALIDATING}:
        raise Conflict(
            f"the import is {job.status}, not validated yet; commit once it is validated",
            job_status=job.status,
        )
    if job.status != JobStatus.VALIDATED:
        raise Conflict(f"the import is {job.status}; it cannot be committed", job_status=job.status)
    commits.check_committable(
        job, on_error=body.on_error, mode=body.mode, report=import_links(job)["error_report"]
    )


@post(
    "/v1/imports/{job_id:str}/rollback",
    summary="Undo a committed import (runs as a job)",
    status_code=202,
    operation_id="rollbackImport",
    responses={
        200: success(ImportJob, "Rolled back already: the import as it is"),
        **problems(400, 403, 404, 409, 422),
    },
    tags=["imports"],
    operation_class=operation(links={202: IMPORT_LINKS, 200: IMPORT_LINKS}),
)
async def rollback_import(
    request: Request[Any, Any, Any],
    job_id: FromPath[str],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
    queue: NamedDependency[ArqRedis],
    data: JSONBody[RollbackRequest | None] = None,
) -> Response[ImportJob]:
    """Within the rollback window (24 h by default) undoes the batch: records it inserted
    are soft-deleted, records an upsert updated get every column back. If any was edited
    since the import, 409 lists them with `requires_confirmation`; `{"confirm": true}`
    rolls back anyway. After the window, 409. Otherwise 202 with the import, now
    `rolling_back`: a worker undoes the batch in one transaction, with `progress` —
    follow `links.events` until `rolled_back` (or `committed` again, with the `error`
    that stopped it). Asking again while it runs, or after, returns the import as it is.
    """
    body = data or RollbackRequest()
    job = await load_import(deps, principal, job_id, "rollback")
    if job.status in ROLLBACK_REQUESTED:
        view = await import_view(request, deps, principal, job)
        return respond(view, 202 if job.status == JobStatus.ROLLING_BACK else 200)
    if job.status != JobStatus.COMMITTED:
        raise Conflict(
            f"only a committed import can be rolled back; this one is {job.status}",
            job_status=job.status,
        )
    ds = deps.registry.get(job.dataset)
    # Refused here, before a job starts: the window closed, or edits without confirm. The
    # worker checks again under its locks.
    async with deps.db.acquire() as conn, conn.transaction(readonly=True):
        await commits.check_rollback(conn, ds, job, confirm=body.confirm)
    requested = await jobs.request_rollback(deps.db, job, confirm=body.confirm)
    if requested is None:  # a concurrent rollback won
        job = await load_import(deps, principal, job_id, "rollback")
        return respond(await import_view(request, deps, principal, job), 202)
    await submit(queue, requested)
    await deps.events.announce(requested, "status")
    log.info(
        "import rollback requested",
        extra={"action": "import_rollback_requested", "job_id": str(requested.id)},
    )
    return respond(await import_view(request, deps, principal, requested), 202)


routes = [commit_import, rollback_import]
