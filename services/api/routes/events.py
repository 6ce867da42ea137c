"""Server-sent events: one job's progress, and every job event of the caller.

Event ids are Redis Stream ids: a client reconnecting with ``Last-Event-ID`` gets
exactly the events after it, none twice. A job stream starts with a snapshot of
the job and ends with its terminal event; a comment keeps idle connections alive.
Browsers' EventSource cannot send headers, so ``?token=`` takes the short-lived
event-link token of ``links.events`` instead of a bearer token.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, QueryParameter
from litestar.response import Stream

from services.api.auth import authorize_job, provide_principal, verifier
from services.api.views import job_view
from services.core import jobs
from services.core.auth import Principal, TokenVerifier
from services.core.deps import Deps
from services.core.errors import InvalidInput
from services.core.events import Event, job_stream, user_stream
from services.core.jobs import STREAM_ENDS, Job, JobStatus

SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
RETRY_MS = 2000
_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")

TokenParam = Annotated[
    str | None,
    QueryParameter(description="Event-link token from `links.events` (instead of a bearer)"),
]
LastEventId = Annotated[
    str | None,
    HeaderParameter(name="Last-Event-ID", description="Resume after this event id"),
]


def frame(event_id: str, event: str, data: dict[str, Any]) -> bytes:
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


async def stream_principal(
    request: Request[Any, Any, Any], token: str | None, job_id: str | None
) -> tuple[Principal, bool]:
    """The caller, from an event-link token or a bearer token; True when it was a bearer."""
    if token:
        return verifier(request).verify_events_token(token, job_id), False
    return await provide_principal(request), True


def resume_after(last_event_id: str | None) -> str | None:
    if last_event_id is None or last_event_id == "":
        return None
    if not _STREAM_ID.match(last_event_id):
        raise InvalidInput(
            "Last-Event-ID is not an id this api sent",
            errors=[{"field": "Last-Event-ID", "message": "malformed event id"}],
        )
    return last_event_id


@get(
    "/v1/jobs/{job_id:str}/events",
    tags=["jobs"],
    summary="Job progress as server-sent events",
    media_type="text/event-stream",
    security=[{"bearer": []}, {}],
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
    principal, bearer = await stream_principal(request, token, job_id)
    job = await jobs.get_job(deps.db, job_id, principal.org)
    if bearer:
        authorize_job(principal, job)
    after = resume_after(last_event_id)
    feed = JobFeed(deps, verifier(request), principal, job)
    if after is not None and job.status in STREAM_ENDS and not await feed.read(after):
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

    async def read(self, after: str, block_ms: int | None = None) -> list[Event]:
        return await self.deps.events.read(self.stream, after, block_ms=block_ms)

    async def view(self) -> tuple[str, dict[str, Any]]:
        """The job as it is now, from its row."""
        current = await jobs.get_job(self.deps.db, self.job_id, self.principal.org)
        return current.status, await job_view(self.deps.db, self.tokens, self.principal, current)

    async def frames(self, after: str | None) -> AsyncIterator[bytes]:
        cursor = after
        yield b"retry: %d\n\n" % RETRY_MS
        if cursor is None:
            # Read the stream position first: anything published after the snapshot
            # follows it, so nothing is missed (at worst a state is told twice).
            cursor = await self.deps.events.last_id(self.stream)
            status, doc = await self.view()
            yield frame(cursor, status if status in STREAM_ENDS else "status", doc)
            if status in STREAM_ENDS:
                return
        block: int | None = None  # a resumed client first gets what it missed, at once
        while True:
            found = await self.read(cursor, block)
            for event in found:
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


@get(
    "/v1/events",
    tags=["jobs"],
    summary="Every job event of the caller, as server-sent events",
    media_type="text/event-stream",
    security=[{"bearer": []}, {}],
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
    principal, _bearer = await stream_principal(request, token, None)
    after = resume_after(last_event_id)
    stream = user_stream(principal.org, principal.sub)

    async def events() -> AsyncIterator[bytes]:
        cursor = after or await deps.events.last_id(stream)
        yield b"retry: %d\n\n" % RETRY_MS
        while True:
            found = await deps.events.read(stream, cursor, block_ms=heartbeat_ms(deps))
            for event in found:
                cursor = event.id
                yield frame(event.id, event.type, with_links(event))
            if not found:
                yield b": heartbeat\n\n"

    return Stream(events(), media_type="text/event-stream", headers=SSE_HEADERS)


routes = [job_events, my_events]
