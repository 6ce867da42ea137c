"""The job and import resources as the routes return them (DESIGN.md, Resource shapes)."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.response import Redirect, Stream

from services.api.auth import verifier
from services.core import jobs
from services.core.auth import Principal, TokenVerifier
from services.core.db.pool import Pool
from services.core.deps import Deps
from services.core.errors import FerryError
from services.core.imports import mapping as mappings
from services.core.jobs import Job, JobStatus
from services.core.storage import content_disposition

# The parts of an import's result that its document shows at the top level.
IMPORT_PARTS = (
    "source",
    "account",
    "mapping",
    "unmapped_required",
    "formats",
    "totals",
    "existing",
    "modes",
    "skipped",
    "preview",
    "errors",
    "batch",
)


async def job_view(
    db: Pool, tokens: TokenVerifier, principal: Principal, job: Job
) -> dict[str, Any]:
    """A job with its queue position and links (the events link carries its own token)."""
    position = await jobs.queue_position(db, job)
    events_token = tokens.mint_events_token(principal, job.id)
    return jobs.job_resource(job, queue_position=position, events_token=events_token)


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


async def import_view(
    request: Request[Any, Any, Any], deps: Deps, principal: Principal, job: Job
) -> dict[str, Any]:
    """The job plus the import document."""
    doc = await job_view(deps.db, verifier(request), principal, job)
    result = mappings.in_file_order(job.result or {})
    for key in IMPORT_PARTS:
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
    doc["links"] = {**doc.get("links", {}), **import_links(job)}
    return doc


async def stored_file(
    deps: Deps,
    key: str,
    *,
    filename: str,
    content_type: str,
    missing: FerryError,
    headers: dict[str, str] | None = None,
) -> Redirect | Stream:
    """307 to a short-lived presigned URL (S3), or the file itself (local storage);
    ``missing`` when the file is gone."""
    url = await deps.storage.presigned_url(
        key,
        expires_in=deps.settings.download_url_ttl,
        filename=filename,
        content_type=content_type,
    )
    if url is not None:
        return Redirect(url, status_code=307, headers={"Cache-Control": "no-store"})
    if await deps.storage.stat(key) is None:
        raise missing
    return Stream(
        deps.storage.read(key),
        media_type=content_type.partition(";")[0],  # Litestar adds the charset
        headers={"Content-Disposition": content_disposition(filename), **(headers or {})},
    )
