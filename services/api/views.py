"""The job resource as every job route returns it (see DESIGN.md, Resource shapes)."""

from __future__ import annotations

from typing import Any

from services.core import jobs
from services.core.auth import Principal, TokenVerifier
from services.core.db.pool import Pool
from services.core.jobs import Job


async def job_view(
    db: Pool, tokens: TokenVerifier, principal: Principal, job: Job
) -> dict[str, Any]:
    """A job with its queue position and links (the events link carries its own token)."""
    doc = jobs.job_document(job)
    doc["queue_position"] = await jobs.queue_position(db, job)
    doc["cancel_requested"] = job.cancel_requested_at is not None
    events_token = tokens.mint_events_token(principal, job.id)
    doc["links"] = {
        "self": f"/v1/jobs/{job.id}",
        "events": f"/v1/jobs/{job.id}/events?token={events_token}",
        "download": (
            f"/v1/exports/{job.id}/download"
            if job.kind == "export" and job.status == jobs.JobStatus.SUCCEEDED
            else None
        ),
    }
    return doc
