"""Imports: upload, see what Ferry understood, adjust the mapping, commit, undo.

The upload streams into storage as it arrives (``services.api.uploads``); everything
slow — reading, checking, committing — runs in a worker.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Annotated, Any

import msgspec
from arq.connections import ArqRedis
from litestar import Request, Response, get, head, post, put
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, RequestBody, Schema
from litestar.params import FromPath, JSONBody, QueryParameter

from services.api import uploads
from services.api.auth import load_job
from services.api.openapi import (
    BINARY,
    FILE_HEADERS,
    IMPORT_LINKS,
    LOCATION,
    NO_BODY,
    REDIRECT,
    binary,
    operation,
    problems,
    success,
)
from services.api.params import NUL, IdempotencyKey
from services.api.schemas import CommitRequest, ImportJob, RollbackRequest
from services.api.views import import_links, import_view, stored_file
from services.core import jobs
from services.core import uploads as upload_records
from services.core.auth import Action, Principal
from services.core.datasets import Dataset
from services.core.deps import Deps
from services.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from services.core.imports import commit as commits
from services.core.imports import mapping as mappings
from services.core.imports import pipeline, readers
from services.core.jobs import Job, JobStatus
from services.core.queue import submit
from services.core.storage import keys

log = logging.getLogger(__name__)

# A commit was asked for already: committing again answers with the import as it is.
COMMIT_REQUESTED = frozenset(
    {JobStatus.COMMITTING, JobStatus.COMMITTED, JobStatus.ROLLING_BACK, JobStatus.ROLLED_BACK}
)
ROLLBACK_REQUESTED = frozenset({JobStatus.ROLLING_BACK, JobStatus.ROLLED_BACK})


async def load_import(
    deps: Deps, principal: Principal, job_id: str, action: Action = "view"
) -> Job:
    """An import of the caller's org (404 otherwise) on which the caller may do ``action``."""
    return await load_job(deps.db, principal, job_id, kind="import", action=action)


def _response(body: ImportJob, status: int = 200, **headers: str) -> Response[ImportJob]:
    return Response(body, status_code=status, headers=headers or None)


# --- upload -------------------------------------------------------------------------------


def _writable(deps: Deps, principal: Principal, name: str | None) -> Dataset | None:
    """The dataset named, if any, once the caller may write to it (404, 403 otherwise)."""
    if not name:
        return None
    ds = deps.registry.get(name)
    principal.require(f"{ds.name}.write")
    return ds


def _require_some_write(deps: Deps, principal: Principal) -> None:
    if not any(principal.can(f"{ds.name}.write") for ds in deps.registry):
        wanted = " or ".join(f"'{ds.name}.write'" for ds in deps.registry)
        raise Forbidden(f"this token lacks the permission to import ({wanted})")


FORM_FIELDS = ("dataset", "account_id", "sheet")


def _printable(name: str) -> str:
    return "".join(c for c in name if c.isprintable()).strip()


def _import_params(
    deps: Deps, principal: Principal, form: dict[str, str], got: uploads.Received
) -> tuple[Dataset, dict[str, Any]]:
    """The dataset and job params of an upload, from its form (query parameters first)."""
    nul = [{"field": k, "message": NUL} for k in FORM_FIELDS if "\x00" in form.get(k, "")]
    if nul:
        raise InvalidInput("a form field holds a NUL character", errors=nul)
    ds = _writable(deps, principal, form.get("dataset"))
    account = (form.get("account_id") or "").strip()
    problems = []
    if ds is None:
        problems.append({"field": "dataset", "message": "required"})
    if not account:
        problems.append({"field": "account_id", "message": "required"})
    elif len(account) > 200:
        problems.append({"field": "account_id", "message": "longer than 200 characters"})
    if ds is None or problems:
        raise InvalidInput("missing " + ", ".join(p["field"] for p in problems), errors=problems)
    # A file's name is only shown; control characters (NUL among them) are dropped.
    name = _printable(form.get("filename") or got.filename or "") or f"upload.{got.kind}"
    return ds, {
        "account_id": account,
        "filename": name[:255],
        "sheet": form.get("sheet") or None,
        "kind": got.kind,
        "bytes": got.size,
        "sha256": got.sha256,
    }


class ImportFromUpload(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /v1/imports` with a JSON body: import a file put to a direct upload URL."""

    upload_id: Annotated[str, msgspec.Meta(description="The id POST /v1/uploads gave.")]
    dataset: Annotated[str, msgspec.Meta(description="Dataset to import into.")]
    account_id: Annotated[
        str, msgspec.Meta(min_length=1, max_length=200, description="Account of the records.")
    ]
    sheet: Annotated[
        str | None, msgspec.Meta(description="A workbook's sheet to read (default: best match).")
    ] = None
    filename: (
        Annotated[str, msgspec.Meta(max_length=255, description="Default: the upload's name.")]
        | None
    ) = None


def _decode(raw: bytes) -> ImportFromUpload:
    try:
        return msgspec.json.decode(raw, type=ImportFromUpload)
    except msgspec.ValidationError as exc:
        raise InvalidInput(
            f"invalid body: {exc}", errors=[{"field": "body", "message": str(exc)}]
        ) from None
    except msgspec.DecodeError as exc:
        raise InvalidInput(
            f"the body is not JSON: {exc}", errors=[{"field": "body", "message": "not JSON"}]
        ) from None


async def _replay(
    deps: Deps, principal: Principal, body: ImportFromUpload, key: str | None, upload: Any
) -> Job | None:
    """The import this same request made before (by its key, or by the upload), if any."""
    if key is not None:
        job = await jobs.job_by_key(deps.db, org_id=principal.org, user_id=principal.sub, key=key)
        if job is not None:
            if job.params.get("upload_id") != body.upload_id:
                raise jobs.key_reused()
            return job
    if upload.used_by is not None and upload.user_id == principal.sub:
        job = await jobs.get_job(deps.db, upload.used_by, principal.org)
        if (job.dataset, job.params.get("account_id")) == (body.dataset, body.account_id):
            return job
    return None


async def _from_upload(
    request: Request[Any, Any, Any], deps: Deps, principal: Principal, key: str | None
) -> tuple[Job, bool]:
    """The import of a finished direct upload (see ``services.core.uploads``)."""
    body = _decode(await request.body())
    ds = _writable(deps, principal, body.dataset)
    if ds is None:  # an empty name
        raise InvalidInput(
            "name the dataset to import into", errors=[{"field": "dataset", "message": "required"}]
        )
    upload = await upload_records.get_upload(deps.db, body.upload_id, principal.org)
    if (replay := await _replay(deps, principal, body, key, upload)) is not None:
        return replay, False
    await upload_records.check_upload(deps.storage, upload, user_id=principal.sub)
    kind = await _sniffed(deps, upload.key)
    job_id = uuid.uuid4()
    target = keys.import_source(principal.org, job_id)
    await upload_records.take_upload(deps.db, deps.storage, upload, job_id=job_id, target=target)
    params = {
        "account_id": body.account_id.strip(),
        "filename": (body.filename or upload.filename)[:255],
        "sheet": body.sheet or None,
        "kind": kind,
        "bytes": upload.bytes,
        "upload_id": str(upload.id),
    }
    try:
        return await jobs.create_job(
            deps.db,
            kind="import",
            org_id=principal.org,
            user_id=principal.sub,
            dataset=ds.name,
            params=params,
            idempotency_key=key,
            job_id=job_id,
            max_waiting=deps.settings.max_queued_jobs_per_user,
        )
    except BaseException:
        await upload_records.give_back(deps.db, deps.storage, upload, job_id=job_id, source=target)
        raise


async def _sniffed(deps: Deps, key: str) -> str:
    """The kind of a stored file by its first bytes (refused if it is no table)."""
    head = b""
    async for block in deps.storage.read(key, chunk_size=uploads.SNIFF_BYTES):
        head = block
        break
    return readers.sniff_kind(head)


TEXT = Schema(type=OpenAPIType.STRING)
UPLOAD = RequestBody(
    required=True,
    description="A form with the file, or the file itself (then `dataset` and `account_id` "
    "are query parameters)",
    content={
        "multipart/form-data": OpenAPIMediaType(
            schema=Schema(
                type=OpenAPIType.OBJECT,
                required=["file"],
                properties={
                    "file": BINARY,
                    "dataset": Schema(type=OpenAPIType.STRING, examples=["bookkeeping_records"]),
                    "account_id": Schema(type=OpenAPIType.STRING, examples=["main"]),
                    "sheet": Schema(type=OpenAPIType.STRING, description="XLSX: the sheet"),
                    "filename": Schema(type=OpenAPIType.STRING, description="Name to show"),
                },
            )
        ),
        "application/json": OpenAPIMediaType(
            schema=Schema(
                type=OpenAPIType.OBJECT,
                description="A file put to a direct upload URL (`POST /v1/uploads`)",
                required=["upload_id", "dataset", "account_id"],
                properties={
                    "upload_id": TEXT,
                    "dataset": TEXT,
                    "account_id": Schema(type=OpenAPIType.STRING, min_length=1, max_length=200),
                    "sheet": Schema(one_of=[TEXT, Schema(type=OpenAPIType.NULL)]),
                    "filename": Schema(one_of=[TEXT, Schema(type=OpenAPIType.NULL)]),
                },
            )
        ),
        **{
            media: OpenAPIMediaType(schema=BINARY)
            for media in ("text/csv", readers.XLSX_TYPE, "application/octet-stream")
        },
    },
)
IMPORT: dict[str, Any] = {
    "tags": ["imports"],
    "operation_class": operation(links={200: IMPORT_LINKS}),
}


@post(
    "/v1/imports",
    tags=["imports"],
    summary="Upload a CSV or XLSX file to import",
    status_code=202,
    request_max_body_size=None,  # the file's own limit is enforced while it streams
    operation_id="createImport",
    response_headers=[LOCATION],
    responses=problems(403, 404, 413, 415, 422),
    operation_class=operation(links={202: IMPORT_LINKS}, body=UPLOAD),
)
async def create_import(
    request: Request[Any, Any, Any],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
    queue: NamedDependency[ArqRedis],
    idempotency_key: IdempotencyKey,
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
        QueryParameter(
            description="A workbook's sheet to read (default: the one whose headers match "
            "the dataset best; `source.sheets` lists them all)."
        ),
    ] = None,
) -> Response[ImportJob]:
    """One of three bodies:

    - `multipart/form-data` with a `file` part and `dataset`, `account_id` (and
      optionally `sheet`) fields;
    - the file itself (`Content-Type: text/csv`, a spreadsheet type such as
      `application/vnd.openxmlformats-officedocument.spreadsheetml.sheet`, or
      `application/octet-stream`) with `dataset`, `account_id` and `filename` as query
      parameters;
    - `application/json` `{"upload_id", "dataset", "account_id", "sheet"?, "filename"?}`
      (`ImportFromUpload`): the file of a direct upload (`POST /v1/uploads`), finished.
      Refused: another org's upload (404), another user's (403), an expired one (410),
      one already taken by another import or not all there yet (409).

    CSV (any encoding, delimiter, line ends) and workbooks (.xlsx, .xls, .xlsb, .ods) are
    read; the sheet is the one whose headers match the dataset best unless `sheet` names
    one. The file streams into storage as it arrives; over the import limit the answer
    is 413 without reading the rest. Answers 202 with the import; validation starts by
    itself — follow `links.events` or poll `GET /v1/imports/{id}` until `validated`.
    """
    _writable(deps, principal, dataset)  # refused before a byte of the file is read
    _require_some_write(deps, principal)
    if request.headers.get("content-type", "").split(";")[0].strip() == "application/json":
        job, created = await _from_upload(request, deps, principal, idempotency_key)
        return await _accepted(request, deps, principal, queue, job, created)
    job_id = uuid.uuid4()
    key = keys.import_source(principal.org, job_id)
    got = await uploads.receive(
        request,
        deps.storage,
        key,
        limit=deps.settings.import_max_bytes,
        check=lambda name, value: _writable(deps, principal, value if name == "dataset" else None),
    )
    query = {"dataset": dataset, "account_id": account_id, "filename": filename, "sheet": sheet}
    form = {**got.fields, **{k: v for k, v in query.items() if v}}
    try:
        ds, params = _import_params(deps, principal, form, got)
        job, created = await jobs.create_job(
            deps.db,
            kind="import",
            org_id=principal.org,
            user_id=principal.sub,
            dataset=ds.name,
            params=params,
            idempotency_key=idempotency_key,
            job_id=job_id,
            max_waiting=deps.settings.max_queued_jobs_per_user,
        )
    except BaseException:
        with contextlib.suppress(Exception):
            await deps.storage.delete(key)
        raise
    if not created:
        await deps.storage.delete(key)  # a replay: the first upload is the import
    return await _accepted(request, deps, principal, queue, job, created)


async def _accepted(
    request: Request[Any, Any, Any],
    deps: Deps,
    principal: Principal,
    queue: ArqRedis,
    job: Job,
    created: bool,
) -> Response[ImportJob]:
    """202 with the import; a new one goes to the workers."""
    if created:
        await submit(queue, job)
        await deps.events.announce(job, "status")  # the caller's feed shows new jobs
        log.info(
            "import uploaded",
            extra={
                "action": "import_uploaded",
                "job_id": str(job.id),
                "bytes": job.params["bytes"],
            },
        )
    body = await import_view(request, deps, principal, job)
    return _response(body, 202, Location=f"/v1/imports/{job.id}")


# --- read, adjust -------------------------------------------------------------------------


@get(
    "/v1/imports/{job_id:str}",
    summary="What Ferry understood of an upload",
    operation_id="getImport",
    responses=problems(403, 404),
    **IMPORT,
)
async def get_import(
    request: Request[Any, Any, Any],
    job_id: FromPath[str],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
) -> ImportJob:
    """The import job plus detected encoding, delimiter, sheet and header row, the
    headers, the mapping (with confidence and reason per column), required fields left
    unmapped, inferred date orders and decimal marks, the first 100 records as mapped
    with per-field errors, skipped lines and why, totals, the first errors and
    `links.error_report`; after a commit, `batch` (id, rows, skipped, `rollback_until`).
    """
    job = await load_import(deps, principal, job_id)
    return await import_view(request, deps, principal, job)


@put(
    "/v1/imports/{job_id:str}/mapping",
    summary="Change the column mapping; validates again",
    status_code=202,
    operation_id="setImportMapping",
    responses=problems(400, 403, 404, 409, 422),
    tags=["imports"],
    operation_class=operation(links={202: IMPORT_LINKS}),
)
async def put_mapping(
    request: Request[Any, Any, Any],
    job_id: FromPath[str],
    data: JSONBody[dict[str, str | None]],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
    queue: NamedDependency[ArqRedis],
) -> ImportJob:
    """Body: `{"<source column>": "<field>" | null, …}` — the columns named change, the
    others keep their mapping. The import goes back to `validating`; the mapping is
    remembered for this org and set of headers.
    """
    job = await load_import(deps, principal, job_id, "map")
    if job.status != JobStatus.VALIDATED:
        raise Conflict(
            f"the mapping can be changed once the import is validated; it is {job.status}",
            job_status=job.status,
        )
    ds = deps.registry.get(job.dataset)
    result = job.result or {}
    headers: list[str] = result.get("source", {}).get("headers", [])
    new = mappings.check_choices(data, headers, ds)
    chosen = {**(job.params.get("mapping") or {}), **new}
    # What the caller sees now, with the columns named changed: remembered for next time.
    shown = mappings.apply_choices(mappings.from_document(result.get("mapping")), new, ds)
    async with deps.db.acquire() as conn, conn.transaction():
        changed = await jobs.revalidate_import(conn, job, chosen)
        if changed is None:
            raise Conflict("the import changed meanwhile; read it again")
        choices = mappings.mapping_choices(shown)
        await pipeline.remember_mapping(conn, job.org_id, job.dataset, headers, choices)
    job = changed
    await submit(queue, job)
    await deps.events.announce(job, "status")
    return await import_view(request, deps, principal, job)


REPORT: dict[str, Any] = {
    "path": "/v1/imports/{job_id:str}/errors.csv",
    "tags": ["imports"],
    "responses": problems(403, 404),
}


async def _error_report(
    deps: Deps, principal: Principal, job_id: str, *, head: bool
) -> Response[Any]:
    job = await load_import(deps, principal, job_id)
    if import_links(job)["error_report"] is None:
        raise NotFound("this import has no error report (no row failed, or it was deleted)")
    base = (job.params.get("filename") or "import").rsplit(".", 1)[0]
    return await stored_file(
        deps,
        keys.import_report(job.org_id, job.id),
        filename=f"{base}-errors.csv",
        content_type=pipeline.REPORT_TYPE,
        missing=NotFound("the error report of this import was deleted"),
        head=head,
    )


@get(
    **REPORT,
    summary="The failed rows, ready to fix and upload again",
    operation_id="getImportErrorReport",
    operation_class=operation(
        content={200: binary("text/csv")}, headers={200: FILE_HEADERS}, responses={307: REDIRECT}
    ),
)
async def get_error_report(
    job_id: FromPath[str],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
) -> Response[Any]:
    """The original failed rows with `_row` (the line as seen in the file) and `_errors`;
    307 to a short-lived URL on S3, the file itself on local storage.
    """
    return await _error_report(deps, principal, job_id, head=False)


@head(
    **REPORT,
    summary="The headers of an import's error report",
    operation_id="headImportErrorReport",
    operation_class=operation(
        content=NO_BODY, headers={200: FILE_HEADERS}, responses={307: REDIRECT}
    ),
)
async def head_error_report(
    job_id: FromPath[str],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
) -> Response[None]:
    """What `GET` would answer, without the file."""
    return await _error_report(deps, principal, job_id, head=True)


# --- commit, rollback ---------------------------------------------------------------------


@post(
    "/v1/imports/{job_id:str}/commit",
    tags=["imports"],
    summary="Commit a validated import",
    status_code=202,
    operation_id="commitImport",
    responses={
        200: success(ImportJob, "Committed already (or a replay): the import as it is"),
        **problems(400, 403, 404, 409, 422),
    },
    operation_class=operation(links={202: IMPORT_LINKS, 200: IMPORT_LINKS}),
)
async def commit_import(
    request: Request[Any, Any, Any],
    job_id: FromPath[str],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
    queue: NamedDependency[ArqRedis],
    idempotency_key: IdempotencyKey,
    data: JSONBody[CommitRequest | None] = None,
) -> Response[ImportJob]:
    """All-or-nothing: with any invalid row the answer is 409 with the counts and the
    error report. `{"on_error": "skip"}` commits the valid rows and records how many
    were skipped. `mode` says what a row whose natural key (`ebay_order_id`) names a live
    record of the account does: `insert` (an error), `upsert` (updates it) or
    `skip_existing` (left out); the import's `modes` shows what each would commit. The
    job goes `committing → committed` with `batch` set (`inserted`, `updated`,
    `skipped_existing`). Committing again (or replaying an `Idempotency-Key`) returns
    the same import and never inserts twice; the same key with another body is refused.
    """
    body = data or CommitRequest()
    job = await load_import(deps, principal, job_id, "commit")
    if job.status in COMMIT_REQUESTED:
        return _response(await _replayed(request, deps, principal, job, body, idempotency_key))
    _committable(job, body)
    result = job.result or {}
    accepted = mappings.document_choices(result.get("mapping"))
    requested = await jobs.request_commit(
        deps.db,
        job,
        on_error=body.on_error,
        commit_key=idempotency_key,
        accepted_mapping=accepted,
        mode=body.mode,
    )
    if requested is None:  # a concurrent commit (or cancel) won
        job = await load_import(deps, principal, job_id, "commit")
        if job.status in COMMIT_REQUESTED:
            return _response(await _replayed(request, deps, principal, job, body, idempotency_key))
        raise Conflict(f"the import is {job.status}; it cannot be committed", job_status=job.status)
    job = requested
    await submit(queue, job)
    await deps.events.announce(job, "status")
    return _response(await import_view(request, deps, principal, job), 202)


async def _replayed(
    request: Request[Any, Any, Any],
    deps: Deps,
    principal: Principal,
    job: Job,
    body: CommitRequest,
    key: str | None,
) -> ImportJob:
    same_key = key is not None and job.params.get("commit_key") == key
    sent = (job.params.get("on_error"), job.params.get("mode", "insert"))
    if same_key and sent != (body.on_error, body.mode):
        raise jobs.key_reused()
    return await import_view(request, deps, principal, job)


def _committable(job: Job, body: CommitRequest) -> None:
    if job.status in {JobStatus.UPLOADED, JobStatus.VALIDATING}:
        raise Conflict(
            f"the import is {job.status}, not validated yet; commit once it is validated",
            job_status=job.status,
        )
    if job.status != JobStatus.VALIDATED:
        raise Conflict(f"the import is {job.status}; it cannot be committed", job_status=job.status)
    commits.check_committable(
        job, on_error=body.on_error, mode=body.mode, report=import_links(job)["error_report"]
    )


@post(
    "/v1/imports/{job_id:str}/rollback",
    summary="Undo a committed import (runs as a job)",
    status_code=202,
    operation_id="rollbackImport",
    responses={
        200: success(ImportJob, "Rolled back already: the import as it is"),
        **problems(400, 403, 404, 409, 422),
    },
    tags=["imports"],
    operation_class=operation(links={202: IMPORT_LINKS, 200: IMPORT_LINKS}),
)
async def rollback_import(
    request: Request[Any, Any, Any],
    job_id: FromPath[str],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
    queue: NamedDependency[ArqRedis],
    data: JSONBody[RollbackRequest | None] = None,
) -> Response[ImportJob]:
    """Within the rollback window (24 h by default) undoes the batch: records it inserted
    are soft-deleted, records an upsert updated get every column back. If any was edited
    since the import, 409 lists them with `requires_confirmation`; `{"confirm": true}`
    rolls back anyway. After the window, 409. Otherwise 202 with the import, now
    `rolling_back`: a worker undoes the batch in one transaction, with `progress` —
    follow `links.events` until `rolled_back` (or `committed` again, with the `error`
    that stopped it). Asking again while it runs, or after, returns the import as it is.
    """
    body = data or RollbackRequest()
    job = await load_import(deps, principal, job_id, "rollback")
    if job.status in ROLLBACK_REQUESTED:
        view = await import_view(request, deps, principal, job)
        return _response(view, 202 if job.status == JobStatus.ROLLING_BACK else 200)
    if job.status != JobStatus.COMMITTED:
        raise Conflict(
            f"only a committed import can be rolled back; this one is {job.status}",
            job_status=job.status,
        )
    ds = deps.registry.get(job.dataset)
    # Refused here, before a job starts: the window closed, or edits without confirm. The
    # worker checks again under its locks.
    async with deps.db.acquire() as conn, conn.transaction(readonly=True):
        await commits.check_rollback(conn, ds, job, confirm=body.confirm)
    requested = await jobs.request_rollback(deps.db, job, confirm=body.confirm)
    if requested is None:  # a concurrent rollback won
        job = await load_import(deps, principal, job_id, "rollback")
        return _response(await import_view(request, deps, principal, job), 202)
    await submit(queue, requested)
    await deps.events.announce(requested, "status")
    log.info(
        "import rollback requested",
        extra={"action": "import_rollback_requested", "job_id": str(requested.id)},
    )
    return _response(await import_view(request, deps, principal, requested), 202)


routes = [
    create_import,
    get_import,
    put_mapping,
    get_error_report,
    head_error_report,
    commit_import,
    rollback_import,
]
