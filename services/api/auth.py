"""Who is calling (the ``Principal`` dependency from ``Authorization: Bearer``), whether
they are within their rate limits, and which jobs they may see or change."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.concurrency import sync_to_thread

from services.api.admission import admit
from services.core import jobs
from services.core.auth import Action, Principal, TokenVerifier, authorize
from services.core.db.pool import Pool
from services.core.errors import NotFound, Unauthorized
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
    """The caller of this request; 401 for a missing, malformed, forged or expired token,
    429 over their rate limits (every request with a token counts).

    A GET without ``Authorization`` may carry a link token (``?token=`` from
    ``POST /v1/links``) made for exactly its path: how a browser follows a download.
    """
    tokens = verifier(request)
    link = request.query_params.get("token")
    if link and request.method == "GET" and "authorization" not in request.headers:
        principal = tokens.verify_link_token(link, request.url.path)
    elif tokens.settings.jwt_jwks_url:  # may fetch the key set over the network
        principal = await sync_to_thread(tokens.verify, bearer_token(request))
    else:
        principal = tokens.verify(bearer_token(request))
    await admit(request, principal)
    return principal


async def load_job(
    db: Pool,
    principal: Principal,
    job_id: str,
    *,
    kind: Kind | None = None,
    action: Action = "view",
) -> Job:
    """A job of the caller's org (of ``kind``, if given; 404 otherwise) on which they may
    do ``action`` (403 otherwise; the rule is ``core.auth.authorize``)."""
    job = await jobs.get_job(db, job_id, principal.org)
    if kind is not None and job.kind != kind:
        raise NotFound(f"no such {kind}")
    authorize(principal, job, action)
    return job
