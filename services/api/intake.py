"""What an upload becomes an import with: its dataset, account and params, checked.

``POST /v1/imports`` takes the file in the request (streamed by ``services.api.uploads``)
or names a finished direct upload (``services.core.uploads``); either way the caller
must be allowed to write the dataset before anything is stored.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import Request
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, RequestBody, Schema

from services.api import uploads
from services.api.openapi import BINARY
from services.api.params import NUL
from services.api.schemas import ImportFromUpload
from services.api.views import named_dataset
from services.core import jobs
from services.core import uploads as upload_records
from services.core.auth import Principal
from services.core.datasets import Dataset
from services.core.deps import Deps
from services.core.errors import Forbidden, InvalidInput
from services.core.imports import readers
from services.core.jobs import Job
from services.core.storage import keys

FORM_FIELDS = ("dataset", "account_id", "sheet")


async def create_import_job(
    deps: Deps,
    principal: Principal,
    ds: Dataset,
    params: dict[str, Any],
    idempotency_key: str | None,
    job_id: uuid.UUID,
) -> tuple[Job, bool]:
    """The import's job row (``created`` False for a replay of the same key and body)."""
    return await jobs.create_job(
        deps.db,
        kind="import",
        org_id=principal.org,
        user_id=principal.sub,
        dataset=ds.name,
        params=params,
        idempotency_key=idempotency_key,
        job_id=job_id,
        max_waiting=deps.settings.max_queued_jobs_per_user,
    )


def writable(deps: Deps, principal: Principal, name: str | None) -> Dataset | None:
    """The dataset named, if any, once the caller may write to it (422, 403 otherwise)."""
    if not name:
        return None
    ds = named_dataset(deps, name)
    principal.require(f"{ds.name}.write")
    return ds


def require_some_write(deps: Deps, principal: Principal) -> None:
    """403 unless the caller may write to at least one dataset."""
    if not any(principal.can(f"{ds.name}.write") for ds in deps.registry):
        wanted = " or ".join(f"'{ds.name}.write'" for ds in deps.registry)
        raise Forbidden(f"this token lacks the permission to import ({wanted})")


def _printable(name: str) -> str:
    return "".join(c for c in name if c.isprintable()).strip()


def import_params(
    deps: Deps, principal: Principal, form: dict[str, str], got: uploads.Received
) -> tuple[Dataset, dict[str, Any]]:
    """The dataset and job params of an upload, from its form (query parameters first)."""
    nul = [{"field": k, "message": NUL} for k in FORM_FIELDS if "\x00" in form.get(k, "")]
    if nul:
        raise InvalidInput("a form field holds a NUL character", errors=nul)
    ds = writable(deps, principal, form.get("dataset"))
    account = (form.get("account_id") or "").strip()
    problems = []
    if ds is None:
        problems.append({"field": "dataset", "message": "required"})
    if not account:
        problems.append({"field": "account_id", "message": "required"})
    elif len(account) > 200:
        problems.append({"field": "account_id", "message": "longer than 200 characters"})
    if ds is None or problems:
        raise InvalidInput("missing " + ", ".join(p["field"] for p in problems), errors=problems)
    # A file's name is only shown; control characters (NUL among them) are dropped.
    name = _printable(form.get("filename") or got.filename or "") or f"upload.{got.kind}"
    return ds, {
        "account_id": account,
        "filename": name[:255],
        "sheet": form.get("sheet") or None,
        "kind": got.kind,
        "bytes": got.size,
        "sha256": got.sha256,
    }


def _decode(raw: bytes) -> ImportFromUpload:
    try:
        return msgspec.json.decode(raw, type=ImportFromUpload)
    except msgspec.ValidationError as exc:
        raise InvalidInput(
            f"invalid body: {exc}", errors=[{"field": "body", "message": str(exc)}]
        ) from None
    except msgspec.DecodeError as exc:
        raise InvalidInput(
            f"the body is not JSON: {exc}", errors=[{"field": "body", "message": "not JSON"}]
        ) from None


async def _replay(
    deps: Deps, principal: Principal, body: ImportFromUpload, key: str | None, upload: Any
) -> Job | None:
    """The import this same request made before (by its key, or by the upload), if any."""
    if key is not None:
        job = await jobs.job_by_key(deps.db, org_id=principal.org, user_id=principal.sub, key=key)
        if job is not None:
            if job.params.get("upload_id") != body.upload_id:
                raise jobs.key_reused()
            return job
    if upload.used_by is not None and upload.user_id == principal.sub:
        job = await jobs.get_job(deps.db, upload.used_by, principal.org)
        if (job.dataset, job.params.get("account_id")) == (body.dataset, body.account_id):
            return job
    return None


async def from_upload(
    request: Request[Any, Any, Any], deps: Deps, principal: Principal, key: str | None
) -> tuple[Job, bool]:
    """The import of a finished direct upload (see ``services.core.uploads``)."""
    body = _decode(await request.body())
    ds = writable(deps, principal, body.dataset)
    if ds is None:  # an empty name
        raise InvalidInput(
            "name the dataset to import into", errors=[{"field": "dataset", "message": "required"}]
        )
    upload = await upload_records.get_upload(deps.db, body.upload_id, principal.org)
    if (replay := await _replay(deps, principal, body, key, upload)) is not None:
        return replay, False
    await upload_records.check_upload(deps.storage, upload, user_id=principal.sub)
    kind = await _sniffed(deps, upload.key)
    job_id = uuid.uuid4()
    target = keys.import_source(principal.org, job_id)
    await upload_records.take_upload(deps.db, deps.storage, upload, job_id=job_id, target=target)
    params = {
        "account_id": body.account_id.strip(),
        "filename": (_printable(body.filename or upload.filename) or f"upload.{kind}")[:255],
        "sheet": body.sheet or None,
        "kind": kind,
        "bytes": upload.bytes,
        "upload_id": str(upload.id),
    }
    try:
        return await create_import_job(deps, principal, ds, params, key, job_id)
    except BaseException:
        await upload_records.give_back(deps.db, deps.storage, upload, job_id=job_id, source=target)
        raise


async def _sniffed(deps: Deps, key: str) -> str:
    """The kind of a stored file by its first bytes (refused if it is no table)."""
    head = b""
    async for block in deps.storage.read(key, chunk_size=uploads.SNIFF_BYTES):
        head = block
        break
    return readers.sniff_kind(head)


TEXT = Schema(type=OpenAPIType.STRING)
UPLOAD = RequestBody(
    required=True,
    description="A form with the file, or the file itself (then `dataset` and `account_id` "
    "are query parameters)",
    content={
        "multipart/form-data": OpenAPIMediaType(
            schema=Schema(
                type=OpenAPIType.OBJECT,
                required=["file"],
                properties={
                    "file": BINARY,
                    "dataset": Schema(type=OpenAPIType.STRING, examples=["bookkeeping_records"]),
                    "account_id": Schema(type=OpenAPIType.STRING, examples=["main"]),
                    "sheet": Schema(type=OpenAPIType.STRING, description="XLSX: the sheet"),
                    "filename": Schema(type=OpenAPIType.STRING, description="Name to show"),
                },
            )
        ),
        "application/json": OpenAPIMediaType(
            schema=Schema(
                type=OpenAPIType.OBJECT,
                description="A file put to a direct upload URL (`POST /v1/uploads`)",
                required=["upload_id", "dataset", "account_id"],
                properties={
                    "upload_id": TEXT,
                    "dataset": TEXT,
                    "account_id": Schema(type=OpenAPIType.STRING, min_length=1, max_length=200),
                    "sheet": Schema(one_of=[TEXT, Schema(type=OpenAPIType.NULL)]),
                    "filename": Schema(one_of=[TEXT, Schema(type=OpenAPIType.NULL)]),
                },
            )
        ),
        **{
            media: OpenAPIMediaType(schema=BINARY)
            for media in ("text/csv", readers.XLSX_TYPE, "application/octet-stream")
        },
    },
)
