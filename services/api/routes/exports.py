"""Exports: direct streaming downloads, background export jobs and their files."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from arq.connections import ArqRedis
from litestar import Request, Response, get, head, post
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIType
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.response import Stream

from services.api.auth import load_job, verifier
from services.api.openapi import (
    FILE_HEADERS,
    JOB_LINKS,
    LOCATION,
    NO_BODY,
    REDIRECT,
    binary,
    header,
    operation,
    problems,
    success,
)
from services.api.params import IdempotencyKey, LinkToken
from services.api.schemas import ExportRequest, Job
from services.api.views import HeadResponse, job_view, named_dataset, stored_file
from services.core import jobs
from services.core.auth import Principal
from services.core.datasets import Dataset
from services.core.deps import Deps
from services.core.errors import Conflict, Gone, NotFound, TooLarge
from services.core.exports.run import count_rows, snapshot, write_export
from services.core.exports.spec import CONTENT_TYPES, GZIP_TYPE, ExportSpec, build_spec
from services.core.jobs import JobStatus
from services.core.queue import submit
from services.core.storage import content_disposition, keys

log = logging.getLogger(__name__)

DIRECT_PARAMS = {"account_id", "columns", "preset", "gzip", "escape_formulas"}
# Bytes a direct download may run ahead of a slow client before COPY waits.
QUEUE_BLOCKS = 8

DIRECT_DESCRIPTION = """\
Streams the file at once: `export.csv` (PostgreSQL COPY), `export.json` (one array),
`export.ndjson`, `export.xlsx` or `export.parquet` (typed columns named by field:
dates `date32`, money `decimal128(12,2)`, ints `int64`). Headers are the field labels;
money is decimal currency; text cells starting with `= + - @`, tab or CR get a
leading `'` (`escape_formulas=false` turns that off).

Filters, besides `account_id`, follow the field types: `<date field>_from` / `_to`
(inclusive, `YYYY-MM-DD`), `<money or int field>_min` / `_max`, `<enum field>=a,b`,
`<text field>=exact` or `<text field>_contains=part`; e.g.
`sale_date_from=2026-01-01&status=shipped,paid&profit_min=10`.

Above `FERRY_DIRECT_EXPORT_MAX_ROWS` rows the answer is 413 before any byte is sent;
its `export_request` is the body to `POST /v1/exports` instead.
"""


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


FILE_TYPES = (*(t.partition(";")[0] for t in CONTENT_TYPES.values()), GZIP_TYPE)
DIRECT_HEADERS = {
    **FILE_HEADERS,
    "X-Ferry-Rows": header("Records in the file", kind=OpenAPIType.INTEGER),
}

AccountId = Annotated[str | None, QueryParameter(description="Only this account")]
Columns = Annotated[
    str | None, QueryParameter(description="Comma-separated field names (or `preset`)")
]
Preset = Annotated[
    str | None, QueryParameter(description="`essential`, `financial` or `all` (default)")
]
Gzip = Annotated[bool, QueryParameter(description="Send a `.gz` file")]
EscapeFormulas = Annotated[
    bool, QueryParameter(description="Neutralise formula-like text (default on)")
]


class DirectExport:
    """A direct export counted inside its snapshot (the probe), ready to stream.

    It holds a pooled connection from ``probe`` until ``body`` ends or ``close``."""

    def __init__(self, ds: Dataset, spec: ExportSpec) -> None:
        self.ds = ds
        self.spec = spec
        self.stack = contextlib.AsyncExitStack()
        self.rows = 0
        self.conn: Any = None

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Content-Disposition": content_disposition(self.spec.filename(at=datetime.now(UTC))),
            "Cache-Control": "no-store",
            "X-Ferry-Rows": str(self.rows),
        }

    @property
    def media_type(self) -> str:
        return self.spec.content_type.partition(";")[0]  # Litestar adds the charset

    async def open(self, deps: Deps, org: str) -> None:
        """Take a connection, open the snapshot and count the rows; 413 above the limit."""
        limit = deps.settings.direct_export_max_rows
        try:
            self.conn = await self.stack.enter_async_context(deps.db.acquire())
            await self.stack.enter_async_context(snapshot(self.conn))
            # Up to limit + 1 rows: enough to refuse, and the exact count of an allowed export.
            self.rows = await count_rows(self.conn, self.ds, self.spec, org, limit=limit + 1)
        except BaseException:
            await self.close()
            raise
        if self.rows > limit:
            await self.close()
            raise TooLarge(
                f"this export has more than {limit:,} rows, the direct-download limit; "
                "start a background export with POST /v1/exports",
                limit=limit,
                export_request=self.spec.request(),
                links={"exports": "/v1/exports"},
            )

    async def close(self) -> None:
        await self.stack.aclose()

    async def body(self, deps: Deps, org: str) -> AsyncIterator[bytes]:
        # The export runs in its own task and hands blocks over a short queue, so a
        # slow client slows COPY down instead of filling memory.
        blocks: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE_BLOCKS)

        async def produce() -> None:
            await write_export(
                self.conn,
                self.ds,
                self.spec,
                org,
                blocks.put,
                xlsx_engine=deps.settings.xlsx_engine,
                temp_dir=deps.settings.export_temp_dir or None,
            )
            await blocks.put(None)

        task = asyncio.create_task(produce())
        try:
            while True:
                getter = asyncio.ensure_future(blocks.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    await task  # it failed: raise its error (the response ends short)
                    continue
                block = getter.result()
                if block is None:
                    break
                yield block
            await task
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            try:
                await self.close()
            except Exception:
                # A client that left mid-COPY leaves the connection busy; the pool
                # resets or drops it, and the read-only snapshot had nothing to save.
                log.warning("direct export ended early", extra={"action": "export_aborted"})


async def probe(
    request: Request[Any, Any, Any],
    deps: Deps,
    principal: Principal,
    name: str,
    file: str,
    options: dict[str, Any],
) -> DirectExport:
    """A checked direct export whose rows are counted (it holds a connection)."""
    ds = deps.registry.get(name)
    stem, _, fmt = file.partition(".")
    if stem != "export" or not fmt:
        raise NotFound(
            f"no such export file {file!r}; use export.csv, .json, .ndjson, .xlsx or .parquet"
        )
    principal.require(f"{ds.name}.read")
    filters: dict[str, Any] = {
        k: v for k, v in request.query_params.items() if k not in DIRECT_PARAMS
    }
    if options["account_id"]:
        filters[ds.scope_column] = options["account_id"]
    spec = build_spec(
        ds,
        format=fmt,
        columns=_split(options["columns"]),
        preset=options["preset"],
        filters=filters,
        compression="gzip" if options["gzip"] else None,
        escape_formulas=options["escape_formulas"],
    )
    export = DirectExport(ds, spec)
    await export.open(deps, principal.org)
    return export


DIRECT: dict[str, Any] = {
    "path": "/v1/datasets/{name:str}/{file:str}",
    "tags": ["exports"],
    "responses": problems(400, 403, 404, 413, 422),
}


@get(
    **DIRECT,
    summary="Direct download: export.csv, .json, .ndjson, .xlsx or .parquet",
    description=DIRECT_DESCRIPTION,
    operation_id="directExport",
    operation_class=operation(content={200: binary(*FILE_TYPES)}, headers={200: DIRECT_HEADERS}),
)
async def direct_export(
    request: Request[Any, Any, Any],
    name: FromPath[str],
    file: FromPath[str],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
    account_id: AccountId = None,
    columns: Columns = None,
    preset: Preset = None,
    gzip: Gzip = False,
    escape_formulas: EscapeFormulas = True,
) -> Stream:
    options = {k: v for k, v in locals().items() if k in DIRECT_PARAMS}
    export = await probe(request, deps, principal, name, file, options)
    return Stream(
        export.body(deps, principal.org), media_type=export.media_type, headers=export.headers
    )


@head(
    **DIRECT,
    summary="The headers of a direct download, without running the export",
    operation_id="headDirectExport",
    operation_class=operation(content=NO_BODY, headers={200: DIRECT_HEADERS}),
)
async def head_direct_export(
    request: Request[Any, Any, Any],
    name: FromPath[str],
    file: FromPath[str],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
    account_id: AccountId = None,
    columns: Columns = None,
    preset: Preset = None,
    gzip: Gzip = False,
    escape_formulas: EscapeFormulas = True,
) -> Response[None]:
    """What `GET` would answer — its status, `Content-Type`, `Content-Disposition` and
    `X-Ferry-Rows`, or its 413 — from counting the rows, without exporting them. No
    `Content-Length`, as `GET` streams a file not yet written."""
    options = {k: v for k, v in locals().items() if k in DIRECT_PARAMS}
    export = await probe(request, deps, principal, name, file, options)
    await export.close()
    charset = "; charset=utf-8" if export.media_type.startswith("text/") else ""
    headers = {"Content-Type": export.media_type + charset, **export.headers}
    return HeadResponse(None, headers=headers)


@post(
    "/v1/exports",
    tags=["exports"],
    summary="Start a background export",
    status_code=202,
    operation_id="createExport",
    response_headers=[LOCATION],
    responses={
        200: success(Job, "An `Idempotency-Key` replay: the job the first request made"),
        **problems(400, 403, 422),
    },
    operation_class=operation(links={202: JOB_LINKS, 200: JOB_LINKS}),
)
async def create_export(
    request: Request[Any, Any, Any],
    data: JSONBody[ExportRequest],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
    queue: NamedDependency[ArqRedis],
    idempotency_key: IdempotencyKey,
) -> Response[Job]:
    """202 with the job (`queued`) and its `Location`; a worker writes the file.

    Follow it with `GET /v1/jobs/{id}` or the SSE stream in `links.events`; on success
    `links.download` gives the file. At most `FERRY_MAX_EXPORTS_PER_USER` of a
    caller's exports run at once; the others wait with their `queue_position`.
    """
    ds = named_dataset(deps, data.dataset)
    principal.require(f"{ds.name}.read")
    filters = dict(data.filters)
    if data.account_id:
        filters[ds.scope_column] = data.account_id
    spec = build_spec(
        ds,
        format=data.format,
        columns=data.columns,
        preset=data.preset,
        filters=filters,
        compression=data.compression,
        escape_formulas=data.escape_formulas,
    )
    job, created = await jobs.create_job(
        deps.db,
        kind="export",
        org_id=principal.org,
        user_id=principal.sub,
        dataset=ds.name,
        params=spec.to_params(),
        idempotency_key=idempotency_key,
        max_waiting=deps.settings.max_queued_jobs_per_user,
    )
    if job.status == JobStatus.QUEUED:
        # Also on a replay: a request that died between insert and enqueue recovers.
        await submit(queue, job)
    if created:
        await deps.events.announce(job, "status")  # the caller's feed shows new jobs
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    view = await job_view(deps.db, verifier(request), principal, job)
    return Response(view, status_code=202, headers=headers)


DOWNLOAD: dict[str, Any] = {
    "path": "/v1/exports/{job_id:str}/download",
    "tags": ["exports"],
    "responses": problems(403, 404, 409, 410),
}


async def _download(deps: Deps, principal: Principal, job_id: str, *, head: bool) -> Response[Any]:
    job = await load_job(deps.db, principal, job_id, kind="export")
    if job.status == JobStatus.EXPIRED:
        raise Gone("this export's file expired and was deleted; export again")
    if job.status != JobStatus.SUCCEEDED or not job.result:
        raise Conflict(f"the export is {job.status}; its file can be downloaded once it succeeded")
    spec = ExportSpec.from_params(job.dataset, job.params)
    filename = job.result["filename"]
    return await stored_file(
        deps,
        keys.export_file(job.org_id, job.id, filename),
        filename=filename,
        content_type=spec.content_type,
        missing=Gone("this export's file is gone; export again"),
        headers={"Cache-Control": "private, no-store"},
        head=head,
    )


@get(
    **DOWNLOAD,
    summary="Download a finished export",
    operation_id="downloadExport",
    operation_class=operation(
        content={200: binary(*FILE_TYPES)},
        headers={200: FILE_HEADERS},
        responses={307: REDIRECT},
    ),
)
async def download_export(
    job_id: FromPath[str],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
    token: LinkToken = None,
) -> Response[Any]:
    """307 to a short-lived presigned URL (S3), or the file itself (local storage).

    409 while the export has not succeeded; 410 once its file expired.
    """
    return await _download(deps, principal, job_id, head=False)


@head(
    **DOWNLOAD,
    summary="The headers of a finished export's download",
    operation_id="headDownloadExport",
    operation_class=operation(
        content=NO_BODY, headers={200: FILE_HEADERS}, responses={307: REDIRECT}
    ),
)
async def head_download_export(
    job_id: FromPath[str],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
) -> Response[None]:
    """What `GET` would answer, without the file: its type, name and `Content-Length`."""
    return await _download(deps, principal, job_id, head=True)


routes = [
    direct_export,
    head_direct_export,
    create_export,
    download_export,
    head_download_export,
]
