"""Direct uploads: files up to the import limit go straight to storage, not through the api.

``POST /v1/uploads`` answers with a URL to PUT the file to: a presigned S3 URL whose
signature binds the content type and length, or — for the local folder — this api's
``PUT /v1/uploads/{id}/content`` with a signed, expiring token of its own. Then
``POST /v1/imports {"upload_id": …}`` starts the import.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from litestar import Request, Response, post, put
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, RequestBody
from litestar.params import FromPath, JSONBody, QueryParameter

from services.api import uploads as receiving
from services.api.auth import verifier
from services.api.openapi import BINARY, operation, problems
from services.api.params import NUL
from services.api.schemas import UploadRequest, UploadTicket
from services.core import uploads
from services.core.auth import Principal
from services.core.deps import Deps
from services.core.errors import Forbidden, InvalidInput, TooLarge, UnsupportedMediaType
from services.core.imports.readers import XLSX_TYPE

log = logging.getLogger(__name__)


@post(
    "/v1/uploads",
    tags=["imports"],
    summary="Ask for a URL to upload a file straight to storage",
    status_code=201,
    operation_id="createUpload",
    responses=problems(400, 403, 413, 415, 422),
    operation_class=operation(),
)
async def create_upload(
    request: Request[Any, Any, Any],
    data: JSONBody[UploadRequest],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
) -> UploadTicket:
    """For files up to the import limit without streaming them through the api: PUT the
    file to `url` with `headers` before `expires_at` (on S3 the signature binds the
    content type and length), then `POST /v1/imports` with
    `{"upload_id": id, "dataset": …, "account_id": …}`. Needs a dataset's write
    permission. 413 over the import limit; 415 for a type that is not a table.
    """
    if not any(principal.can(f"{ds.name}.write") for ds in deps.registry):
        raise Forbidden("this token lacks the permission to import into any dataset")
    limit = deps.settings.import_max_bytes
    if data.bytes > limit:
        raise TooLarge(f"the file is larger than {limit:,} bytes (the import limit)", limit=limit)
    media = data.content_type.split(";")[0].strip().lower()
    if media not in receiving.RAW_TYPES:
        raise UnsupportedMediaType(
            f"{data.content_type!r} is not a table: send text/csv, a spreadsheet type or "
            "application/octet-stream"
        )
    if "\x00" in data.filename:
        raise InvalidInput(
            "the filename holds a NUL character",
            errors=[{"field": "filename", "message": NUL}],
        )
    ttl = deps.settings.upload_url_ttl
    upload = await uploads.create_upload(
        deps.db,
        org_id=principal.org,
        user_id=principal.sub,
        filename=data.filename,
        content_type=data.content_type,
        size=data.bytes,
        ttl=ttl,
    )
    headers = {"Content-Type": upload.content_type, "Content-Length": str(upload.bytes)}
    url = await deps.storage.presigned_put(
        upload.key, content_type=upload.content_type, content_length=upload.bytes, expires_in=ttl
    )
    if url is None:
        token = verifier(request).mint_upload_token(
            upload.id, upload.org_id, int(upload.expires_at.timestamp())
        )
        base = str(request.base_url).rstrip("/")
        url = f"{base}/v1/uploads/{upload.id}/content?token={token}"
    log.info(
        "upload requested",
        extra={"action": "upload_requested", "upload_id": str(upload.id), "bytes": upload.bytes},
    )
    return UploadTicket(
        id=str(upload.id),
        method="PUT",
        url=url,
        headers=headers,
        expires_at=upload.expires_at,
        bytes=upload.bytes,
        storage=deps.storage.backend,
    )


@put(
    "/v1/uploads/{upload_id:str}/content",
    tags=["imports"],
    summary="The file of a direct upload (local storage)",
    status_code=204,
    request_max_body_size=None,  # bounded by the size the upload promised, as it streams
    operation_id="putUploadContent",
    security=[{}],  # the URL's own token is the credential
    responses=problems(400, 403, 404, 413, 415, 422, 503, auth=False),
    operation_class=operation(
        body=RequestBody(
            required=True,
            description="The file, with the Content-Type and length the upload promised",
            content={
                media: OpenAPIMediaType(schema=BINARY)
                for media in ("text/csv", XLSX_TYPE, "application/octet-stream")
            },
        )
    ),
)
async def put_upload_content(
    request: Request[Any, Any, Any],
    upload_id: FromPath[str],
    deps: NamedDependency[Deps],
    token: Annotated[
        str, QueryParameter(description="The signed token of the upload URL (its credential).")
    ],
) -> Response[None]:
    """The upload URL of the local storage backend: no bearer token, the URL's own
    signed token instead, valid until the upload expires (403 after). The body is the
    file, with the promised Content-Type and exactly the promised length (413 above it,
    422 short of it). Sending it again replaces it, until an import takes it.
    """
    org = verifier(request).verify_upload_token(token, upload_id)
    upload = await uploads.get_upload(deps.db, upload_id, org)
    if upload.expired:
        raise Forbidden("the upload URL has expired; ask for a new one")
    if upload.used_by is not None:
        raise Forbidden("this upload was already taken by an import")
    sent_type = request.headers.get("content-type", "")
    if sent_type != upload.content_type:
        raise UnsupportedMediaType(
            f"send Content-Type: {upload.content_type} (as the upload was asked for), "
            f"not {sent_type or 'none'}"
        )
    await receiving.receive_exact(request, deps.storage, upload.key, size=upload.bytes)
    log.info(
        "upload received",
        extra={"action": "upload_received", "upload_id": upload_id, "bytes": upload.bytes},
    )
    return Response(None, status_code=204)


routes = [create_upload, put_upload_content]
