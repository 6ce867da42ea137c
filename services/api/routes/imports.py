"""Imports: upload, see what Ferry understood, adjust the mapping, commit, undo.

The upload streams from the request into object storage as it arrives (multipart
parsed incrementally, or a raw body), so the api never holds the file in memory or
on its disk; a body over the limit is refused with 413 without reading the rest.
Everything slow — reading, checking, committing — runs in a worker.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import msgspec
from arq.connections import ArqRedis
from litestar import Request, Response, get, post, put
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter
from litestar.response import Redirect, Stream
from multipart import MultipartError, MultipartSegment, PushMultipartParser, parse_options_header

from services.api.auth import verifier
from services.api.views import job_view
from services.core import jobs
from services.core.auth import Principal
from services.core.datasets import Dataset
from services.core.deps import Deps
from services.core.errors import Conflict, Forbidden, InvalidInput, NotFound, TooLarge
from services.core.imports import commit as commits
from services.core.imports import mapping as mappings
from services.core.imports import pipeline, readers
from services.core.jobs import Job, JobStatus
from services.core.queue import enqueue
from services.core.storage import Upload, content_disposition, keys

log = logging.getLogger(__name__)

# Bytes of a multipart body that are not the file: boundaries, part headers, small fields.
MULTIPART_SLACK = 64 * 1024
MAX_FIELD_BYTES = 4096
SNIFF_BYTES = 8192
RAW_TYPES = {
    "text/csv": "csv",
    "application/csv": "csv",
    "text/plain": "csv",
    "text/tab-separated-values": "csv",
    "application/vnd.ms-excel": "csv",  # what browsers on Windows call a .csv file
    "application/octet-stream": "csv",
    readers.XLSX_TYPE: "xlsx",
}
DOCUMENT_KEYS = (
    "source",
    "mapping",
    "unmapped_required",
    "formats",
    "totals",
    "skipped",
    "preview",
    "errors",
    "batch",
)

CREATE_IMPORT_DOC = """\
Either `multipart/form-data` with a `file` part and `dataset`, `account_id` (and
optionally `sheet`) fields, or the file itself as the body (`Content-Type: text/csv`
or `application/vnd.openxmlformats-officedocument.spreadsheetml.sheet`) with
`dataset`, `account_id` and `filename` as query parameters.

The file streams into storage as it arrives; over the import limit the answer is
413 without reading the rest. Answers 202 with the import; validation starts by
itself — follow `links.events` or poll `GET /v1/imports/{id}` until `validated`.
"""

GET_IMPORT_DOC = """\
The import job plus detected encoding, delimiter, sheet and header row, the
headers, the mapping (with confidence and reason per column), required fields left
unmapped, inferred date orders and decimal marks, the first 100 records as mapped
with per-field errors, skipped lines and why, totals, the first errors and
`links.error_report`; after a commit, `batch` (id, rows, skipped, `rollback_until`).
"""

PUT_MAPPING_DOC = """\
Body: `{"<source column>": "<field>" | null, …}` — the columns named change, the
others keep their mapping. The import goes back to `validating`; the mapping is
remembered for this org and set of headers.
"""

GET_ERROR_REPORT_DOC = """\
The original failed rows with `_row` (the line as seen in the file) and `_errors`;
307 to a short-lived URL on S3, the file itself on local storage.
"""

COMMIT_IMPORT_DOC = """\
All-or-nothing: with any invalid row the answer is 409 with the counts and the
error report. `{"on_error": "skip"}` commits the valid rows and records how many
were skipped. The job goes `committing → committed` with `batch` set. Committing
again (or replaying an `Idempotency-Key`) returns the same import and never inserts
twice; the same key with another body is refused.
"""

ROLLBACK_IMPORT_DOC = """\
Within the rollback window (24 h by default) soft-deletes the batch's records.
If any was edited since the import, 409 lists them with `requires_confirmation`;
`{"confirm": true}` rolls back anyway. After the window, 409. Rolling back twice is
harmless.
"""

IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        required=False,
        description="Repeat a request safely: the same key and body give the same answer.",
    ),
]


# A commit was asked for already: committing again answers with the import as it is.
COMMIT_REQUESTED = frozenset({JobStatus.COMMITTING, JobStatus.COMMITTED, JobStatus.ROLLED_BACK})


class CommitBody(msgspec.Struct, forbid_unknown_fields=True):
    on_error: Literal["abort", "skip"] = "abort"


class RollbackBody(msgspec.Struct, forbid_unknown_fields=True):
    confirm: bool = False


# --- views --------------------------------------------------------------------------------


def links(job: Job) -> dict[str, Any]:
    result = job.result or {}
    base = f"/v1/imports/{job.id}"
    report = result.get("error_report") and not result.get("files_deleted_at")
    report = report and job.status != JobStatus.VALIDATING  # the old one is being replaced
    return {
        "import": base,
        "error_report": f"{base}/errors.csv" if report else None,
        "mapping": f"{base}/mapping",
        "commit": f"{base}/commit",
        "rollback": f"{base}/rollback",
    }


async def import_view(
    request: Request[Any, Any, Any], deps: Deps, principal: Principal, job: Job
) -> dict[str, Any]:
    """The job plus the import document (DESIGN.md, Resource shapes)."""
    doc = await job_view(deps.db, verifier(request), principal, job)
    result = job.result or {}
    for key in DOCUMENT_KEYS:
        doc[key] = result.get(key)
    if doc["source"] is None:
        doc["source"] = {
            "filename": job.params.get("filename"),
            "bytes": job.params.get("bytes"),
        }
    # The document's parts are at the top; the result keeps the summary.
    doc["result"] = (
        {"totals": result.get("totals"), "batch": result.get("batch")} if result else None
    )
    doc["account_id"] = job.params.get("account_id")
    doc["links"] = {**doc.get("links", {}), **links(job)}
    return doc


async def load_import(deps: Deps, principal: Principal, job_id: str, *, write: bool) -> Job:
    """An import of the caller's org (404 otherwise) that the caller may see or change."""
    job = await jobs.get_job(deps.db, job_id, principal.org)
    if job.kind != "import":
        raise NotFound("no such import")
    if write:
        principal.require(f"{job.dataset}.write")
    elif not (principal.can(f"{job.dataset}.read") or principal.can(f"{job.dataset}.write")):
        raise Forbidden(f"this token lacks the permission '{job.dataset}.read'")
    return job


def _response(body: dict[str, Any], status: int = 200, **headers: str) -> Response[dict[str, Any]]:
    return Response(body, status_code=status, headers=headers or None)


# --- upload -------------------------------------------------------------------------------


class _Sink:
    """Counts, bounds and sniffs the bytes of the file on their way into storage."""

    def __init__(self, upload: Upload, limit: int) -> None:
        self.upload = upload
        self.limit = limit
        self.size = 0
        self.head = bytearray()
        self.kind: str | None = None

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise TooLarge(
                f"the file is larger than {self.limit:,} bytes (the import limit)",
                limit=self.limit,
            )
        if self.kind is None:
            self.head += data
            if len(self.head) >= SNIFF_BYTES:
                await self._sniffed()
            return
        await self.upload.write(data)

    async def _sniffed(self) -> None:
        self.kind = readers.sniff_kind(bytes(self.head))
        await self.upload.write(bytes(self.head))
        self.head = bytearray()

    async def close(self) -> None:
        if self.kind is None:
            await self._sniffed()


class _Received:
    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.sink: _Sink | None = None
        self.filename: str | None = None
        self.content_type: str | None = None


def _form_field(fields: dict[str, str], name: str, data: bytes) -> None:
    value = fields.get(name, "") + data.decode("utf-8", "replace")
    if len(value) > MAX_FIELD_BYTES:
        raise InvalidInput(
            f"the form field {name!r} is too long",
            errors=[{"field": name, "message": "too long"}],
        )
    fields[name] = value


async def _receive_multipart(
    request: Request[Any, Any, Any],
    stack: contextlib.AsyncExitStack,
    deps: Deps,
    key: str,
    limit: int,
    boundary: str,
    check_dataset: Any,
) -> _Received:
    got = _Received()
    current: MultipartSegment | None = None
    try:
        parser = PushMultipartParser(boundary, max_segment_count=16)
        async for chunk in request.stream():
            for event in parser.parse(chunk):
                if isinstance(event, MultipartSegment):
                    current = event
                    if event.name == "file":
                        if got.sink is not None:
                            raise InvalidInput(
                                "send one file per import",
                                errors=[{"field": "file", "message": "more than one file"}],
                            )
                        upload = await stack.enter_async_context(deps.storage.writer(key))
                        got.sink = _Sink(upload, limit)
                        got.filename = event.filename
                        got.content_type = event.content_type
                elif event:
                    assert current is not None
                    if current.name == "file":
                        assert got.sink is not None
                        await got.sink.write(event)
                    elif current.name:
                        _form_field(got.fields, current.name, event)
                else:
                    if current is not None and current.name == "dataset":
                        check_dataset(got.fields.get("dataset"))
                    current = None
        parser.close()
    except MultipartError as exc:
        raise InvalidInput(
            f"the multipart body is malformed: {exc}",
            errors=[{"field": "body", "message": str(exc)}],
        ) from None
    if got.sink is None:
        raise InvalidInput(
            "the form has no file part named 'file'",
            errors=[{"field": "file", "message": "required"}],
        )
    await got.sink.close()
    return got


async def _receive_raw(
    request: Request[Any, Any, Any],
    stack: contextlib.AsyncExitStack,
    deps: Deps,
    key: str,
    limit: int,
) -> _Received:
    got = _Received()
    upload = await stack.enter_async_context(deps.storage.writer(key))
    got.sink = _Sink(upload, limit)
    async for chunk in request.stream():
        await got.sink.write(chunk)
    await got.sink.close()
    return got


@post(
    "/v1/imports",
    tags=["imports"],
    summary="Upload a CSV or XLSX file to import",
    status_code=202,
    request_max_body_size=None,  # the file's own limit is enforced while it streams
    description=CREATE_IMPORT_DOC,
)
async def create_import(
    request: Request[Any, Any, Any],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
    queue: NamedDependency[ArqRedis],
    dataset: Annotated[
        str | None, QueryParameter(description="Dataset to import into (or a form field).")
    ] = None,
    account_id: Annotated[
        str | None, QueryParameter(description="Account the records belong to (or a form field).")
    ] = None,
    filename: Annotated[
        str | None, QueryParameter(description="Name of the file (raw uploads).")
    ] = None,
    sheet: Annotated[
        str | None,
        QueryParameter(description="XLSX: the sheet to read (default: the first non-empty one)."),
    ] = None,
    idempotency_key: IdempotencyKey = None,
) -> Response[dict[str, Any]]:
    """See ``CREATE_IMPORT_DOC`` (the OpenAPI description)."""
    settings = deps.settings
    limit = settings.import_max_bytes
    chosen: dict[str, Dataset] = {}

    def check_dataset(name: str | None) -> None:
        if not name:
            return
        ds = deps.registry.get(name)
        principal.require(f"{ds.name}.write")
        chosen["ds"] = ds

    check_dataset(dataset)
    writable = [ds.name for ds in deps.registry if principal.can(f"{ds.name}.write")]
    if not writable:
        wanted = " or ".join(f"'{ds.name}.write'" for ds in deps.registry)
        raise Forbidden(f"this token lacks the permission to import ({wanted})")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit + MULTIPART_SLACK:
        raise TooLarge(f"the file is larger than {limit:,} bytes (the import limit)", limit=limit)
    media, options = parse_options_header(request.headers.get("content-type", ""))
    if media != "multipart/form-data" and media not in RAW_TYPES:
        raise HTTPException(
            status_code=415,
            detail="send multipart/form-data with a 'file' part, or the file itself as "
            "text/csv or " + readers.XLSX_TYPE,
        )
    job_id = uuid.uuid4()
    key = keys.import_source(principal.org, job_id)
    stored = False
    try:
        async with contextlib.AsyncExitStack() as stack:
            if media == "multipart/form-data":
                boundary = options.get("boundary")
                if not boundary:
                    raise InvalidInput(
                        "the multipart Content-Type has no boundary",
                        errors=[{"field": "Content-Type", "message": "no boundary"}],
                    )
                got = await _receive_multipart(
                    request, stack, deps, key, limit, boundary, check_dataset
                )
            else:
                got = await _receive_raw(request, stack, deps, key, limit)
        stored = True
        fields = got.fields
        check_dataset(dataset or fields.get("dataset"))
        ds = chosen.get("ds")
        account = (account_id or fields.get("account_id") or "").strip()
        problems = []
        if ds is None:
            problems.append({"field": "dataset", "message": "required"})
        if not account:
            problems.append({"field": "account_id", "message": "required"})
        elif len(account) > 200:
            problems.append({"field": "account_id", "message": "longer than 200 characters"})
        if problems:
            raise InvalidInput(
                "missing " + ", ".join(p["field"] for p in problems), errors=problems
            )
        assert ds is not None
        assert got.sink is not None
        assert got.sink.upload.result is not None
        name = filename or fields.get("filename") or got.filename or f"upload.{got.sink.kind}"
        params: dict[str, Any] = {
            "account_id": account,
            "filename": name[:255],
            "sheet": sheet or fields.get("sheet") or None,
            "kind": got.sink.kind,
            "bytes": got.sink.size,
            "sha256": got.sink.upload.result.sha256,
        }
        job, created = await jobs.create_job(
            deps.db,
            kind="import",
            org_id=principal.org,
            user_id=principal.sub,
            dataset=ds.name,
            params=params,
            idempotency_key=idempotency_key,
            job_id=job_id,
        )
    except BaseException:
        if stored:
            with contextlib.suppress(Exception):
                await deps.storage.delete(key)
        raise
    if created:
        await enqueue(queue, job)
        log.info(
            "import uploaded",
            extra={"action": "import_uploaded", "job_id": str(job.id), "bytes": params["bytes"]},
        )
    else:
        await deps.storage.delete(key)  # a replay: the first upload is the import
    body = await import_view(request, deps, principal, job)
    return _response(body, 202, Location=f"/v1/imports/{job.id}")


# --- read, adjust -------------------------------------------------------------------------


@get(
    "/v1/imports/{job_id:str}",
    tags=["imports"],
    summary="What Ferry understood of an upload",
    description=GET_IMPORT_DOC,
)
async def get_import(
    request: Request[Any, Any, Any],
    job_id: FromPath[str],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
) -> dict[str, Any]:
    """The import document (see ``GET_IMPORT_DOC``)."""
    job = await load_import(deps, principal, job_id, write=False)
    return await import_view(request, deps, principal, job)


@put(
    "/v1/imports/{job_id:str}/mapping",
    tags=["imports"],
    summary="Change the column mapping; validates again",
    status_code=202,
    description=PUT_MAPPING_DOC,
)
async def put_mapping(
    request: Request[Any, Any, Any],
    job_id: FromPath[str],
    data: JSONBody[dict[str, str | None]],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
    queue: NamedDependency[ArqRedis],
) -> dict[str, Any]:
    """See ``PUT_MAPPING_DOC`` (the OpenAPI description)."""
    job = await load_import(deps, principal, job_id, write=True)
    if job.status != JobStatus.VALIDATED:
        raise Conflict(
            f"the mapping can be changed once the import is validated; it is {job.status}",
            status=job.status,
        )
    ds = deps.registry.get(job.dataset)
    result = job.result or {}
    headers: list[str] = result.get("source", {}).get("headers", [])
    new = mappings.check_choices(data, headers, ds)
    chosen = {**(job.params.get("mapping") or {}), **new}
    current = mappings.document_choices(result.get("mapping"))
    for header, name in new.items():
        if name is not None:
            current = {h: (None if f == name else f) for h, f in current.items()}
        current[header] = name
    async with deps.db.acquire() as conn, conn.transaction():
        changed = await jobs.revalidate_import(conn, job, chosen)
        if changed is None:
            raise Conflict("the import changed meanwhile; read it again")
        await pipeline.remember_mapping(conn, job.org_id, job.dataset, headers, current)
    job = changed
    await enqueue(queue, job)
    await deps.events.announce(job, "status")
    return await import_view(request, deps, principal, job)


@get(
    "/v1/imports/{job_id:str}/errors.csv",
    tags=["imports"],
    summary="The failed rows, ready to fix and upload again",
    description=GET_ERROR_REPORT_DOC,
)
async def get_error_report(
    job_id: FromPath[str],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
) -> Redirect | Stream:
    """See ``GET_ERROR_REPORT_DOC`` (the OpenAPI description)."""
    job = await load_import(deps, principal, job_id, write=False)
    if links(job)["error_report"] is None:
        raise NotFound("this import has no error report (no row failed, or it was deleted)")
    key = keys.import_report(job.org_id, job.id)
    base = (job.params.get("filename") or "import").rsplit(".", 1)[0]
    name = f"{base}-errors.csv"
    url = await deps.storage.presigned_url(
        key,
        expires_in=deps.settings.download_url_ttl,
        filename=name,
        content_type=pipeline.REPORT_TYPE,
    )
    if url is not None:
        return Redirect(url, status_code=307)
    if await deps.storage.stat(key) is None:
        raise NotFound("the error report of this import was deleted")

    async def body() -> AsyncIterator[bytes]:
        async for chunk in deps.storage.read(key):
            yield chunk

    return Stream(
        body(),
        media_type="text/csv",  # Litestar adds the charset
        headers={"Content-Disposition": content_disposition(name)},
    )


# --- commit, rollback ---------------------------------------------------------------------


@post(
    "/v1/imports/{job_id:str}/commit",
    tags=["imports"],
    summary="Commit a validated import",
    status_code=202,
    description=COMMIT_IMPORT_DOC,
)
async def commit_import(
    request: Request[Any, Any, Any],
    job_id: FromPath[str],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
    queue: NamedDependency[ArqRedis],
    data: JSONBody[CommitBody | None] = None,
    idempotency_key: IdempotencyKey = None,
) -> Response[dict[str, Any]]:
    """See ``COMMIT_IMPORT_DOC`` (the OpenAPI description)."""
    body = data or CommitBody()
    job = await load_import(deps, principal, job_id, write=True)
    if job.status in COMMIT_REQUESTED:
        return _response(await _replayed(request, deps, principal, job, body, idempotency_key))
    _committable(job, body)
    result = job.result or {}
    accepted = mappings.document_choices(result.get("mapping"))
    requested = await jobs.request_commit(
        deps.db, job, on_error=body.on_error, commit_key=idempotency_key, accepted_mapping=accepted
    )
    if requested is None:  # a concurrent commit (or cancel) won
        job = await load_import(deps, principal, job_id, write=True)
        if job.status in COMMIT_REQUESTED:
            return _response(await _replayed(request, deps, principal, job, body, idempotency_key))
        raise Conflict(f"the import is {job.status}; it cannot be committed", status=job.status)
    job = requested
    await enqueue(queue, job)
    await deps.events.announce(job, "status")
    return _response(await import_view(request, deps, principal, job), 202)


async def _replayed(
    request: Request[Any, Any, Any],
    deps: Deps,
    principal: Principal,
    job: Job,
    body: CommitBody,
    key: str | None,
) -> dict[str, Any]:
    if (
        key is not None
        and job.params.get("commit_key") == key
        and (job.params.get("on_error") != body.on_error)
    ):
        raise InvalidInput(
            "this Idempotency-Key was used with a different request",
            errors=[{"field": "Idempotency-Key", "message": "reused with a different body"}],
        )
    return await import_view(request, deps, principal, job)


def _committable(job: Job, body: CommitBody) -> None:
    if job.status in {JobStatus.UPLOADED, JobStatus.VALIDATING}:
        raise Conflict(
            "the import is still being validated; commit once it is validated",
            status=job.status,
        )
    if job.status != JobStatus.VALIDATED:
        raise Conflict(f"the import is {job.status}; it cannot be committed", status=job.status)
    commits.check_committable(job, on_error=body.on_error, report=links(job)["error_report"])


@post(
    "/v1/imports/{job_id:str}/rollback",
    tags=["imports"],
    summary="Undo a committed import",
    status_code=200,
    description=ROLLBACK_IMPORT_DOC,
)
async def rollback_import(
    request: Request[Any, Any, Any],
    job_id: FromPath[str],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
    data: JSONBody[RollbackBody | None] = None,
) -> dict[str, Any]:
    """See ``ROLLBACK_IMPORT_DOC`` (the OpenAPI description)."""
    body = data or RollbackBody()
    job = await load_import(deps, principal, job_id, write=True)
    if job.status == JobStatus.ROLLED_BACK:
        return await import_view(request, deps, principal, job)
    if job.status != JobStatus.COMMITTED:
        raise Conflict(
            f"only a committed import can be rolled back; this one is {job.status}",
            status=job.status,
        )
    ds = deps.registry.get(job.dataset)
    async with deps.db.acquire() as conn, conn.transaction():
        batch, rows, already = await commits.rollback(conn, ds, job, confirm=body.confirm)
        rolled_back = await jobs.mark_rolled_back(conn, job, commits.batch_document(batch), rows)
    if rolled_back is not None:
        job = rolled_back
        await deps.events.announce(job, job.status)
        log.info(
            "import rolled back",
            extra={"action": "import_rolled_back", "job_id": str(job.id), "rows": rows},
        )
    elif not already:
        job = await load_import(deps, principal, job_id, write=True)
    return await import_view(request, deps, principal, job)


routes = [
    create_import,
    get_import,
    put_mapping,
    get_error_report,
    commit_import,
    rollback_import,
]
