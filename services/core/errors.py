"""Ferry's exceptions, mapped once to RFC 9457 problems by ``services.api.problems``.

    FerryError                  500  something went wrong on our side
    ├── SettingsError                a FERRY_* variable is missing, unknown or malformed
    ├── InvalidInput            422  a request or a file is wrong; ``errors`` names the fields
    ├── Unauthorized            401  no, a malformed, a forged or an expired token
    ├── Forbidden               403  the token lacks a permission
    ├── NotFound                404  no such thing (or it belongs to another org)
    ├── Conflict                409  the request clashes with the current state
    ├── Gone                    410  it existed, but no longer (an expired export file)
    ├── TooLarge                413  over a configured size or row limit
    ├── UnsupportedMediaType    415  a body of a kind this route does not take
    ├── TooManyRequests         429  over a rate limit (``retry_after`` says when to come back)
    │   └── QueueFull           429  too many of the caller's jobs wait to start
    └── Unavailable             503  a dependency (database, Redis, storage) failed
        └── DatabaseUnavailable      PostgreSQL cannot be reached (and a Transient)

``retry_after`` (seconds) travels to the client as ``Retry-After``.

In the worker, ``Transient`` marks failures worth a retry with backoff; everything
else fails the job with its message.
"""

from __future__ import annotations

from typing import Any, ClassVar


class FerryError(Exception):
    """Something went wrong on our side."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal error"
    retry_after: int | None = None

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: list[dict[str, Any]] | None = None,
        retry_after: int | None = None,
        **extra: Any,
    ) -> None:
        self.detail = detail or (self.__doc__ or self.title).strip()
        self.errors = errors
        self.extra = extra
        if retry_after is not None:
            self.retry_after = retry_after
        super().__init__(self.detail)


class SettingsError(FerryError):
    """The configuration is not valid."""

    slug = "settings"
    title = "Invalid settings"


class InvalidInput(FerryError):
    """The request is not valid."""

    status = 422
    slug = "invalid-input"
    title = "Invalid input"


class Unauthorized(FerryError):
    """A valid bearer token is required."""

    status = 401
    slug = "unauthorized"
    title = "Unauthorized"


class Forbidden(FerryError):
    """The token does not grant this permission."""

    status = 403
    slug = "forbidden"
    title = "Forbidden"


class NotFound(FerryError):
    """No such resource."""

    status = 404
    slug = "not-found"
    title = "Not found"


class Conflict(FerryError):
    """The request conflicts with the current state of the resource."""

    status = 409
    slug = "conflict"
    title = "Conflict"


class Gone(FerryError):
    """The resource existed but is gone for good."""

    status = 410
    slug = "gone"
    title = "Gone"


class TooLarge(FerryError):
    """The request is over a configured limit."""

    status = 413
    slug = "too-large"
    title = "Too large"


class UnsupportedMediaType(FerryError):
    """This route does not take a body of this media type."""

    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class TooManyRequests(FerryError):
    """Too many requests; slow down."""

    status = 429
    slug = "too-many-requests"
    title = "Too many requests"
    retry_after = 1


class QueueFull(TooManyRequests):
    """Too many of your jobs are waiting to start; wait for some to finish or cancel some."""

    slug = "too-many-queued-jobs"
    title = "Too many queued jobs"
    retry_after = 10


class Unavailable(FerryError):
    """A dependency is unavailable; try again shortly."""

    status = 503
    slug = "unavailable"
    title = "Service unavailable"
    retry_after = 5


class Transient(FerryError):
    """A temporary failure (storage, database connection); the job is retried."""

    slug = "transient"
    title = "Temporary failure"


class DatabaseUnavailable(Unavailable, Transient):
    """The database cannot be reached; try again shortly."""
