"""What routes tell the OpenAPI document beyond their signatures, declared in one place.

Litestar builds each operation from a route's parameters and return type (the Structs
of ``services.api.schemas``). A route adds:

- ``responses=problems(404, 409, …)``: its problem responses, as
  ``application/problem+json`` with the ``Problem`` schema (401, 429 and 503 come
  with every authenticated route); Litestar's own ``application/json`` 400 is replaced.
- ``operation_class=operation(...)``: what a signature cannot say — file and event
  stream bodies with their real media types, the 307 to storage, a request body the
  route reads itself (uploads), response headers and links to the next operations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from litestar.datastructures import ResponseHeader
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Example,
    Link,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)

from services.api.problems import HTTP_SLUGS, TYPE_PREFIX
from services.api.problems import MEDIA_TYPE as PROBLEM_TYPE
from services.api.schemas import Problem

# Every route behind a bearer token can answer these.
AUTHENTICATED = (401, 429, 503)

# status: (when it is answered, an example detail)
_PROBLEMS: dict[int, tuple[str, str]] = {
    400: (
        "A parameter, header or body is malformed",
        "invalid limit: Expected `int`, got `str`",
    ),
    401: (
        "The bearer token is missing, malformed, forged or expired",
        "the token has expired",
    ),
    403: (
        "The token lacks a permission this needs",
        "this token lacks the permission 'bookkeeping_records.write'",
    ),
    404: ("No such resource in the caller's org", "no such job"),
    409: (
        "The request clashes with the resource's current state",
        "the export is running; its file can be downloaded once it succeeded",
    ),
    410: (
        "It existed but is gone (an expired file)",
        "this export's file expired and was deleted; export again",
    ),
    413: (
        "Over a configured size or row limit",
        "the file is larger than 52,428,800 bytes (the import limit)",
    ),
    415: (
        "A body of a media type this route does not take",
        "send multipart/form-data with a 'file' part, or the file itself as text/csv",
    ),
    422: ("A value is invalid; `errors` names the fields", "missing account_id"),
    429: ("Too many requests; wait `Retry-After` seconds", "too many requests; try again in 2 s"),
    503: (
        "A dependency is unavailable; retry after `Retry-After` seconds",
        "the database is unavailable; try again shortly",
    ),
}


def problems(*statuses: int, auth: bool = True) -> dict[int, ResponseSpec]:
    """The problem responses of a route: ``statuses`` (plus 401/429/503 with ``auth``)."""
    codes = sorted(set(statuses) | (set(AUTHENTICATED) if auth else set()))
    return {code: _problem(code) for code in codes}


def _problem(status: int) -> ResponseSpec:
    description, detail = _PROBLEMS[status]
    slug, title = HTTP_SLUGS[status]
    example: dict[str, Any] = {
        "type": TYPE_PREFIX + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": "/v1/…",
    }
    if status == 422:
        example["errors"] = [{"field": "account_id", "message": "required"}]
    return ResponseSpec(
        data_container=Problem,
        description=description,
        media_type=PROBLEM_TYPE,
        generate_examples=False,
        examples=[Example(summary=slug, value=example)],
    )


def success(data: Any, description: str) -> ResponseSpec:
    """A second success status of a route (e.g. 200 beside its 202)."""
    return ResponseSpec(data_container=data, description=description, generate_examples=False)


BINARY = Schema(type=OpenAPIType.STRING, format="binary")  # type: ignore[arg-type]
# One server-sent event, as a client parses it; `: heartbeat` comments keep it open.
EVENT_STREAM = {
    "text/event-stream": Schema(
        type=OpenAPIType.OBJECT,
        description="Server-sent events; each `data` is one line of JSON: the job (`status` "
        "and terminal events) or its progress",
        properties={
            "id": Schema(type=OpenAPIType.STRING, description="Resume after it: `Last-Event-ID`"),
            "event": Schema(
                type=OpenAPIType.STRING,
                examples=["status", "progress", "succeeded", "failed", "validated"],
            ),
            "data": Schema(type=OpenAPIType.STRING, content_media_type="application/json"),
            "retry": Schema(type=OpenAPIType.INTEGER, description="Reconnect after (ms)"),
        },
    )
}
REDIRECT = OpenAPIResponse(
    description="To a short-lived presigned URL of the file (S3 storage)",
    headers={"Location": OpenAPIHeader(schema=Schema(type=OpenAPIType.STRING), required=True)},
)


def header(description: str, *, kind: OpenAPIType = OpenAPIType.STRING) -> OpenAPIHeader:
    return OpenAPIHeader(schema=Schema(type=kind), description=description)


NO_BODY: dict[int, dict[str, Schema]] = {200: {}}  # a HEAD's answer
RETRY_AFTER = header("Seconds to wait before trying again", kind=OpenAPIType.INTEGER)
FILE_HEADERS = {
    "Content-Disposition": header("`attachment` with the file's name (RFC 6266 `filename*`)"),
}


# A JSON export is one array of records (objects keyed by field label).
JSON_ROWS = Schema(
    type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.OBJECT, additional_properties=True)
)


def binary(*media_types: str) -> dict[str, Schema]:
    """A file body in any of ``media_types`` (a JSON file as the array it is)."""
    return {t: JSON_ROWS if t == "application/json" else BINARY for t in media_types}


def link(operation_id: str, description: str, **parameters: str) -> Link:
    """A link to ``operation_id``; parameters are runtime expressions, by default the
    job's id from the response body."""
    return Link(
        operation_id=operation_id,
        parameters=parameters or {"job_id": "$response.body#/id"},
        description=description,
    )


def operation(
    *,
    content: Mapping[int, Mapping[str, Schema]] | None = None,
    responses: Mapping[int, OpenAPIResponse] | None = None,
    headers: Mapping[int, Mapping[str, OpenAPIHeader]] | None = None,
    links: Mapping[int, Mapping[str, Link]] | None = None,
    body: RequestBody | None = None,
) -> type[Operation]:
    """An ``operation_class`` that adds what a route's signature cannot declare:
    ``content`` replaces the body of a response (files, event streams; ``{}`` for none,
    as a HEAD has), ``responses``
    adds whole responses (a redirect), ``headers`` and ``links`` go on a response,
    ``body`` is the request body."""

    @dataclass
    class Documented(Operation):
        def __post_init__(self) -> None:
            out = self.responses if self.responses is not None else {}
            default_400 = out.get("400")
            if isinstance(default_400, OpenAPIResponse) and PROBLEM_TYPE not in (
                default_400.content or {}
            ):
                del out["400"]  # Litestar's own; a route that can answer 400 declares it
            for status, response in (responses or {}).items():
                out[str(status)] = response
            for status, media in (content or {}).items():
                _response(out, status).content = {
                    media_type: OpenAPIMediaType(schema=schema)
                    for media_type, schema in media.items()
                } or None
            for status, named in (headers or {}).items():
                found = _response(out, status)
                found.headers = {**(found.headers or {}), **named}
            for status, targets in (links or {}).items():
                _response(out, status).links = dict(targets)
            for status in (429, 503):
                if str(status) in out:
                    _response(out, status).headers = {"Retry-After": RETRY_AFTER}
            self.responses = out
            if body is not None:
                self.request_body = body

    return Documented


def _response(responses: dict[str, Any], status: int) -> OpenAPIResponse:
    found = responses[str(status)]
    assert isinstance(found, OpenAPIResponse)
    return found


LOCATION = ResponseHeader(name="Location", description="The new job's URL", documentation_only=True)

# Where a job document leads: schemathesis follows these with real ids, and so can a client.
JOB_LINKS = {
    "getJob": link("getJob", "The job, as it goes on"),
    "streamJobEvents": link("streamJobEvents", "Its progress, as server-sent events"),
    "cancelJob": link("cancelJob", "Cancel it"),
    "downloadExport": link("downloadExport", "An export's file, once it succeeded"),
}
IMPORT_LINKS = {
    "getImport": link("getImport", "What Ferry understood of the file"),
    "setImportMapping": link("setImportMapping", "Change the mapping; validates again"),
    "commitImport": link("commitImport", "Commit it once validated"),
    "rollbackImport": link("rollbackImport", "Undo a commit"),
    "getImportErrorReport": link("getImportErrorReport", "The failed rows"),
    **{name: value for name, value in JOB_LINKS.items() if name != "downloadExport"},
}
