"""Who is calling (the ``Principal`` dependency from ``Authorization: Bearer``), and
which jobs they may see or change."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.concurrency import sync_to_thread

from services.core import jobs
from services.core.auth import Principal, TokenVerifier
from services.core.db.pool import Pool
from services.core.errors import Forbidden, NotFound, Unauthorized
from services.core.jobs import Job, Kind


def verifier(request: Request[Any, Any, Any]) -> TokenVerifier:
    value = request.app.state.verifier
    assert isinstance(value, TokenVerifier)
    return value


def bearer_token(request: Request[Any, Any, Any]) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send Authorization: Bearer <token>")
    return token.strip()


async def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    """The caller of this request; 401 for a missing, malformed, forged or expired token.

    A GET without ``Authorization`` may carry a link token (``?token=`` from
    ``POST /v1/links``) made for exactly its path: how a browser follows a download.
    """
    tokens = verifier(request)
    link = request.query_params.get("token")
    if link and request.method == "GET" and "authorization" not in request.headers:
        return tokens.verify_link_token(link, request.url.path)
    token = bearer_token(request)
    if tokens.settings.jwt_jwks_url:  # may fetch the key set over the network
        return await sync_to_thread(tokens.verify, token)
    return tokens.verify(token)


def authorize_job(principal: Principal, job: Job, *, write: bool = False) -> None:
    """Seeing a job needs its dataset's read or write permission; changing it, write."""
    if write:
        principal.require(f"{job.dataset}.write")
    elif not (principal.can(f"{job.dataset}.read") or principal.can(f"{job.dataset}.write")):
        raise Forbidden(f"this token lacks the permission '{job.dataset}.read'")


async def load_job(
    db: Pool, principal: Principal, job_id: str, *, kind: Kind | None = None, write: bool = False
) -> Job:
    """A job of the caller's org (of ``kind``, if given; 404 otherwise) that they may
    see, or with ``write`` change (403 otherwise)."""
    job = await jobs.get_job(db, job_id, principal.org)
    if kind is not None and job.kind != kind:
        raise NotFound(f"no such {kind}")
    authorize_job(principal, job, write=write)
    return job
