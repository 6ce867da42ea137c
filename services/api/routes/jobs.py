"""Job status and history, shared by exports and imports."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Annotated, Any, Protocol

import msgspec
from arq.connections import ArqRedis
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter

from services.api.auth import load_job, verifier
from services.api.openapi import JOB_LINKS, operation, problems, success
from services.api.schemas import FeedLinks, Job, JobKind, JobPage
from services.api.views import job_view
from services.core import jobs
from services.core.auth import Principal
from services.core.deps import Deps
from services.core.errors import Conflict, InvalidInput
from services.core.jobs import JobStatus
from services.core.queue import admit_next


class Keyed(Protocol):
    """Anything listed newest first by ``(created_at, id)``."""

    @property
    def created_at(self) -> datetime: ...
    @property
    def id(self) -> uuid.UUID: ...


def encode_cursor(item: Keyed) -> str:
    """The keyset cursor after ``item`` (a job, a webhook delivery)."""
    raw = msgspec.json.encode([item.created_at, item.id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = msgspec.json.decode(raw, type=tuple[datetime, uuid.UUID])
    except (binascii.Error, msgspec.DecodeError, ValueError):
        raise InvalidInput(
            "the cursor is not one this api handed out",
            errors=[{"field": "cursor", "message": "malformed cursor"}],
        ) from None
    return created, job_id


@get(
    "/v1/jobs",
    tags=["jobs"],
    summary="The caller's job history",
    operation_id="listJobs",
    responses=problems(400, 422),
    operation_class=operation(),
)
async def list_jobs(
    request: Request[Any, Any, Any],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
    kind: FromQuery[JobKind | None] = None,
    status: Annotated[
        str | None, QueryParameter(description="Comma-separated statuses, e.g. `queued,running`")
    ] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    cursor: Annotated[
        str | None, QueryParameter(description="`next_cursor` of the previous page")
    ] = None,
) -> JobPage:
    """Newest first, keyset-paginated: pass `next_cursor` back as `cursor`."""
    statuses = [s.strip() for s in status.split(",") if s.strip()] if status else None
    unknown = sorted(set(statuses or ()) - set(JobStatus))
    if unknown:
        raise InvalidInput(
            f"unknown status {', '.join(unknown)}",
            errors=[{"field": "status", "message": f"unknown status {s!r}"} for s in unknown],
        )
    page = await jobs.list_jobs(
        deps.db,
        org_id=principal.org,
        user_id=principal.sub,
        kind=kind.value if kind else None,
        statuses=statuses,
        before=decode_cursor(cursor) if cursor else None,
        limit=limit + 1,
    )
    more = len(page) > limit
    page = page[:limit]
    tokens = verifier(request)
    return JobPage(
        items=[await job_view(deps.db, tokens, principal, job) for job in page],
        next_cursor=encode_cursor(page[-1]) if more else None,
        # The caller's notification feed, openable by a browser's EventSource.
        links=FeedLinks(events=f"/v1/events?token={tokens.mint_events_token(principal, None)}"),
    )


@get(
    "/v1/jobs/{job_id:str}",
    tags=["jobs"],
    summary="One job",
    operation_id="getJob",
    responses=problems(403, 404),
    operation_class=operation(links={200: JOB_LINKS}),
)
async def get_job(
    request: Request[Any, Any, Any],
    job_id: FromPath[str],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
) -> Job:
    """Status, progress `{done, total}`, timings, error and result of a job."""
    job = await load_job(deps.db, principal, job_id)
    return await job_view(deps.db, verifier(request), principal, job)


@post(
    "/v1/jobs/{job_id:str}/cancel",
    tags=["jobs"],
    summary="Cancel a job",
    status_code=202,
    operation_id="cancelJob",
    responses={
        200: success(Job, "The job was waiting: it is `cancelled` now"),
        **problems(403, 404, 409),
    },
    operation_class=operation(),
)
async def cancel_job(
    request: Request[Any, Any, Any],
    job_id: FromPath[str],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
    queue: NamedDependency[ArqRedis],
) -> Response[Job]:
    """A waiting job is `cancelled` at once (200). A running one is asked to stop (202,
    `cancel_requested: true`): its worker stops within a second or two, removes any
    partial upload and the job reads `cancelled`. A job that already ended: 409.
    Only the user who started a job may cancel it, or an admin."""
    job = await load_job(deps.db, principal, job_id, action="cancel")
    if job.final:
        raise Conflict(f"the job already ended ({job.status}); nothing to cancel")
    if job.status not in jobs.CANCELLABLE:
        raise Conflict(f"a job that is {job.status} runs to its end; it cannot be cancelled")
    done = await jobs.cancel_job(deps.db, job)
    if done is None:
        current = await jobs.get_job(deps.db, job_id, principal.org)
        raise Conflict(f"the job already ended ({current.status}); nothing to cancel")
    if done.status == JobStatus.CANCELLED:
        await deps.events.announce(done, done.status)
        if done.kind == "export":
            # A job that waited ahead may have held others back.
            limit = deps.settings.max_exports_per_user
            await admit_next(deps.db, queue, done.org_id, done.user_id, limit=limit)
    view = await job_view(deps.db, verifier(request), principal, done)
    return Response(view, status_code=200 if done.status == JobStatus.CANCELLED else 202)


routes = [list_jobs, get_job, cancel_job]
