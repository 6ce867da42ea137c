"""The job repository and the job lifecycle: the ``jobs`` row is the truth, arq only carries it.

Every change of a job row goes through a function of this module, and every change
of its status is declared (``Move``, ``Stage``) against ``TRANSITIONS``, the table
DESIGN.md draws; the SQL takes the statuses from those declarations, never literals.

Every write of a running job is fenced by its ``attempt``: a worker that lost its
lease (it stalled, a newer attempt claimed the job) finds its writes refused and
stops, so two workers can never both publish a result.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, NamedTuple

import asyncpg
import msgspec

from services.core import logs
from services.core.db.pool import Connection, Pool, connection_lost
from services.core.db.queries import Q
from services.core.errors import InvalidInput, NotFound, QueueFull

Kind = Literal["export", "import"]


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    UPLOADED = "uploaded"
    VALIDATING = "validating"
    VALIDATED = "validated"
    COMMITTING = "committing"
    COMMITTED = "committed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"


S = JobStatus

# Which status may become which (DESIGN.md, Jobs). ``x → x`` in a working status is a
# new attempt after a dead worker or a transient failure; ``→ queued``/``→ uploaded`` hands
# a job back after a transient failure, to be retried with backoff. A committed import is
# final but for its undo: ``committed → rolling_back`` (a worker runs the rollback), which
# ends ``rolled_back``, or back at ``committed`` (with the error) when it cannot.
TRANSITIONS: dict[Kind, dict[JobStatus, frozenset[JobStatus]]] = {
    "export": {
        S.QUEUED: frozenset({S.RUNNING, S.CANCELLED}),
        S.RUNNING: frozenset({S.RUNNING, S.QUEUED, S.SUCCEEDED, S.FAILED, S.CANCELLED}),
        S.SUCCEEDED: frozenset({S.EXPIRED}),
    },
    "import": {
        S.UPLOADED: frozenset({S.VALIDATING, S.CANCELLED}),
        S.VALIDATING: frozenset({S.VALIDATING, S.UPLOADED, S.VALIDATED, S.FAILED, S.CANCELLED}),
        S.VALIDATED: frozenset({S.VALIDATING, S.COMMITTING, S.CANCELLED}),
        S.COMMITTING: frozenset({S.COMMITTING, S.COMMITTED, S.FAILED, S.CANCELLED}),
        S.COMMITTED: frozenset({S.ROLLING_BACK}),
        S.ROLLING_BACK: frozenset({S.ROLLING_BACK, S.ROLLED_BACK, S.COMMITTED}),
    },
}
INITIAL: dict[Kind, JobStatus] = {"export": S.QUEUED, "import": S.UPLOADED}

# The status sets, each defined once; together they partition JobStatus.
WAITING = frozenset({S.QUEUED, S.UPLOADED})  # no worker has started it yet
# A worker holds it (or will).
RUNNING = frozenset({S.RUNNING, S.VALIDATING, S.COMMITTING, S.ROLLING_BACK})
AWAITING_USER = frozenset({S.VALIDATED})  # the next step is a person's
TERMINAL = frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED, S.EXPIRED, S.COMMITTED, S.ROLLED_BACK})
ACTIVE = WAITING | RUNNING  # a worker will move it on: the reconciler's and the metrics' set
# A rollback runs to its end: cancelled halfway it would leave the import neither here nor
# there (it is one transaction, so it never does; it just cannot be asked to).
CANCELLABLE = frozenset(JobStatus) - TERMINAL - {S.ROLLING_BACK}
# A job's event stream ends once no worker will move the job on by itself.
STREAM_ENDS = frozenset(JobStatus) - ACTIVE


def statuses(kind: Kind) -> frozenset[JobStatus]:
    """Every status a job of ``kind`` can be in."""
    table = TRANSITIONS[kind]
    return frozenset(table).union(*table.values())


def sources(kind: Kind, target: JobStatus) -> frozenset[JobStatus]:
    """The statuses a job of ``kind`` may move to ``target`` from."""
    return frozenset(s for s, ends in TRANSITIONS[kind].items() if target in ends)


class Move(NamedTuple):
    """A status write: a job of ``kind`` in one of ``sources`` becomes ``target``."""

    kind: Kind
    sources: frozenset[JobStatus]
    target: JobStatus

    @property
    def allowed(self) -> bool:
        return all(self.target in TRANSITIONS[self.kind].get(s, ()) for s in self.sources)

    @property
    def params(self) -> tuple[list[str], str]:
        """``(sources, target)`` as SQL parameters."""
        return values(self.sources), self.target.value


@dataclass(frozen=True)
class Stage:
    """What one worker function does to a job: claims it from ``waiting`` (or from
    ``running`` after a dead worker), works in ``running``, ends the attempt in one of
    ``ends``, or hands it back in ``retry`` after a transient failure."""

    kind: Kind
    waiting: frozenset[JobStatus]
    running: JobStatus
    retry: JobStatus
    ends: frozenset[JobStatus]
    failed: JobStatus = S.FAILED  # where an attempt that cannot go on ends

    @property
    def claimable(self) -> frozenset[JobStatus]:
        return self.waiting | {self.running}

    def moves(self) -> Iterator[Move]:
        yield Move(self.kind, self.claimable, self.running)
        for end in self.ends | {self.retry}:
            yield Move(self.kind, frozenset({self.running}), end)


RUN_EXPORT = Stage(
    "export",
    waiting=frozenset({S.QUEUED}),
    running=S.RUNNING,
    retry=S.QUEUED,
    ends=frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED}),
)
VALIDATE_IMPORT = Stage(
    "import",
    waiting=frozenset({S.UPLOADED}),
    running=S.VALIDATING,
    retry=S.UPLOADED,
    ends=frozenset({S.VALIDATED, S.FAILED, S.CANCELLED}),
)
COMMIT_IMPORT = Stage(
    "import",
    waiting=frozenset(),  # a commit is requested in its working status
    running=S.COMMITTING,
    retry=S.COMMITTING,
    ends=frozenset({S.COMMITTED, S.FAILED, S.CANCELLED}),
)
ROLLBACK_IMPORT = Stage(
    "import",
    waiting=frozenset(),  # a rollback is requested in its working status
    running=S.ROLLING_BACK,
    retry=S.ROLLING_BACK,
    ends=frozenset({S.ROLLED_BACK, S.COMMITTED}),
    failed=S.COMMITTED,  # a rollback that cannot be done leaves the import committed
)
STAGES = (RUN_EXPORT, VALIDATE_IMPORT, COMMIT_IMPORT, ROLLBACK_IMPORT)

# The status writes of this module besides the stages' (each used by its function below).
CANCEL = {k: Move(k, CANCELLABLE & statuses(k), S.CANCELLED) for k in TRANSITIONS}
EXPIRE_EXPORT = Move("export", frozenset({S.SUCCEEDED}), S.EXPIRED)
REVALIDATE_IMPORT = Move("import", frozenset({S.VALIDATED}), S.VALIDATING)
REQUEST_COMMIT = Move("import", frozenset({S.VALIDATED}), S.COMMITTING)
REQUEST_ROLLBACK = Move("import", frozenset({S.COMMITTED}), S.ROLLING_BACK)
EXPIRE_VALIDATED = Move("import", frozenset({S.VALIDATED}), S.CANCELLED)
# A job that ended its worker's life FERRY_JOB_MAX_CRASHES times is not revived again:
# it ends where its stage's attempts that cannot go on end.
CRASHED_OUT = {s.running: Move(s.kind, frozenset({s.running}), s.failed) for s in STAGES}


def moves() -> Iterator[Move]:
    """Every status change the code makes (``create_job`` aside, which starts at INITIAL)."""
    for stage in STAGES:
        yield from stage.moves()
    yield from CANCEL.values()
    yield from CRASHED_OUT.values()
    yield from (EXPIRE_EXPORT, EXPIRE_VALIDATED)
    yield from (REVALIDATE_IMPORT, REQUEST_COMMIT, REQUEST_ROLLBACK)


class Job(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    kind: Kind
    org_id: str
    user_id: str
    dataset: str
    status: JobStatus
    params: dict[str, Any]
    progress: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    request_id: str | None = None  # X-Request-ID of the request that created it
    attempt: int = 0
    run: int = 0
    crashes: int = 0
    lease_until: datetime | None = None
    cancel_requested_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def final(self) -> bool:
        return self.status in TERMINAL


def from_record(record: Any) -> Job:
    """A Job from a ``jobs`` row."""
    row = dict(record.items())
    row["status"] = JobStatus(row["status"])
    return Job(**row)


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
    params: dict[str, Any],
    idempotency_key: str | None = None,
    job_id: uuid.UUID | None = None,
    status: JobStatus | None = None,
    max_waiting: int | None = None,
) -> tuple[Job, bool]:
    """Insert a job in its kind's first status; with an idempotency key, a replay
    returns the first job. (``status`` lets tests start a job further along.)

    Returns ``(job, created)``. The same key with a different body is refused,
    also when twenty requests race: the unique constraint decides the winner. With
    ``max_waiting``, a caller who has that many jobs waiting already gets QueueFull
    (a replay is still answered). The job remembers the current request id.

    A pooled connection that dies under the insert leaves its fate unknown; the row's
    id tells whether it ran, so the insert is sent again only when it did not.
    """
    digest = request_hash({"kind": kind, "dataset": dataset, "params": params})
    job_id = job_id or uuid.uuid4()
    row = (
        job_id, kind, org_id, user_id, dataset, status or INITIAL[kind], params,
        idempotency_key, digest if idempotency_key else None, logs.request_id.get(),
    )  # fmt: skip
    for last in (False, True):
        try:
            inserted = await _insert_job(db, row, max_waiting)
            break
        except Exception as exc:
            if last or not connection_lost(exc) or not isinstance(db, asyncpg.Pool):
                raise
            if (inserted := await db.fetchrow(Q.get_job_unscoped, job_id)) is not None:
                break
    if inserted is not None:
        return from_record(inserted), True
    existing = from_record(await db.fetchrow(Q.get_job_by_key, org_id, user_id, idempotency_key))
    if existing.request_hash != digest:
        raise key_reused()
    return existing, False


async def job_by_key(db: Pool | Connection, *, org_id: str, user_id: str, key: str) -> Job | None:
    """The job one caller created with an ``Idempotency-Key``, if any."""
    return _maybe(await db.fetchrow(Q.get_job_by_key, org_id, user_id, key))


async def _insert_job(db: Pool | Connection, row: tuple[Any, ...], max_waiting: int | None) -> Any:
    """The inserted row, or None when its idempotency key is taken."""
    if max_waiting is None:
        return await db.fetchrow(Q.insert_job, *row)
    org_id, user_id, key = row[2], row[3], row[7]
    async with _connection(db) as conn, conn.transaction():
        await conn.execute(Q.lock_caller, org_id, user_id)
        if key is not None and await conn.fetchrow(Q.get_job_by_key, org_id, user_id, key):
            return None  # a replay: answered whatever the queue holds now
        waiting = await conn.fetchval(Q.count_waiting, org_id, user_id, values(WAITING))
        if waiting >= max_waiting:
            raise QueueFull(
                f"you have {waiting} jobs waiting to start, the most allowed "
                "(FERRY_MAX_QUEUED_JOBS_PER_USER); wait for some to finish, or cancel some",
                waiting=waiting,
                limit=max_waiting,
            )
        return await conn.fetchrow(Q.insert_job, *row)


def key_reused() -> InvalidInput:
    """The answer to an ``Idempotency-Key`` sent again with a different request."""
    return InvalidInput(
        "this Idempotency-Key was used with a different request",
        errors=[{"field": "Idempotency-Key", "message": "reused with a different body"}],
    )


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
    stage: Stage,
    lease_seconds: int,
    limit: int | None = None,
) -> Job | None:
    """Take the job for this worker, or None when it is not ours to run.

    With ``limit``, the job is also left waiting while ``limit`` jobs of the same
    owner and kind run or wait ahead of it; whoever frees a slot starts the next
    (``admissible_jobs``). An advisory lock per owner makes the count exact.
    """
    key = uuid.UUID(str(job_id))
    claimable, running = Move(stage.kind, stage.claimable, stage.running).params
    if limit is None:
        row = await db.fetchrow(Q.claim_job, key, run, claimable, running, lease_seconds)
        return _maybe(row)
    async with _connection(db) as conn, conn.transaction():
        await conn.execute(Q.lock_owner, key)
        row = await conn.fetchrow(
            Q.claim_job_limited, key, run, claimable, running, lease_seconds, limit
        )
    return _maybe(row)


async def admissible_jobs(
    db: Pool | Connection, *, org_id: str, user_id: str, stage: Stage, limit: int
) -> list[Job]:
    """The oldest waiting jobs of one owner that fit under ``limit`` running at once."""
    claimable = values(stage.claimable)
    rows = await db.fetch(Q.admissible_jobs, org_id, user_id, stage.kind, claimable, limit)
    return [from_record(r) for r in rows]


async def cancel_job(db: Pool | Connection, job: Job) -> Job | None:
    """Cancel a job: at once when no worker holds it, else ask its worker to stop.

    Returns the job as it now is, or None when it had already ended. A waiting job
    that a worker claims in the same instant is asked to stop instead (the row lock
    orders the two updates).
    """
    active, cancelled = CANCEL[job.kind].params
    error = {"type": "cancelled", "message": "cancelled on request"}
    row = await db.fetchrow(Q.cancel_waiting_job, job.id, job.org_id, error, active, cancelled)
    if row is None:
        row = await db.fetchrow(Q.request_cancel, job.id, job.org_id, active)
    return _maybe(row)


async def expirable_exports(db: Pool | Connection) -> list[Job]:
    """Succeeded exports whose file is past its ``expires_at``."""
    succeeded, _expired = EXPIRE_EXPORT.params
    return [from_record(r) for r in await db.fetch(Q.expirable_exports, succeeded)]


async def expire_export(db: Pool | Connection, job: Job) -> Job | None:
    """The export's file is deleted: it reads ``expired`` (None if it was not succeeded)."""
    return _maybe(await db.fetchrow(Q.expire_export, job.id, *EXPIRE_EXPORT.params))


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
    status: JobStatus,
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    progress: dict[str, Any] | None = None,
) -> Job | None:
    """End this attempt in ``status``; a terminal one also sets ``finished_at``.

    Ends in a waiting status too (``validated``, or back to be retried). None when a
    newer attempt owns the job, or it moved meanwhile where ``status`` cannot follow.
    """
    status = JobStatus(status)
    allowed = sources(job.kind, status)
    if not allowed:
        raise ValueError(f"a {job.kind} job never becomes {status}")
    row = await db.fetchrow(
        Q.finish_attempt,
        job.id,
        job.attempt,
        status.value,
        result,
        error,
        progress,
        values(TERMINAL),
        values(allowed),
    )
    return _maybe(row)


async def expired_leases(db: Pool | Connection, *, max_crashes: int) -> list[Job]:
    """Count a crash for each job whose worker died (its lease lapsed).

    Each comes back under a new run, to be enqueued afresh — or, at its ``max_crashes``-th
    crash, ends where its stage fails (``job.final``) with a message saying why it was
    not retried.
    """
    ends = {running.value: move.target.value for running, move in CRASHED_OUT.items()}
    errors = {running.value: crash_error(running, max_crashes) for running in CRASHED_OUT}
    rows = await db.fetch(
        Q.expired_leases, values(RUNNING), max_crashes, ends, errors, S.COMMITTING.value
    )
    return [from_record(r) for r in rows]


def crash_error(running: JobStatus, crashes: int) -> dict[str, Any]:
    """What a person reads on a job that kept taking its worker down while ``running``."""
    why, remedy = {
        S.RUNNING: ("the export may be too large", "export fewer rows or columns"),
        S.ROLLING_BACK: ("the import stays committed", "try the rollback again later"),
    }.get(running, ("the file may be too large or too complex to read", "upload a simpler file"))
    return {
        "type": "crashed",
        "message": f"this job stopped its worker {crashes} times ({why}); it was not "
        f"retried again — {remedy}, or contact support",
    }


async def hand_back(db: Pool | Connection, job: Job) -> Job | None:
    """Give a running job back, lease released and under a new run (a worker is stopping);
    None when this attempt no longer holds it."""
    return _maybe(await db.fetchrow(Q.hand_back, job.id, job.attempt))


async def renew_run(db: Pool | Connection, job: Job) -> Job | None:
    """The waiting ``job`` under a new run (its arq delivery is lost); None when it was
    claimed or moved on meanwhile."""
    return _maybe(await db.fetchrow(Q.renew_run, job.id, job.run))


async def waiting_jobs(db: Pool | Connection, *, older_than: float) -> list[Job]:
    """Jobs waiting for a worker for longer than ``older_than`` seconds."""
    rows = await db.fetch(Q.waiting_jobs, older_than, values(ACTIVE))
    return [from_record(r) for r in rows]


async def active_counts(db: Pool | Connection) -> list[tuple[str, str, int]]:
    """``(kind, status, jobs)`` of the jobs a worker has yet to move on."""
    rows = await db.fetch(Q.count_jobs, values(ACTIVE))
    return [(r["kind"], r["status"], r["n"]) for r in rows]


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


def public_result(job: Job) -> dict[str, Any] | None:
    """A job's ``result`` as its resource shows it, ``kind`` telling which: an export's
    file, or an import's totals and batch (its whole document is ``GET /v1/imports/{id}``)."""
    if not job.result:
        return None
    if job.kind == "export":
        return {"kind": "export", **job.result}
    return {"kind": "import", "totals": job.result.get("totals"), "batch": job.result.get("batch")}


def job_resource(job: Job, *, queue_position: int | None, events_token: str) -> dict[str, Any]:
    """The job as ``GET /v1/jobs/{id}`` returns it (and webhooks send it), with its links;
    ``events_token`` opens its event stream without a header."""
    doc = job_document(job)
    doc["result"] = msgspec.to_builtins(public_result(job))
    doc["queue_position"] = queue_position
    doc["cancel_requested"] = job.cancel_requested_at is not None
    succeeded_export = job.kind == "export" and job.status == S.SUCCEEDED
    doc["links"] = {
        "self": f"/v1/jobs/{job.id}",
        "events": f"/v1/jobs/{job.id}/events?token={events_token}",
        "download": f"/v1/exports/{job.id}/download" if succeeded_export else None,
    }
    return doc


async def queue_position(db: Pool | Connection, job: Job) -> int | None:
    """1 for the next job of this caller and kind to start; None unless waiting."""
    if job.status not in WAITING or job.lease_until is not None:
        return None
    position: int = await db.fetchval(
        Q.queue_position,
        job.org_id,
        job.user_id,
        job.kind,
        job.status.value,
        job.created_at,
        job.id,
    )
    return position


def values(statuses: Iterable[JobStatus]) -> list[str]:
    """Statuses as an SQL parameter (``status = ANY($n)``)."""
    return sorted(s.value for s in statuses)


# --- imports: the writes a person's request makes ----------------------------------------


async def revalidate_import(
    db: Pool | Connection, job: Job, mapping: dict[str, str | None]
) -> Job | None:
    """A new mapping: back to ``validating`` under a new run (arq refuses an id it still
    holds). None when the import is no longer ``validated``."""
    validated, validating = REVALIDATE_IMPORT.params
    row = await db.fetchrow(Q.revalidate_import, job.id, job.org_id, mapping, validated, validating)
    return _maybe(row)


async def choose_sheet(db: Pool | Connection, job: Job, sheet: str) -> Job | None:
    """Read another sheet of the stored workbook: back to ``validating`` under a new run,
    without the mapping chosen for the other sheet. None when it is no longer ``validated``."""
    validated, validating = REVALIDATE_IMPORT.params
    row = await db.fetchrow(Q.choose_sheet, job.id, job.org_id, sheet, validated, validating)
    return _maybe(row)


async def request_commit(
    db: Pool | Connection,
    job: Job,
    *,
    on_error: str,
    commit_key: str | None,
    accepted_mapping: dict[str, str | None],
    mode: str = "insert",
) -> Job | None:
    """Hand a validated import to a worker to commit; None when a commit or a cancel won."""
    validated, committing = REQUEST_COMMIT.params
    row = await db.fetchrow(
        Q.request_commit,
        job.id,
        job.org_id,
        on_error,
        commit_key,
        accepted_mapping,
        validated,
        committing,
        mode,
    )
    return _maybe(row)


async def request_rollback(db: Pool | Connection, job: Job, *, confirm: bool) -> Job | None:
    """Hand a committed import to a worker to roll back, under a new run; None when it is
    no longer committed (a concurrent rollback won)."""
    committed, rolling_back = REQUEST_ROLLBACK.params
    row = await db.fetchrow(
        Q.request_rollback, job.id, job.org_id, confirm, committed, rolling_back
    )
    return _maybe(row)


async def expire_validated_imports(db: Pool | Connection, *, days: int) -> list[uuid.UUID]:
    """Cancel the validated imports nobody committed within ``days``; their ids."""
    validated, cancelled = EXPIRE_VALIDATED.params
    rows = await db.fetch(Q.expire_validated_imports, days, validated, cancelled)
    return [row["id"] for row in rows]


async def mark_files_deleted(db: Pool | Connection, job_ids: list[uuid.UUID]) -> None:
    """Record that these imports' upload and error report were deleted."""
    await db.execute(Q.mark_import_files_deleted, job_ids)


async def mark_stale_files_deleted(
    db: Pool | Connection, *, days: int, also: list[uuid.UUID]
) -> list[tuple[str, uuid.UUID]]:
    """Mark the files of ended imports kept no longer (older than ``days``, or in
    ``also``) as deleted; ``(org, job id)`` of each, whose files the caller deletes.

    A committed import keeps its files until its rollback window closes.
    """
    ended = values(TERMINAL - {S.COMMITTED})
    rows = await db.fetch(Q.delete_stale_import_files, days, also, ended)
    return [(row["org_id"], row["id"]) for row in rows]
