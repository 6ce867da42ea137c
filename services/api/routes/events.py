"""Server-sent events: one job's progress, and every job event of the caller.

Event ids are Redis Stream ids: a client reconnecting with ``Last-Event-ID`` gets
exactly the events after it, none twice. A job stream starts with a snapshot of
the job and ends with its terminal event; a comment keeps idle connections alive.
Browsers' EventSource cannot send headers, so ``?token=`` takes the event-link
token of ``links.events`` instead of a bearer token; it keeps opening the job's
stream until the job has ended (``core.auth``), so EventSource reconnects work for
as long as the job runs.

Without Redis the streams degrade instead of failing: a job's stream follows the
job row (no progress, but its end arrives), the feed waits with heartbeats.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
import redis.exceptions
from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIResponse
from litestar.params import FromPath, HeaderParameter, QueryParameter
from litestar.response import Stream

from services.api.auth import provide_principal, verifier
from services.api.openapi import EVENT_STREAM, operation, problems
from services.api.views import job_view
from services.core import jobs
from services.core.auth import Principal, TokenVerifier, authorize
from services.core.deps import Deps
from services.core.errors import InvalidInput
from services.core.events import Event, job_stream, user_stream
from services.core.jobs import STREAM_ENDS, Job, JobStatus

log = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
RETRY_MS = 2000
DEGRADED_POLL_MS = 1000
WARN_EVERY = 10.0
_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")

TokenParam = Annotated[
    str | None,
    QueryParameter(description="Event-link token from `links.events` (instead of a bearer)"),
]
LastEventId = Annotated[
    str | None,
    HeaderParameter(name="Last-Event-ID", description="Resume after this event id"),
]


def frame(event_id: str, event: str, data: Any) -> bytes:
    """One SSE message; the JSON has no newlines, so one ``data:`` line carries it."""
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (
        event_id.encode(),
        event.encode(),
        msgspec.json.encode(data),
    )


def with_links(event: Event) -> dict[str, Any]:
    """Job documents in events get the links a notification needs."""
    data = dict(event.data)
    if "status" in data and "id" in data:
        job_id = data["id"]
        succeeded = data.get("kind") == "export" and data["status"] == JobStatus.SUCCEEDED
        data["links"] = {
            "self": f"/v1/jobs/{job_id}",
            "download": f"/v1/exports/{job_id}/download" if succeeded else None,
        }
    return data


async def job_and_caller(
    request: Request[Any, Any, Any], deps: Deps, token: str | None, job_id: str
) -> tuple[Job, Principal]:
    """The job, and its caller from its event link (valid while the job runs and a
    while after) or from a bearer token that may see it."""
    if token:
        link = verifier(request).verify_events_token(token, job_id)
        job = await jobs.get_job(deps.db, job_id, link.principal.org)
        link.check(job, grace=deps.settings.events_token_ttl)
        return job, link.principal
    principal = await provide_principal(request)
    job = await jobs.get_job(deps.db, job_id, principal.org)
    authorize(principal, job, "view")
    return job, principal


async def feed_caller(request: Request[Any, Any, Any], token: str | None) -> Principal:
    if token:
        link = verifier(request).verify_events_token(token, None)
        link.check(None, grace=0)
        return link.principal
    return await provide_principal(request)


def resume_after(last_event_id: str | None) -> str | None:
    if last_event_id is None or last_event_id == "":
        return None
    if not _STREAM_ID.match(last_event_id) or max(stream_key(last_event_id)) >= 2**64:
        raise InvalidInput(
            "Last-Event-ID is not an id this api sent",
            errors=[{"field": "Last-Event-ID", "message": "malformed event id"}],
        )
    return last_event_id


def stream_key(event_id: str) -> tuple[int, int]:
    """A Redis Stream id (``ms-seq``) as numbers, to compare ids."""
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


async def clamp(deps: Deps, stream: str, after: str | None) -> str | None:
    """An id past the stream's last (a clock gone wrong, a forged header) resumes from
    the last: waiting for ids after it would hide every event to come, and telling the
    browser the stream ended would have it reconnect every few seconds for ever."""
    if after is None:
        return None
    last = await last_id(deps, stream)  # None while Redis is away: resume as asked
    return last if last is not None and stream_key(after) > stream_key(last) else after


STREAM_204 = OpenAPIResponse(description="The client has seen the terminal event: stop")


@get(
    "/v1/jobs/{job_id:str}/events",
    tags=["jobs"],
    summary="Job progress as server-sent events",
    media_type="text/event-stream",
    security=[{"bearer": []}, {}],
    operation_id="streamJobEvents",
    responses=problems(403, 404, 422),
    operation_class=operation(content={200: EVENT_STREAM}, responses={204: STREAM_204}),
)
async def job_events(
    request: Request[Any, Any, Any],
    job_id: FromPath[str],
    deps: NamedDependency[Deps],
    token: TokenParam = None,
    last_event_id: LastEventId = None,
) -> Response[bytes] | Stream:
    """`status` (the job) first, then `progress` about twice a second, then a terminal
    event (`succeeded`, `failed`, `cancelled`, …) that ends the stream. Each event has
    an `id`; reconnect with `Last-Event-ID` to get exactly the events after it (204
    once the client has seen the end)."""
    job, principal = await job_and_caller(request, deps, token, job_id)
    feed = JobFeed(deps, verifier(request), principal, job)
    after = await clamp(deps, feed.stream, resume_after(last_event_id))
    if after is not None and job.status in STREAM_ENDS and await feed.read(after) == []:
        # The client saw the end already: 204 tells EventSource to stop reconnecting.
        return Response(b"", status_code=204, headers=SSE_HEADERS)
    return Stream(feed.frames(after), media_type="text/event-stream", headers=SSE_HEADERS)


class JobFeed:
    """One job's events as SSE frames, up to the one where its stream ends."""

    def __init__(self, deps: Deps, tokens: TokenVerifier, principal: Principal, job: Job) -> None:
        self.deps = deps
        self.tokens = tokens
        self.principal = principal
        self.job_id = job.id
        self.stream = job_stream(job.id)

    async def read(self, after: str, block_ms: int | None = None) -> list[Event] | None:
        """The events after ``after``; None when Redis is unavailable."""
        return await read_or_wait(self.deps, self.stream, after, block_ms)

    async def view(self) -> tuple[str, Any]:
        """The job as it is now, from its row."""
        current = await jobs.get_job(self.deps.db, self.job_id, self.principal.org)
        return current.status, await job_view(self.deps.db, self.tokens, self.principal, current)

    async def frames(self, after: str | None) -> AsyncIterator[bytes]:
        cursor = after
        yield b"retry: %d\n\n" % RETRY_MS
        if cursor is None:
            # Read the stream position first: anything published after the snapshot
            # follows it, so nothing is missed (at worst a state is told twice).
            # Without Redis, from the start of the job's stream: an event may come twice
            # once Redis is back, none is missed.
            cursor = await last_id(self.deps, self.stream) or "0-0"
            status, doc = await self.view()
            yield frame(cursor, status if status in STREAM_ENDS else "status", doc)
            if status in STREAM_ENDS:
                return
        block: int | None = None  # a resumed client first gets what it missed, at once
        while True:
            found = await self.read(cursor, block)
            for event in found or ():
                cursor = event.id
                yield frame(event.id, event.type, with_links(event))
                if event.type in STREAM_ENDS:
                    return
            if found:
                continue
            # Nothing new: the job may have ended without its event reaching Redis
            # (events are best effort; the row is the truth).
            status, doc = await self.view()
            if status in STREAM_ENDS:
                yield frame(cursor, status, doc)
                return
            if block is not None:
                yield b": heartbeat\n\n"
            block = heartbeat_ms(self.deps)


def heartbeat_ms(deps: Deps) -> int:
    return max(int(deps.settings.sse_heartbeat_seconds * 1000), 1)


async def last_id(deps: Deps, stream: str) -> str | None:
    """The newest event id; None when Redis is unavailable."""
    try:
        return await deps.events.last_id(stream)
    except redis.exceptions.RedisError as exc:
        _unavailable(stream, exc)
        return None


async def read_or_wait(
    deps: Deps, stream: str, after: str, block_ms: int | None
) -> list[Event] | None:
    """Events after ``after`` (waiting up to ``block_ms`` for one); None when Redis is
    unavailable, after waiting about as long as the read would have (at most a second,
    so a stream following the job row notices its end soon)."""
    try:
        return await deps.events.read(stream, after, block_ms=block_ms)
    except redis.exceptions.RedisError as exc:
        _unavailable(stream, exc)
        await asyncio.sleep(min(block_ms or 0, DEGRADED_POLL_MS) / 1000)
        return None


_warned = {"at": -WARN_EVERY}


def _unavailable(stream: str, exc: BaseException) -> None:
    now = time.monotonic()
    if now - _warned["at"] < WARN_EVERY:
        return  # one line per outage is enough, not one per stream and second
    _warned["at"] = now
    log.warning(
        "events unavailable; job streams follow the job rows",
        extra={"action": "events_degraded", "stream": stream, "error": repr(exc)[:200]},
    )


@get(
    "/v1/events",
    tags=["jobs"],
    summary="Every job event of the caller, as server-sent events",
    media_type="text/event-stream",
    security=[{"bearer": []}, {}],
    operation_id="streamMyEvents",
    responses=problems(422),
    operation_class=operation(content={200: EVENT_STREAM}),
)
async def my_events(
    request: Request[Any, Any, Any],
    deps: NamedDependency[Deps],
    token: TokenParam = None,
    last_event_id: LastEventId = None,
) -> Stream:
    """The notification feed: events of all the caller's jobs from now on (or after
    `Last-Event-ID`), e.g. to tell a user their export is ready. `GET /v1/jobs`
    returns an event-link URL for it in `links.events`. The stream does not end."""
    principal = await feed_caller(request, token)
    stream = user_stream(principal.org, principal.sub)
    after = await clamp(deps, stream, resume_after(last_event_id))

    async def events() -> AsyncIterator[bytes]:
        cursor = after
        yield b"retry: %d\n\n" % RETRY_MS
        while True:
            # From now on: without Redis, wait for it (not the feed's whole history).
            cursor = cursor or await last_id(deps, stream)
            if cursor is None:
                await asyncio.sleep(DEGRADED_POLL_MS / 1000)
                yield b": heartbeat\n\n"
                continue
            found = await read_or_wait(deps, stream, cursor, heartbeat_ms(deps))
            for event in found or ():
                cursor = event.id
                yield frame(event.id, event.type, with_links(event))
            if not found:
                yield b": heartbeat\n\n"

    return Stream(events(), media_type="text/event-stream", headers=SSE_HEADERS)


routes = [job_events, my_events]
