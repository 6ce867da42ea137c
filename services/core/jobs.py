"""The job repository: the ``jobs`` row is the truth, arq only carries it.

Every write of a running job is fenced by its ``attempt``: a worker that lost its
lease (it stalled, a newer attempt claimed the job) finds its writes refused and
stops, so two workers can never both publish a result.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Literal

import asyncpg
import msgspec

from services.core.db.pool import Connection, Pool
from services.core.db.queries import Q
from services.core.errors import InvalidInput, NotFound

Kind = Literal["export", "import"]
STATUSES = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "expired",
    "uploaded",
    "validating",
    "validated",
    "committing",
    "committed",
    "rolled_back",
)
FINAL = frozenset({"succeeded", "failed", "cancelled", "expired", "committed", "rolled_back"})


class Job(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    kind: Kind
    org_id: str
    user_id: str
    dataset: str
    status: str
    params: dict[str, Any]
    progress: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    attempt: int = 0
    run: int = 0
    lease_until: datetime | None = None
    cancel_requested_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL


def from_record(record: Any) -> Job:
    """A Job from a ``jobs`` row."""
    return Job(**dict(record.items()))


def _maybe(record: Any) -> Job | None:
    return None if record is None else from_record(record)


def request_hash(body: Any) -> str:
    """A stable digest of a request body, to tell a replay from a different request."""
    return hashlib.sha256(msgspec.json.encode(body, order="sorted")).hexdigest()


async def create_job(
    db: Pool | Connection,
    *,
    kind: Kind,
    org_id: str,
    user_id: str,
    dataset: str,
    status: str,
    params: dict[str, Any],
    idempotency_key: str | None = None,
    job_id: uuid.UUID | None = None,
) -> tuple[Job, bool]:
    """Insert a job; with an idempotency key, a replay returns the first job.

    Returns ``(job, created)``. The same key with a different body is refused,
    also when twenty requests race: the unique constraint decides the winner.
    """
    digest = request_hash({"kind": kind, "dataset": dataset, "params": params})
    row = await db.fetchrow(
        Q.insert_job,
        job_id or uuid.uuid4(),
        kind,
        org_id,
        user_id,
        dataset,
        status,
        params,
        idempotency_key,
        digest if idempotency_key else None,
    )
    if row is not None:
        return from_record(row), True
    existing = from_record(await db.fetchrow(Q.get_job_by_key, org_id, user_id, idempotency_key))
    if existing.request_hash != digest:
        raise InvalidInput(
            "this Idempotency-Key was used with a different request",
            errors=[{"field": "Idempotency-Key", "message": "reused with a different body"}],
        )
    return existing, False


async def get_job(db: Pool | Connection, job_id: uuid.UUID | str, org_id: str) -> Job:
    """A job of this org, or NotFound (also for another org's job)."""
    try:
        key = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(job_id)
    except ValueError:
        raise NotFound("no such job") from None
    job = _maybe(await db.fetchrow(Q.get_job, key, org_id))
    if job is None:
        raise NotFound("no such job")
    return job


async def load_job(db: Pool | Connection, job_id: uuid.UUID | str) -> Job | None:
    """A job by id alone: only for workers, which act on ids they were handed."""
    return _maybe(await db.fetchrow(Q.get_job_unscoped, uuid.UUID(str(job_id))))


async def list_jobs(
    db: Pool | Connection,
    *,
    org_id: str,
    user_id: str,
    kind: str | None = None,
    statuses: list[str] | None = None,
    before: tuple[datetime, uuid.UUID] | None = None,
    limit: int = 50,
) -> list[Job]:
    """One caller's jobs, newest first, after the keyset cursor ``before``."""
    created, last_id = before if before else (None, None)
    rows = await db.fetch(Q.list_jobs, org_id, user_id, kind, statuses, created, last_id, limit)
    return [from_record(r) for r in rows]


async def claim_job(
    db: Pool | Connection,
    job_id: uuid.UUID | str,
    *,
    run: int,
    waiting: list[str],
    running: str,
    lease_seconds: int,
    limit: int | None = None,
) -> Job | None:
    """Take the job for this worker, or None when it is not ours to run.

    With ``limit``, the job is also left waiting while ``limit`` jobs of the same
    owner and kind run or wait ahead of it; whoever frees a slot starts the next
    (``admissible_jobs``). An advisory lock per owner makes the count exact.
    """
    key = uuid.UUID(str(job_id))
    statuses = [*waiting, running]
    if limit is None:
        return _maybe(await db.fetchrow(Q.claim_job, key, run, statuses, running, lease_seconds))
    async with _connection(db) as conn, conn.transaction():
        await conn.execute(Q.lock_owner, key)
        row = await conn.fetchrow(
            Q.claim_job_limited, key, run, statuses, running, lease_seconds, limit
        )
    return _maybe(row)


async def admissible_jobs(
    db: Pool | Connection, *, org_id: str, user_id: str, kind: Kind, statuses: list[str], limit: int
) -> list[Job]:
    """The oldest waiting jobs of one owner that fit under ``limit`` running at once."""
    rows = await db.fetch(Q.admissible_jobs, org_id, user_id, kind, statuses, limit)
    return [from_record(r) for r in rows]


async def cancel_job(db: Pool | Connection, job: Job) -> Job | None:
    """Cancel a job: at once when no worker holds it, else ask its worker to stop.

    Returns the job as it now is, or None when it had already ended. A waiting job
    that a worker claims in the same instant is asked to stop instead (the row lock
    orders the two updates).
    """
    active = [s for s in STATUSES if s not in FINAL]
    error = {"type": "cancelled", "message": "cancelled on request"}
    row = await db.fetchrow(Q.cancel_waiting_job, job.id, job.org_id, error, active)
    if row is None:
        row = await db.fetchrow(Q.request_cancel, job.id, job.org_id, active)
    return _maybe(row)


async def expirable_exports(db: Pool | Connection) -> list[Job]:
    """Succeeded exports whose file is past its ``expires_at``."""
    return [from_record(r) for r in await db.fetch(Q.expirable_exports)]


async def expire_export(db: Pool | Connection, job: Job) -> Job | None:
    return _maybe(await db.fetchrow(Q.expire_export, job.id))


@contextlib.asynccontextmanager
async def _connection(db: Pool | Connection) -> AsyncIterator[Connection]:
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            yield conn
    else:
        yield db


async def renew_lease(
    db: Pool | Connection,
    job: Job,
    *,
    lease_seconds: int,
    progress: dict[str, Any] | None = None,
) -> tuple[bool, bool]:
    """Extend the lease; returns ``(still_ours, cancel_requested)``."""
    row = await db.fetchrow(Q.renew_lease, job.id, job.attempt, lease_seconds, progress)
    if row is None:
        return False, False
    return True, row["cancel_requested_at"] is not None


async def finish_job(
    db: Pool | Connection,
    job: Job,
    status: str,
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    progress: dict[str, Any] | None = None,
) -> Job | None:
    """Write the final state of this attempt; None when a newer attempt owns the job."""
    row = await db.fetchrow(Q.finish_job, job.id, job.attempt, status, result, error, progress)
    return _maybe(row)


async def release_job(
    db: Pool | Connection,
    job: Job,
    status: str,
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    progress: dict[str, Any] | None = None,
) -> Job | None:
    """End this attempt in a waiting state (e.g. ``validated``); fenced like finish_job."""
    row = await db.fetchrow(Q.release_job, job.id, job.attempt, status, result, error, progress)
    return _maybe(row)


async def expired_leases(db: Pool | Connection) -> list[Job]:
    """Bump the run of jobs whose worker died, so they can be enqueued afresh."""
    return [from_record(r) for r in await db.fetch(Q.expired_leases)]


async def waiting_jobs(db: Pool | Connection, *, older_than: float) -> list[Job]:
    """Jobs waiting for a worker for longer than ``older_than`` seconds."""
    return [from_record(r) for r in await db.fetch(Q.waiting_jobs, older_than)]


def job_document(job: Job) -> dict[str, Any]:
    """The public fields of a job, JSON-ready; the api adds queue position and links."""
    doc: dict[str, Any] = msgspec.to_builtins(
        {
            "id": job.id,
            "kind": job.kind,
            "dataset": job.dataset,
            "status": job.status,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "progress": job.progress,
            "params": job.params,
            "error": job.error,
            "result": job.result,
        }
    )
    return doc


async def queue_position(db: Pool | Connection, job: Job) -> int | None:
    """1 for the next job of this caller and kind to start; None unless waiting."""
    if job.status not in ("queued", "uploaded") or job.lease_until is not None:
        return None
    position: int = await db.fetchval(
        Q.queue_position, job.org_id, job.user_id, job.kind, job.status, job.created_at, job.id
    )
    return position
