"""Short-lived download links, for browsers.

A browser following a link cannot send ``Authorization``, and ``fetch`` cannot follow
a download to another origin (a presigned S3 URL) without CORS on the bucket. So a
client asks here for the file's path with a one-minute token, made for that path
and for GET only, and lets the browser follow it: the file streams to disk, never
through the page's memory.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from litestar import Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from services.api.auth import verifier
from services.api.openapi import operation, problems
from services.api.schemas import Link, LinkRequest
from services.core.auth import Principal
from services.core.errors import InvalidInput

_ID = r"[0-9a-fA-F-]{36}"
LINKABLE = re.compile(rf"^/v1/(exports/{_ID}/download|imports/{_ID}/errors\.csv)$")


@post(
    "/v1/links",
    tags=["jobs"],
    summary="A one-minute link to a file, for a browser",
    operation_id="createLink",
    responses=problems(400, 422),
    operation_class=operation(),
)
async def create_link(
    request: Request[Any, Any, Any],
    data: JSONBody[LinkRequest],
    principal: NamedDependency[Principal],
) -> Link:
    """`{"href": "/v1/exports/{id}/download"}` (or an import's `errors.csv`) → the same
    path with a `token` query parameter that lets a GET of that path through as the
    caller for one minute. Navigate to it (`<a href download>`) to save the file."""
    path = data.href.partition("?")[0]
    if not LINKABLE.match(path):
        raise InvalidInput(
            "only an export's download or an import's error report can be linked",
            errors=[{"field": "href", "message": "not a file of this api"}],
        )
    token, expires = verifier(request).mint_link_token(principal, path)
    return Link(href=f"{path}?token={token}", expires_at=datetime.fromtimestamp(expires, UTC))


routes = [create_link]
