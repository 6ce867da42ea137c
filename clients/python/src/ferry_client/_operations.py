"""Every call of the client as a sans-I/O operation (see ``_core``): written once,
run blocking by ``Ferry`` and awaited by ``AsyncFerry``."""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, TypeVar

import httpx
import msgspec

from ferry_client._core import (
    Call,
    Close,
    Deadline,
    Op,
    Policy,
    Read,
    Sleep,
    SseDecoder,
    backoff,
    get_json,
    read_all,
    request,
    send,
)
from ferry_client._exceptions import (
    ChecksumMismatch,
    ConnectionFailed,
    JobCancelled,
    JobFailed,
    NotFound,
    WaitTimeout,
)
from ferry_client.models import (
    CommitMode,
    Dataset,
    ExportRequest,
    ExportResult,
    Import,
    Job,
    JobPage,
    Progress,
    UploadTicket,
)

J = TypeVar("J", bound=Job)
ProgressCallback = Callable[[Progress], object]
OnError = Literal["fail", "skip"]
# How a file reaches Ferry: ``direct`` to storage (``POST /v1/uploads``), ``stream``ed
# through the api as the body of ``POST /v1/imports``, or ``auto``: direct when the
# server offers it.
Via = Literal["auto", "direct", "stream"]

# A worker moves a job on by itself while it is in one of these.
ACTIVE = frozenset({"queued", "running", "uploaded", "validating", "committing", "rolling_back"})
# SSE: the read timeout, well above the server's heartbeat (15 s by default).
EVENTS_READ_TIMEOUT = 60.0
# Consecutive failed attempts at the event stream before falling back to polling.
SSE_ATTEMPTS = 3
POLL_FIRST, POLL_MAX = 0.5, 5.0
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def idempotency_key() -> dict[str, str]:
    """A fresh key for one logical call; its retries send the same one."""
    return {"Idempotency-Key": f"ferry-client-{uuid.uuid4()}"}


def datasets(policy: Policy) -> Op[list[Dataset]]:
    page = yield from get_json(policy, "/v1/datasets", dict[str, list[Dataset]])
    return page["items"]


def dataset(policy: Policy, name: str) -> Op[Dataset]:
    return (yield from get_json(policy, f"/v1/datasets/{name}", Dataset))


# --- jobs ---------------------------------------------------------------------------------


def get_job(policy: Policy, job_id: str) -> Op[Job]:
    return (yield from get_json(policy, f"/v1/jobs/{job_id}", Job))


def get_import(policy: Policy, job_id: str) -> Op[Import]:
    return (yield from get_json(policy, f"/v1/imports/{job_id}", Import))


def job_page(
    policy: Policy,
    *,
    kind: str | None = None,
    status: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Op[JobPage]:
    """One page of the caller's jobs, newest first."""
    params = {"kind": kind, "status": status, "limit": str(limit), "cursor": cursor}
    query = {k: v for k, v in params.items() if v is not None}
    return (yield from get_json(policy, "/v1/jobs", JobPage, query))


def cancel(policy: Policy, job_id: str) -> Op[Job]:
    response = yield from request(policy, Call("POST", f"/v1/jobs/{job_id}/cancel"))
    return msgspec.json.decode(response.content, type=Job)


def refresh(policy: Policy, job: J) -> Op[J]:
    """The job as it is now (an import with its whole document)."""
    if isinstance(job, Import):
        return (yield from get_import(policy, job.id))  # type: ignore[return-value]
    return (yield from get_job(policy, job.id))  # type: ignore[return-value]


def wait(
    policy: Policy,
    job: J,
    *,
    progress: ProgressCallback | None = None,
    timeout: float | None = None,
) -> Op[J]:
    """Wait until no worker moves the job on by itself; the job as it then is.

    Follows the job's event stream, reconnecting with ``Last-Event-ID`` after a drop;
    polls instead when the stream is unavailable. Raises ``JobFailed`` (or
    ``JobCancelled``) when it ends so, ``WaitTimeout`` when ``timeout`` runs out.
    """
    deadline = Deadline(timeout)
    if job.status in ACTIVE:
        followed = yield from _follow(policy, job.id, progress, deadline)
        if not followed:
            yield from _poll(policy, job, progress, deadline)
    job = yield from refresh(policy, job)
    if job.status == "failed":
        raise JobFailed(job)
    if job.status == "cancelled":
        raise JobCancelled(job)
    return job


def _follow(
    policy: Policy, job_id: str, progress: ProgressCallback | None, deadline: Deadline
) -> Op[bool]:
    """Read the job's events until the job leaves ACTIVE; False when SSE is unavailable."""
    feed = _Feed(job_id, progress, deadline)
    failures = 0
    while failures < SSE_ATTEMPTS:
        try:
            response = yield from send(policy, feed.call())
            if response.status_code == 204:  # we saw the end already
                yield Close(response)
                return True
            if response.status_code != 200 or "event-stream" not in response.headers.get(
                "content-type", ""
            ):
                yield from read_all(response)
                return False
            yield from feed.read(response)
        except (httpx.TransportError, ConnectionFailed):
            pass  # reconnect, after the last event seen
        if feed.ended:
            return True
        failures = 0 if feed.got else failures + 1
        yield from _sleep(policy, failures, deadline)
    return False


class _Feed:
    """Following one job's events, across reconnections."""

    def __init__(self, job_id: str, progress: ProgressCallback | None, deadline: Deadline) -> None:
        self.job_id = job_id
        self.progress = progress
        self.deadline = deadline
        self.last_id: str | None = None
        self.got = False  # an event came over the current connection
        self.ended = False
        self.reported: Progress | None = None

    def call(self) -> Call:
        headers = {"Accept": "text/event-stream"}
        if self.last_id is not None:
            headers["Last-Event-ID"] = self.last_id
        url = f"/v1/jobs/{self.job_id}/events"
        return Call("GET", url, headers=headers, stream=True, read_timeout=EVENTS_READ_TIMEOUT)

    def read(self, response: httpx.Response) -> Op[None]:
        """The events of one connection, until the job ends or the connection does."""
        decoder = SseDecoder()
        self.got = False
        while not self.ended and (chunk := (yield Read(response))):
            for event in decoder.feed(chunk):
                self.got = True
                self.last_id = event.id or self.last_id
                if event.event == "progress":
                    self._report(msgspec.json.decode(event.data, type=Progress))
                elif _ended(event.event, event.data):
                    self.ended = True
                    self._report(_final_progress(event.data))
                    break
            if not self.ended and self.deadline.passed:
                raise WaitTimeout("the job did not end in time; it carries on on the server")
        yield Close(response)  # (after an error the driver closes it)

    def _report(self, progress: Progress | None) -> None:
        # Progress events are throttled, so a short job may end before one is sent:
        # the final document's progress is reported too, once, so a bar reaches its end.
        if self.progress is not None and progress is not None and progress != self.reported:
            self.reported = progress
            self.progress(progress)


def _final_progress(data: str) -> Progress | None:
    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
        document = msgspec.json.decode(data, type=_WithProgress)
        return document.progress
    return None


class _WithProgress(msgspec.Struct):
    progress: Progress | None = None


def _ended(event: str, data: str) -> bool:
    """Does this event leave the job where no worker moves it on by itself?"""
    if event == "progress":
        return False
    with contextlib.suppress(msgspec.DecodeError):
        document = msgspec.json.decode(data)
        if isinstance(document, dict) and isinstance(document.get("status"), str):
            return document["status"] not in ACTIVE
    return event not in ACTIVE and event != "status"


def _poll(
    policy: Policy, job: Job, progress: ProgressCallback | None, deadline: Deadline
) -> Op[None]:
    seen: Progress | None = None
    interval = POLL_FIRST
    while True:
        current = yield from get_job(policy, job.id)
        if progress is not None and current.progress is not None and current.progress != seen:
            seen = current.progress
            progress(seen)
        if current.status not in ACTIVE:
            return
        if deadline.passed:
            raise WaitTimeout("the job did not end in time; it carries on on the server")
        yield from _pause(interval)
        interval = min(interval * 1.5, POLL_MAX)


def _sleep(policy: Policy, failures: int, deadline: Deadline) -> Op[None]:
    if deadline.passed:
        raise WaitTimeout("the job did not end in time; it carries on on the server")
    if failures:
        yield from _pause(backoff(policy, failures - 1))


def _pause(seconds: float) -> Op[None]:
    yield Sleep(seconds)


# --- exports ------------------------------------------------------------------------------


def create_export(policy: Policy, body: ExportRequest) -> Op[Job]:
    """``POST /v1/exports`` under one Idempotency-Key, however often it is retried."""
    call = Call("POST", "/v1/exports", json=msgspec.to_builtins(body), headers=idempotency_key())
    response = yield from request(policy, call)
    return msgspec.json.decode(response.content, type=Job)


def download(policy: Policy, job: Job, path: Path) -> Op[Path]:
    """Stream a succeeded export's file to ``path``, checking its sha256 on the way.

    The bytes go to ``<path>.part`` first, renamed once complete and verified, so a
    file at ``path`` is always whole. A dropped connection starts the file again.
    """
    if job.result is None:
        job = yield from refresh(policy, job)
    expected = msgspec.convert(job.result, ExportResult)
    attempt = 0
    while True:
        try:
            return (yield from _download_once(policy, job.id, path, expected))
        except ConnectionFailed:
            raise
        except httpx.TransportError as exc:
            if attempt >= policy.retries:
                raise ConnectionFailed(f"download of {job.id}: {exc}") from exc
            attempt += 1
            yield from _pause(backoff(policy, attempt - 1))


def _download_once(policy: Policy, job_id: str, path: Path, expected: ExportResult) -> Op[Path]:
    response = yield from request(
        policy, Call("GET", f"/v1/exports/{job_id}/download", stream=True)
    )
    if response.status_code in (302, 303, 307, 308):  # a presigned URL: no bearer token there
        yield Close(response)
        location = response.headers["location"]
        response = yield from request(policy, Call("GET", location, auth=False, stream=True))
    digest = yield from _save(response, path)
    if digest != expected.sha256:
        path.unlink()
        raise ChecksumMismatch(
            f"{path.name}: sha256 {digest} differs from the export's {expected.sha256}; "
            "the file was removed"
        )
    return path


def _save(response: httpx.Response, path: Path) -> Op[str]:
    """Stream a response body into ``path`` (via ``.part``); its sha256."""
    path = Path(path)
    part = path.with_name(path.name + ".part")
    digest = hashlib.sha256()
    try:
        with part.open("wb") as out:
            while chunk := (yield Read(response)):
                digest.update(chunk)
                out.write(chunk)
        yield Close(response)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return digest.hexdigest()


def direct_export(
    policy: Policy, dataset: str, fmt: str, path: Path, query: Mapping[str, str]
) -> Op[int]:
    """A small export streamed straight into ``path``; the rows it holds.

    Over the server's direct-export limit this raises ``TooLarge``, whose
    ``problem["export_request"]`` is the body of a background export.
    """
    call = Call("GET", f"/v1/datasets/{dataset}/export.{fmt}", params=dict(query), stream=True)
    response = yield from request(policy, call)
    rows = int(response.headers.get("x-ferry-rows", "0"))
    yield from _save(response, path)
    return rows


# --- imports ------------------------------------------------------------------------------


def upload(
    policy: Policy,
    path: Path,
    *,
    dataset: str,
    account_id: str,
    sheet: str | None = None,
    via: Via = "auto",
) -> Op[Import]:
    """Upload ``path`` and start its import (validating): straight to storage when the
    server offers direct uploads (or ``via="direct"``), else streamed through the api."""
    path = Path(path)
    if via != "stream":
        ticket = yield from _ticket(policy, path, required=via == "direct")
        if ticket is not None:
            return (yield from _upload_direct(policy, path, ticket, dataset, account_id, sheet))
    params = {"dataset": dataset, "account_id": account_id, "filename": path.name}
    if sheet:
        params["sheet"] = sheet
    headers = {
        **idempotency_key(),
        "Content-Type": _media_type(path),
        "Content-Length": str(path.stat().st_size),
    }
    call = Call("POST", "/v1/imports", params=params, headers=headers, upload=path)
    response = yield from request(policy, call)
    return msgspec.json.decode(response.content, type=Import)


def _media_type(path: Path) -> str:
    return XLSX if path.suffix.lower() in {".xlsx", ".xlsm"} else "text/csv"


def _ticket(policy: Policy, path: Path, *, required: bool) -> Op[UploadTicket | None]:
    """A direct upload URL for ``path``; None when the server has no ``/v1/uploads``
    (an older Ferry) and ``required`` is not set."""
    body = {"filename": path.name, "bytes": path.stat().st_size, "content_type": _media_type(path)}
    try:
        response = yield from request(policy, Call("POST", "/v1/uploads", json=body))
    except NotFound:
        if required:
            raise
        return None
    return msgspec.json.decode(response.content, type=UploadTicket)


def _upload_direct(
    policy: Policy,
    path: Path,
    ticket: UploadTicket,
    dataset: str,
    account_id: str,
    sheet: str | None,
) -> Op[Import]:
    """PUT the file to the ticket's URL (sending it again replaces it), then import it."""
    put = Call(ticket.method, ticket.url, headers=dict(ticket.headers), upload=path, auth=False)
    yield from request(policy, put)
    body = {"upload_id": ticket.id, "dataset": dataset, "account_id": account_id}
    if sheet:
        body["sheet"] = sheet
    call = Call("POST", "/v1/imports", json=body, headers=idempotency_key())
    response = yield from request(policy, call)
    return msgspec.json.decode(response.content, type=Import)


def set_mapping(policy: Policy, job_id: str, mapping: Mapping[str, str | None]) -> Op[Import]:
    """Change the columns named; the import validates again."""
    # Sent twice, a mapping change would meet an import that is validating again.
    call = Call("PUT", f"/v1/imports/{job_id}/mapping", json=dict(mapping), replayable=False)
    response = yield from request(policy, call)
    return msgspec.json.decode(response.content, type=Import)


def choose_sheet(policy: Policy, job_id: str, sheet: str) -> Op[Import]:
    """Read another sheet of the uploaded workbook; the import validates again."""
    call = Call("PUT", f"/v1/imports/{job_id}/sheet", json={"sheet": sheet}, replayable=False)
    response = yield from request(policy, call)
    return msgspec.json.decode(response.content, type=Import)


def errors_report(policy: Policy, job_id: str, path: Path) -> Op[Path]:
    """The failed rows (original values, ``_row``, ``_errors``) saved to ``path``."""
    response = yield from request(
        policy, Call("GET", f"/v1/imports/{job_id}/errors.csv", stream=True)
    )
    if response.status_code in (302, 303, 307, 308):
        yield Close(response)
        location = response.headers["location"]
        response = yield from request(policy, Call("GET", location, auth=False, stream=True))
    yield from _save(response, path)
    return Path(path)


def commit(
    policy: Policy, job_id: str, on_error: OnError, mode: CommitMode = "insert"
) -> Op[Import]:
    """Ask for the commit: all-or-nothing (``fail``) or the valid rows only (``skip``);
    ``mode`` says what a row whose key names an existing record does (see ``Batch``)."""
    on_error_ = "skip" if on_error == "skip" else "abort"  # the server's words
    body = {"on_error": on_error_, "mode": mode}
    call = Call("POST", f"/v1/imports/{job_id}/commit", json=body, headers=idempotency_key())
    response = yield from request(policy, call)
    return msgspec.json.decode(response.content, type=Import)


def rollback(policy: Policy, job_id: str, *, confirm: bool) -> Op[Import]:
    """Undo a committed import (rolling back twice is harmless, so it is replayable)."""
    call = Call("POST", f"/v1/imports/{job_id}/rollback", json={"confirm": confirm})
    response = yield from request(policy, call)
    document = msgspec.json.decode(response.content, type=Import)
    return document


def as_import(job: Job) -> Import:
    """An ``Import`` with what a plain job document holds (the rest is fetched later)."""
    return msgspec.convert(msgspec.to_builtins(job), Import)
