"""Imports: upload, see what Ferry understood, adjust the mapping, get the failed rows.

The upload streams into storage as it arrives (``services.api.uploads``), checked by
``services.api.intake``; everything slow — reading, checking, committing — runs in a
worker. Commit and rollback are ``services.api.routes.commits``.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Annotated, Any

from arq.connections import ArqRedis
from litestar import Request, Response, get, head, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from services.api import intake, uploads
from services.api.auth import load_job
from services.api.openapi import (
    FILE_HEADERS,
    IMPORT_LINKS,
    LOCATION,
    NO_BODY,
    REDIRECT,
    binary,
    operation,
    problems,
)
from services.api.params import IdempotencyKey, LinkToken
from services.api.schemas import ImportJob, SheetRequest
from services.api.views import import_links, import_view, stored_file
from services.core import jobs
from services.core.auth import Action, Principal
from services.core.deps import Deps
from services.core.errors import Conflict, InvalidInput, NotFound
from services.core.imports import mapping as mappings
from services.core.imports import staging
from services.core.jobs import Job, JobStatus
from services.core.queue import submit
from services.core.storage import keys

log = logging.getLogger(__name__)


async def load_import(
    deps: Deps, principal: Principal, job_id: str, action: Action = "view"
) -> Job:
    """An import of the caller's org (404 otherwise) on which the caller may do ``action``."""
    return await load_job(deps.db, principal, job_id, kind="import", action=action)


def respond(body: ImportJob, status: int = 200, **headers: str) -> Response[ImportJob]:
    """The import with a status other than 200 (or headers)."""
    return Response(body, status_code=status, headers=headers or None)


# --- upload -------------------------------------------------------------------------------

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
    operation_class=operation(links={202: IMPORT_LINKS}, body=intake.UPLOAD),
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
    intake.writable(deps, principal, dataset)  # refused before a byte of the file is read
    intake.require_some_write(deps, principal)
    if request.headers.get("content-type", "").split(";")[0].strip() == "application/json":
        job, created = await intake.from_upload(request, deps, principal, idempotency_key)
        return await _accepted(request, deps, principal, queue, job, created)
    job_id = uuid.uuid4()
    key = keys.import_source(principal.org, job_id)
    got = await uploads.receive(
        request,
        deps.storage,
        key,
        limit=deps.settings.import_max_bytes,
        check=lambda name, value: intake.writable(
            deps, principal, value if name == "dataset" else None
        ),
    )
    query = {"dataset": dataset, "account_id": account_id, "filename": filename, "sheet": sheet}
    form = {**got.fields, **{k: v for k, v in query.items() if v}}
    try:
        ds, params = intake.import_params(deps, principal, form, got)
        job, created = await intake.create_import_job(
            deps, principal, ds, params, idempotency_key, job_id
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
    return respond(body, 202, Location=f"/v1/imports/{job.id}")


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
        await mappings.remember(conn, job.org_id, job.dataset, headers, choices)
    job = changed
    await submit(queue, job)
    await deps.events.announce(job, "status")
    return await import_view(request, deps, principal, job)


@put(
    "/v1/imports/{job_id:str}/sheet",
    summary="Read another sheet of the workbook; validates again",
    status_code=202,
    operation_id="setImportSheet",
    responses=problems(400, 403, 404, 409, 422),
    tags=["imports"],
    operation_class=operation(links={202: IMPORT_LINKS}),
)
async def put_sheet(
    request: Request[Any, Any, Any],
    job_id: FromPath[str],
    data: JSONBody[SheetRequest],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
    queue: NamedDependency[ArqRedis],
) -> ImportJob:
    """Body: `{"sheet": "<name>"}`, one of `source.sheets` with records. The stored
    upload is read again with that sheet — no need to upload the file again: the import
    goes back to `validating` (follow `links.events`) and the mapping chosen for the
    other sheet's columns is dropped. 409 unless the import is `validated`; 422 (field
    `sheet`) for a CSV file, a sheet the workbook does not have, or one without records.
    """
    job = await load_import(deps, principal, job_id, "map")
    if job.status != JobStatus.VALIDATED:
        raise Conflict(
            f"the sheet can be changed once the import is validated; it is {job.status}",
            job_status=job.status,
        )
    _check_sheet((job.result or {}).get("source") or {}, data.sheet)
    changed = await jobs.choose_sheet(deps.db, job, data.sheet)
    if changed is None:
        raise Conflict("the import changed meanwhile; read it again")
    await submit(queue, changed)
    await deps.events.announce(changed, "status")
    return await import_view(request, deps, principal, changed)


def _check_sheet(source: dict[str, Any], name: str) -> None:
    """422 naming ``sheet`` unless ``name`` is a sheet of the workbook with records."""
    sheets = {s["name"]: s for s in source.get("sheets") or []}
    if not sheets:
        message, problem = "this is a CSV file; it has no sheets", "not a workbook"
    elif name not in sheets:
        message = f"the workbook has no sheet {name!r}; its sheets are " + ", ".join(
            repr(n) for n in sheets
        )
        problem = f"no sheet {name!r}"
    elif sheets[name].get("score") is None:
        message, problem = sheets[name].get("reason") or "this sheet cannot be read", "refused"
    elif not sheets[name].get("rows"):
        message, problem = f"the sheet {name!r} has no records", "no records"
    else:
        return
    raise InvalidInput(message, errors=[{"field": "sheet", "message": problem}])


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
        content_type=staging.REPORT_TYPE,
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
    token: LinkToken = None,
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


routes = [
    create_import,
    get_import,
    put_mapping,
    put_sheet,
    get_error_report,
    head_error_report,
]
