"""Deliveries: claim the due ones, render what is sent, record every attempt, the log.

A delivery is ``pending`` until an attempt succeeds (``succeeded``) or its retry window
ends (``failed``). A claim takes a lease and bumps ``attempts``, the fencing token of
the final write: a worker that stalled past its lease records its attempt but settles
nothing. A worker that died leaves its attempt without an outcome; the next claim marks
it failed, so the log shows it. At least once: a receiver may see a delivery twice.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
import msgspec

from services.core.db.pool import Pool
from services.core.jobs import Job, job_resource
from services.core.settings import Settings
from services.core.webhooks import Q
from services.core.webhooks.endpoints import PING, Endpoint

Status = Literal["pending", "succeeded", "failed"]
Outcome = Literal["succeeded", "failed"]
# Due deliveries one claim takes; the rest wait for the next claim.
CLAIM_BATCH = 50
EXCERPT_CHARS = 200
ABANDONED = "the worker stopped before the endpoint answered"


class Claimed(msgspec.Struct, kw_only=True):
    """A delivery taken for one attempt, with what it needs from its endpoint and event."""

    id: uuid.UUID
    attempts: int
    created_at: datetime
    event_id: uuid.UUID
    endpoint_id: uuid.UUID
    url: str
    enabled: bool
    secret: str
    previous_secret: str | None
    type: str
    job: dict[str, Any] | None
    body: bytes | None
    event_created_at: datetime

    @property
    def secrets(self) -> list[str]:
        """The secrets that sign it, sealed as stored (``sealing.Sealer.open`` opens them):
        the current one, and a rotated-out one in its grace."""
        return [self.secret, *([self.previous_secret] if self.previous_secret else [])]


class Result(msgspec.Struct, kw_only=True):
    """What one attempt got: a 2xx (``ok``), another status, or an error before one."""

    ok: bool
    duration_ms: int
    response_status: int | None = None
    excerpt: str | None = None
    error: str | None = None


class WebhookAttempt(msgspec.Struct, kw_only=True):
    """One attempt of a delivery, as the log shows it."""

    number: int
    started_at: datetime
    outcome: Outcome | None
    duration_ms: int | None
    response_status: int | None
    response_excerpt: str | None
    error: str | None
    next_attempt_at: datetime | None


class WebhookDelivery(msgspec.Struct, kw_only=True):
    """One event for one endpoint, with every attempt at it."""

    id: uuid.UUID
    event_id: uuid.UUID
    event: str
    job_id: uuid.UUID | None
    status: Status
    created_at: datetime
    next_attempt_at: datetime | None
    finished_at: datetime | None
    attempts: list[WebhookAttempt]


def retry_delay(
    attempt: int, settings: Settings, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1, 2, …).

    Doubles from ``webhook_retry_seconds`` up to ``webhook_retry_max_seconds``; the
    jitter picks a point in the upper half, so the delays still grow while a burst of
    failures spreads out instead of retrying in step.
    """
    exponent = min(attempt - 1, 64)  # 2.0**64 times any delay is past any cap
    growing = settings.webhook_retry_seconds * 2.0**exponent
    full = min(settings.webhook_retry_max_seconds, growing)
    return full / 2 + full / 2 * rand()


async def claim(db: Pool, settings: Settings, *, limit: int = CLAIM_BATCH) -> list[Claimed]:
    """Take up to ``limit`` due deliveries for one attempt each (see the module docstring)."""
    lease = 2 * settings.webhook_timeout_seconds + 1  # the attempt, and its writes
    async with db.acquire() as conn, conn.transaction():
        await conn.execute(Q.lock_claims)
        rows = await conn.fetch(
            Q.claim_deliveries,
            limit,
            settings.webhook_endpoint_concurrency,
            lease,
            "failed",
            ABANDONED,
        )
    return [Claimed(**dict(row.items())) for row in rows]


async def body(db: Pool, claimed: Claimed, events_token: Callable[[Job], str]) -> bytes:
    """The JSON of the delivery's event; rendered by the first attempt, then kept."""
    if claimed.body is not None:
        return claimed.body
    assert claimed.job is not None  # only a ping has no job, and it is stored rendered
    job = snapshot(claimed.job)
    data = job_resource(job, queue_position=None, events_token=events_token(job))
    rendered = event_json(claimed.event_id, claimed.type, claimed.event_created_at, data)
    saved: bytes | None = await db.fetchval(Q.save_event_body, claimed.event_id, rendered)
    if saved is None:  # another attempt rendered it first
        saved = await db.fetchval(Q.get_event_body, claimed.event_id)
    assert saved is not None
    return saved


def snapshot(row: dict[str, Any]) -> Job:
    """The job as the trigger saw it (``to_jsonb`` of its row), its times in UTC as the
    api shows them."""
    job = msgspec.convert(row, Job, strict=False)
    times = {
        name: value.astimezone(UTC)
        for name in job.__struct_fields__
        if isinstance(value := getattr(job, name), datetime)
    }
    return msgspec.structs.replace(job, **times)


def event_json(event_id: uuid.UUID, type: str, created_at: datetime, data: Any) -> bytes:
    """What a webhook POSTs: ``{id, type, created_at, data}``."""
    document = {"id": event_id, "type": type, "created_at": created_at.astimezone(UTC)}
    return msgspec.json.encode({**document, "data": data})


async def settle(
    db: Pool, settings: Settings, claimed: Claimed, result: Result, *, give_up: bool = False
) -> datetime | None:
    """Record the attempt and what follows it; the time of the next attempt, if any.

    A failed attempt is retried after ``retry_delay`` unless that would be past the
    retry window (or ``give_up``), when the delivery is ``failed``.
    """
    status: Status = "succeeded"
    next_at: datetime | None = None
    if give_up:
        status = "failed"
    elif not result.ok:
        wait = timedelta(seconds=retry_delay(claimed.attempts, settings))
        window = timedelta(seconds=settings.webhook_retry_window_seconds)
        at = datetime.now(UTC) + wait
        status, next_at = ("pending", at) if at <= claimed.created_at + window else ("failed", None)
    excerpt = result.excerpt[:EXCERPT_CHARS] if result.excerpt else None
    async with db.acquire() as conn, conn.transaction():
        await conn.execute(
            Q.record_attempt,
            claimed.id,
            claimed.attempts,
            "succeeded" if result.ok else "failed",
            result.response_status,
            excerpt,
            result.error,
            result.duration_ms,
            next_at,
        )
        ours = await conn.fetchval(Q.settle_delivery, claimed.id, claimed.attempts, status, next_at)
    return next_at if ours is not None else None


async def ping(db: Pool, endpoint: Endpoint) -> WebhookDelivery:
    """A ``ping`` event for this endpoint alone, due at once."""
    event_id, now = uuid.uuid4(), datetime.now(UTC)
    data = {"webhook": {"id": endpoint.id, "url": endpoint.url}, "message": "hello from Ferry"}
    rendered = event_json(event_id, PING, now, data)
    row = await db.fetchrow(
        Q.insert_ping, event_id, endpoint.org_id, PING, rendered, uuid.uuid4(), endpoint.id, now
    )
    assert row is not None
    return _delivery({**dict(row.items()), "type": PING, "job_id": None}, [])


async def list_deliveries(
    db: Pool,
    endpoint_id: uuid.UUID,
    *,
    status: Status | None = None,
    before: tuple[datetime, uuid.UUID] | None = None,
    limit: int = 50,
) -> list[WebhookDelivery]:
    """An endpoint's deliveries, newest first after the keyset cursor, with their attempts."""
    created, last_id = before if before else (None, None)
    rows = await db.fetch(Q.list_deliveries, endpoint_id, status, created, last_id, limit)
    attempts: dict[uuid.UUID, list[WebhookAttempt]] = {row["id"]: [] for row in rows}
    for row in await db.fetch(Q.list_attempts, list(attempts)):
        attempts[row["delivery_id"]].append(_attempt(row))
    return [_delivery(dict(row.items()), attempts[row["id"]]) for row in rows]


def _attempt(row: asyncpg.Record) -> WebhookAttempt:
    fields = WebhookAttempt.__struct_fields__
    return WebhookAttempt(**{name: row[name] for name in fields})


def _delivery(row: dict[str, Any], attempts: list[WebhookAttempt]) -> WebhookDelivery:
    pending = row["finished_at"] is None
    return WebhookDelivery(
        id=row["id"],
        event_id=row["event_id"],
        event=row["type"],
        job_id=row["job_id"],
        status=row["status"],
        created_at=row["created_at"],
        next_attempt_at=row["next_attempt_at"] if pending else None,
        finished_at=row["finished_at"],
        attempts=attempts,
    )


async def purge(db: Pool, *, days: int) -> int:
    """Forget deliveries finished more than ``days`` ago, and events nothing points at."""
    status = await db.execute(Q.purge_deliveries, days)
    await db.execute(Q.purge_events, days)
    return int(status.split()[-1])


class Backlog(msgspec.Struct, frozen=True):
    """What an operator watches: deliveries not finished, how long the oldest has waited
    (seconds, 0 when none), and how many failed for good lately."""

    unfinished: int
    oldest_seconds: float
    failed: int


async def backlog(db: Pool, *, failed_within: float) -> Backlog:
    """The backlog now, counting the deliveries that failed in the last ``failed_within`` s."""
    row = await db.fetchrow(Q.delivery_backlog, failed_within)
    assert row is not None
    return Backlog(row["unfinished"], row["oldest_seconds"], row["failed"])
