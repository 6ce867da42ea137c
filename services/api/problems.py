"""Every error leaves the api as RFC 9457 ``application/problem+json``.

Each problem names the request (``request_id``, also in ``X-Request-ID``). A failure
of PostgreSQL or Redis being away is a 503 with ``Retry-After``, never a 500.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from services.core import logs
from services.core.db.pool import outage
from services.core.errors import FerryError, Unavailable

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:ferry:problem:"

HTTP_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    413: ("too-large", "Too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("invalid-input", "Invalid input"),
    410: ("gone", "Gone"),
    429: ("too-many-requests", "Too many requests"),
    503: ("unavailable", "Service unavailable"),
}


def problem(
    request: Request[Any, Any, Any],
    *,
    status: int,
    slug: str,
    title: str,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response[dict[str, Any]]:
    """An RFC 9457 problem; ``extra`` members never replace the problem's own."""
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    if (request_id := logs.request_id.get()) is not None:
        body["request_id"] = request_id
    if errors:
        body["errors"] = errors
    for key, value in (extra or {}).items():
        if key in body:
            log.warning("problem member clash", extra={"action": "problem_clash", "member": key})
            continue
        body[key] = value
    return Response(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def ferry_error(request: Request[Any, Any, Any], exc: FerryError) -> Response[dict[str, Any]]:
    if isinstance(exc, Unavailable):
        cause = exc.__cause__ or exc
        log.warning(
            "dependency unavailable",
            extra={"action": "outage", "path": request.url.path, "error": repr(cause)[:300]},
        )
    elif exc.status >= 500:
        log.error("request failed", exc_info=exc, extra={"path": request.url.path})
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    return problem(
        request,
        status=exc.status,
        slug=exc.slug,
        title=exc.title,
        detail=exc.detail,
        errors=exc.errors,
        headers=headers,
        extra=exc.extra,
    )


# msgspec names the member of a JSON object it refused: "Object missing required
# field `bytes`", "Object contains unknown field `dataset`".
_MEMBER = re.compile(r"field `([^`]+)`")
BODY_KWARG = "data"  # Litestar's name for a handler's body, which callers never see


def _field(entry: dict[str, Any]) -> dict[str, Any]:
    field = entry.get("key") or entry.get("source") or "body"
    message = entry["message"]
    if entry.get("source") == "body" and field == BODY_KWARG:
        # An error at the top of the body: name the member, or the body itself.
        if message == repr(BODY_KWARG):  # Litestar found no body at all
            field, message = "body", "a JSON body is required"
        else:
            member = _MEMBER.search(message)
            field = member.group(1) if member else "body"
    out = {"field": field, "message": message}
    if entry.get("source"):
        out["source"] = entry["source"]
    return out


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    slug, title = HTTP_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
    errors = None
    detail = exc.detail
    if isinstance(exc.__cause__, SerializationException):  # the body did not decode
        errors = [{"field": "body", "message": "not JSON"}]
        detail = f"the body is not JSON: {exc.detail}"
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        errors = [_field(e) for e in exc.extra if isinstance(e, dict) and "message" in e]
        if errors:
            names = ", ".join(e["field"] for e in errors)
            detail = f"invalid {names}: " + "; ".join(e["message"] for e in errors)
    return problem(
        request,
        status=exc.status_code,
        slug=slug,
        title=title,
        detail=detail,
        errors=errors,
        headers=exc.headers,
    )


def internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    if outage(exc):
        unavailable = Unavailable()
        unavailable.__cause__ = exc
        return ferry_error(request, unavailable)
    log.exception("unhandled error", exc_info=exc, extra={"path": request.url.path})
    return problem(
        request,
        status=HTTP_500_INTERNAL_SERVER_ERROR,
        slug="internal",
        title="Internal error",
        detail="something went wrong on our side; the request had no effect unless its "
        "response said otherwise",
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {
    FerryError: ferry_error,
    HTTPException: http_error,
    Exception: internal_error,
}
