"""The job, import and dataset resources as the routes return them: the Structs of
``services.api.schemas``, built from job rows and the documents workers store."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response
from litestar.response import Redirect, Stream
from litestar.response.base import ASGIResponse

from services.api import schemas
from services.api.auth import verifier
from services.core import jobs
from services.core.auth import Principal, TokenVerifier
from services.core.datasets import Dataset
from services.core.db.pool import Pool
from services.core.deps import Deps
from services.core.errors import FerryError, InvalidInput, NotFound
from services.core.exports.spec import CONTENT_TYPES
from services.core.imports import mapping as mappings
from services.core.jobs import Job, JobStatus
from services.core.storage import content_disposition


def _typed(value: Any, kind: Any) -> Any:
    """A stored document (JSON from a job row) as its Struct; None stays None."""
    return None if value is None else msgspec.convert(value, kind, strict=False)


def _job(job: Job, queue_position: int | None, events_token: str) -> schemas.Job:
    """The job resource (``jobs.job_resource``, what webhooks send too) as its Struct."""
    doc = jobs.job_resource(job, queue_position=queue_position, events_token=events_token)
    typed: schemas.Job = msgspec.convert(doc, schemas.Job, strict=False)
    return typed


async def job_view(db: Pool, tokens: TokenVerifier, principal: Principal, job: Job) -> schemas.Job:
    """A job with its queue position and links (the events link carries its own token)."""
    position = await jobs.queue_position(db, job)
    return _job(job, position, tokens.mint_events_token(principal, job.id))


def import_links(job: Job) -> dict[str, Any]:
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


# The parts of an import's result that its document shows at the top level, and their types.
IMPORT_PARTS: dict[str, Any] = {
    "mapping": dict[str, schemas.MappingEntry | None],
    "unmapped_required": list[str],
    "formats": dict[str, Any],
    "totals": schemas.Totals,
    "account": schemas.Account,
    "existing": int,
    "modes": schemas.Modes,
    "skipped": schemas.Skipped,
    "preview": list[schemas.PreviewRow],
    "errors": list[schemas.RowError],
    "batch": schemas.Batch,
}


async def import_view(
    request: Request[Any, Any, Any], deps: Deps, principal: Principal, job: Job
) -> schemas.ImportJob:
    """The job plus the import document."""
    tokens = verifier(request)
    position = await jobs.queue_position(deps.db, job)
    base = _job(job, position, tokens.mint_events_token(principal, job.id))
    fields = {f: getattr(base, f) for f in base.__struct_fields__ if f != "links"}
    result = mappings.in_file_order(job.result or {})
    links = {**msgspec.to_builtins(base.links), **import_links(job)}
    source = result.get("source") or {
        "filename": job.params.get("filename"),
        "bytes": job.params.get("bytes"),
    }
    return schemas.ImportJob(
        **fields,
        **{key: _typed(result.get(key), kind) for key, kind in IMPORT_PARTS.items()},
        account_id=job.params.get("account_id"),
        source=_typed(source, schemas.Source),
        links=schemas.ImportLinks(self_=links.pop("self"), import_=links.pop("import"), **links),
    )


def dataset_view(ds: Dataset, principal: Principal) -> schemas.Dataset:
    return schemas.Dataset(
        name=ds.name,
        label=ds.label,
        description=ds.description,
        permissions=schemas.Permissions(
            read=principal.can(f"{ds.name}.read"), write=principal.can(f"{ds.name}.write")
        ),
        fields=[
            schemas.DatasetField(
                name=f.name,
                label=f.label,
                type=f.type,
                required=f.required,
                computed=f.computed,
                importable=not f.computed,
                values=f.values or msgspec.UNSET,
                min=f.min if f.min is not None else msgspec.UNSET,
                default=f.default if f.default is not None else msgspec.UNSET,
                aliases=f.aliases,
                description=f.description,
            )
            for f in ds.fields
        ],
        presets=ds.presets,
        export_formats=list(CONTENT_TYPES),
        links=schemas.DatasetLinks(
            self_=f"/v1/datasets/{ds.name}", export=f"/v1/datasets/{ds.name}/export.csv"
        ),
    )


def named_dataset(deps: Deps, name: str) -> Dataset:
    """The dataset a request's query or body names; 422 naming ``dataset`` when none is
    called so (a dataset in the path is a resource: 404)."""
    try:
        return deps.registry.get(name)
    except NotFound:
        raise InvalidInput(
            f"no dataset named {name!r}",
            errors=[{"field": "dataset", "message": "unknown dataset"}],
        ) from None


class HeadResponse(Response[None]):
    """The answer to a HEAD: the headers GET would send, no body.

    A route's ``Response(None)`` is given the length of its rendered body (``null``,
    4 bytes) even for HEAD; this one sends only the ``Content-Length`` set in its
    headers, as GET does (none where GET streams a file of unknown length).
    """

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        return super().to_asgi_response(*args, **{**kwargs, "is_head_response": True})


async def stored_file(
    deps: Deps,
    key: str,
    *,
    filename: str,
    content_type: str,
    missing: FerryError,
    headers: dict[str, str] | None = None,
    head: bool = False,
) -> Response[Any]:
    """307 to a short-lived presigned URL (S3), or the file itself (local storage);
    ``missing`` when the file is gone. ``head``: the same answer without a body."""
    url = await deps.storage.presigned_url(
        key,
        expires_in=deps.settings.download_url_ttl,
        filename=filename,
        content_type=content_type,
    )
    if url is not None:
        if head:
            headers = {"Location": url, "Content-Length": "0", **NO_STORE}  # as Redirect's
            return HeadResponse(None, status_code=307, headers=headers)
        return Redirect(url, status_code=307, headers=NO_STORE)
    stored = await deps.storage.stat(key)
    if stored is None:
        raise missing
    media_type = content_type.partition(";")[0]  # Litestar adds the charset
    headers = {
        "Content-Disposition": content_disposition(filename),
        "Content-Length": str(stored.size),
        **(headers or {}),
    }
    if head:
        charset = "; charset=utf-8" if media_type.startswith("text/") else ""
        return HeadResponse(None, headers={"Content-Type": media_type + charset, **headers})
    return Stream(deps.storage.read(key), media_type=media_type, headers=headers)


NO_STORE = {"Cache-Control": "no-store"}
