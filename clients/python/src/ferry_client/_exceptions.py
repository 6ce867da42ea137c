"""Everything the client raises, one tree; ``FerryError`` catches it all.

    FerryError                    anything this package raises
    ├── ApiError                  the server answered with an RFC 9457 problem document
    │   ├── Invalid          400, 415, 422  the request or the file is wrong; ``errors``
    │   │                                  names each field (``FieldError``)
    │   ├── Unauthorized          401  no, a malformed or an expired token
    │   ├── Forbidden             403  the token lacks a permission
    │   ├── NotFound              404  no such thing (or it belongs to another org)
    │   ├── Conflict              409  it clashes with the current state (an import with
    │   │                              invalid rows, a rollback that needs confirming, …)
    │   ├── Gone                  410  it existed, but no longer (an expired export)
    │   ├── TooLarge              413  over a size or row limit of the server
    │   ├── RateLimited           429  too many requests, still after the retries
    │   └── ServerError           5xx  the server failed
    │       └── Unavailable       503  a dependency of the server is down, still after
    │                                  the retries
    ├── ConnectionFailed               the server could not be reached, after the retries
    ├── JobFailed                      a job ended ``failed``; ``job`` holds its error
    │   └── JobCancelled               … or ``cancelled``
    ├── WaitTimeout                    ``wait(timeout=…)`` ran out before the job ended
    ├── ChecksumMismatch               a download's sha256 is not the one the job reported
    └── InvalidSignature               a webhook's ``Ferry-Signature`` does not verify

Requests are retried before anything is raised: connection errors, 429 and 503
(honouring ``Retry-After``), each logical call keeping its ``Idempotency-Key``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

if TYPE_CHECKING:
    from ferry_client.models import Job


class FieldError(msgspec.Struct, kw_only=True):
    """One field of a problem's ``errors``: what is wrong, and where."""

    field: str
    message: str
    source: str | None = None


class FerryError(Exception):
    """Base of every error of this package."""


class ApiError(FerryError):
    """The server refused the request; ``problem`` is its RFC 9457 document."""

    status_codes: ClassVar[tuple[int, ...]] = ()

    def __init__(self, status: int, problem: dict[str, Any], retry_after: float | None = None):
        self.status = status
        self.problem = problem
        self.type: str = str(problem.get("type") or "about:blank")
        self.title: str = str(problem.get("title") or f"HTTP {status}")
        self.detail: str = str(problem.get("detail") or self.title)
        self.retry_after = retry_after
        raw = problem.get("errors")
        self.errors: list[FieldError] = (
            msgspec.convert(raw, list[FieldError], strict=False) if isinstance(raw, list) else []
        )
        super().__init__(f"{status} {self.title}: {self.detail}")


class Invalid(ApiError):
    """The request or the file is not valid; ``errors`` names the fields."""

    status_codes = (400, 415, 422)


class Unauthorized(ApiError):
    status_codes = (401,)


class Forbidden(ApiError):
    status_codes = (403,)


class NotFound(ApiError):
    status_codes = (404,)


class Conflict(ApiError):
    status_codes = (409,)


class Gone(ApiError):
    status_codes = (410,)


class TooLarge(ApiError):
    status_codes = (413,)


class RateLimited(ApiError):
    status_codes = (429,)


class ServerError(ApiError):
    status_codes: ClassVar[tuple[int, ...]] = (500, 501, 502, 504)


class Unavailable(ServerError):
    status_codes = (503,)


class ConnectionFailed(FerryError):
    """The server could not be reached (refused, reset, timed out), even after retrying."""


class JobFailed(FerryError):
    """A job ended ``failed``; ``job`` is the job as it ended."""

    def __init__(self, job: Job) -> None:
        self.job = job
        message = (job.error or {}).get("message") or f"the job is {job.status}"
        super().__init__(f"{job.kind} {job.id} {job.status}: {message}")


class JobCancelled(JobFailed):
    """A job ended ``cancelled``."""


class WaitTimeout(FerryError):
    """The job did not reach the awaited state in time (it carries on on the server)."""


class ChecksumMismatch(FerryError):
    """The downloaded file's sha256 differs from the job's; the partial file was removed."""


class InvalidSignature(FerryError):
    """A webhook's ``Ferry-Signature`` is missing, malformed, stale or does not match."""


_BY_STATUS: dict[int, type[ApiError]] = {
    code: cls
    for cls in ApiError.__subclasses__() + ServerError.__subclasses__()
    for code in cls.status_codes
}


def api_error(status: int, problem: dict[str, Any], retry_after: float | None = None) -> ApiError:
    """The exception for an error answer: by status, else by its class (4xx or 5xx)."""
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return cls(status, problem, retry_after)
