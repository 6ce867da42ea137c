"""Exports: direct streaming downloads, background export jobs and their files."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from arq.connections import ArqRedis
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.response import Stream

from services.api.auth import load_job, verifier
from services.api.params import IdempotencyKey
from services.api.views import job_view, stored_file
from services.core import jobs
from services.core.auth import Principal
from services.core.deps import Deps
from services.core.errors import Conflict, Gone, InvalidInput, NotFound, TooLarge
from services.core.exports.run import count_rows, snapshot, write_export
from services.core.exports.spec import ExportSpec, Format, build_spec
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


@get(
    "/v1/datasets/{name:str}/{file:str}",
    tags=["exports"],
    summary="Direct download: export.csv, .json, .ndjson, .xlsx or .parquet",
    description=DIRECT_DESCRIPTION,
)
async def direct_export(
    request: Request[Any, Any, Any],
    name: FromPath[str],
    file: FromPath[str],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
    account_id: Annotated[str | None, QueryParameter(description="Only this account")] = None,
    columns: Annotated[
        str | None, QueryParameter(description="Comma-separated field names (or `preset`)")
    ] = None,
    preset: Annotated[
        str | None, QueryParameter(description="`essential`, `financial` or `all` (default)")
    ] = None,
    gzip: Annotated[bool, QueryParameter(description="Send a `.gz` file")] = False,
    escape_formulas: Annotated[
        bool, QueryParameter(description="Neutralise formula-like text (default on)")
    ] = True,
) -> Stream:
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
    if account_id:
        filters[ds.scope_column] = account_id
    spec = build_spec(
        ds,
        format=fmt,
        columns=_split(columns),
        preset=preset,
        filters=filters,
        compression="gzip" if gzip else None,
        escape_formulas=escape_formulas,
    )
    limit = deps.settings.direct_export_max_rows
    stack = contextlib.AsyncExitStack()
    conn = await stack.enter_async_context(deps.db.acquire())
    try:
        await stack.enter_async_context(snapshot(conn))
        # Up to limit + 1 rows: enough to refuse, and the exact count of an allowed export.
        rows = await count_rows(conn, ds, spec, principal.org, limit=limit + 1)
    except BaseException:
        await stack.aclose()
        raise
    if rows > limit:
        await stack.aclose()
        raise TooLarge(
            f"this export has more than {limit:,} rows, the direct-download limit; "
            "start a background export with POST /v1/exports",
            limit=limit,
            export_request=spec.request(),
            links={"exports": "/v1/exports"},
        )

    async def body() -> AsyncIterator[bytes]:
        # The export runs in its own task and hands blocks over a short queue, so a
        # slow client slows COPY down instead of filling memory.
        blocks: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE_BLOCKS)

        async def produce() -> None:
            await write_export(
                conn,
                ds,
                spec,
                principal.org,
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
                await stack.aclose()
            except Exception:
                # A client that left mid-COPY leaves the connection busy; the pool
                # resets or drops it, and the read-only snapshot had nothing to save.
                log.warning("direct export ended early", extra={"action": "export_aborted"})

    filename = spec.filename(at=datetime.now(UTC))
    return Stream(
        body(),
        media_type=spec.content_type.partition(";")[0],  # Litestar adds the charset
        headers={
            "Content-Disposition": content_disposition(filename),
            "Cache-Control": "no-store",
            "X-Ferry-Rows": str(rows),
        },
    )


class ExportRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/exports`: what to export; `filters` as for direct downloads."""

    dataset: str
    format: Annotated[
        Format,
        msgspec.Meta(description="csv, json (one array), ndjson, xlsx or parquet (typed columns)"),
    ]
    columns: list[str] | None = None
    preset: str | None = None
    filters: dict[str, Any] = {}
    account_id: str | None = None
    compression: Literal["gzip"] | None = None
    escape_formulas: bool = True


@post(
    "/v1/exports",
    tags=["exports"],
    summary="Start a background export",
    status_code=202,
)
async def create_export(
    request: Request[Any, Any, Any],
    data: JSONBody[ExportRequest],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
    queue: NamedDependency[ArqRedis],
    idempotency_key: IdempotencyKey,
) -> Response[dict[str, Any]]:
    """202 with the job (`queued`) and its `Location`; a worker writes the file.

    Follow it with `GET /v1/jobs/{id}` or the SSE stream in `links.events`; on success
    `links.download` gives the file. At most `FERRY_MAX_EXPORTS_PER_USER` of a
    caller's exports run at once; the others wait with their `queue_position`.
    """
    try:
        ds = deps.registry.get(data.dataset)
    except NotFound:
        raise InvalidInput(
            f"no dataset named {data.dataset!r}",
            errors=[{"field": "dataset", "message": "unknown dataset"}],
        ) from None
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


@get(
    "/v1/exports/{job_id:str}/download",
    tags=["exports"],
    summary="Download a finished export",
    status_code=200,
)
async def download_export(
    job_id: FromPath[str],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
) -> Response[Any]:
    """307 to a short-lived presigned URL (S3), or the file itself (local storage).

    409 while the export has not succeeded; 410 once its file expired.
    """
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
        headers={"Content-Length": str(job.result["bytes"]), "Cache-Control": "private, no-store"},
    )


routes = [direct_export, create_export, download_export]
