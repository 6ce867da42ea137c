"""Direct uploads: a file put straight into storage, then taken by an import.

``create_upload`` records what the client promises (name, type, exact size) and for how
long the upload URL holds; ``take_upload`` hands a finished upload to a new import,
once: it is refused when it belongs to another org (404) or user (403), expired (410),
was already taken (409) or is not all there yet (409: nothing stored, or not the size
promised). The file then moves under the import's key, as if it had been posted.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from services.core.db.pool import Connection, Pool
from services.core.db.queries import Q
from services.core.errors import Conflict, Forbidden, Gone, NotFound
from services.core.storage import Storage, keys


class Upload(msgspec.Struct, kw_only=True):
    """One row of ``uploads``."""

    id: uuid.UUID
    org_id: str
    user_id: str
    filename: str
    content_type: str
    bytes: int
    expires_at: datetime
    created_at: datetime
    used_by: uuid.UUID | None = None
    used_at: datetime | None = None
    expired: bool = False

    @property
    def key(self) -> str:
        return keys.upload_file(self.org_id, self.id)


def _upload(row: Any) -> Upload:
    return Upload(**{k: v for k, v in row.items() if k in Upload.__struct_fields__})


async def create_upload(
    db: Pool | Connection,
    *,
    org_id: str,
    user_id: str,
    filename: str,
    content_type: str,
    size: int,
    ttl: int,
) -> Upload:
    """Record an upload to come; its URL holds for ``ttl`` seconds."""
    row = await db.fetchrow(
        Q.insert_upload, uuid.uuid4(), org_id, user_id, filename, content_type, size, ttl
    )
    return _upload(row)


async def get_upload(db: Pool | Connection, upload_id: str | uuid.UUID, org_id: str) -> Upload:
    """An upload of this org, or NotFound (also for another org's)."""
    try:
        key = upload_id if isinstance(upload_id, uuid.UUID) else uuid.UUID(upload_id)
    except ValueError:
        raise NotFound("no such upload") from None
    row = await db.fetchrow(Q.get_upload, key, org_id)
    if row is None:
        raise NotFound("no such upload")
    return _upload(row)


async def check_upload(storage: Storage, upload: Upload, *, user_id: str) -> None:
    """Refuse an upload that cannot become an import (see the module docstring)."""
    if upload.user_id != user_id:
        raise Forbidden("this upload belongs to another user")
    if upload.used_by is not None:
        raise Conflict(
            f"this upload was already taken by the import {upload.used_by}",
            import_id=str(upload.used_by),
        )
    if upload.expired:
        raise Gone(
            f"the upload expired at {upload.expires_at.isoformat()}; ask for a new one "
            "with POST /v1/uploads"
        )
    stored = await storage.stat(upload.key)
    if stored is None or stored.size != upload.bytes:
        got = "nothing" if stored is None else f"{stored.size:,} bytes"
        raise Conflict(
            f"the upload is not finished: {got} stored of the {upload.bytes:,} promised; "
            "PUT the whole file to the upload URL first",
            received=0 if stored is None else stored.size,
        )


async def take_upload(
    db: Pool, storage: Storage, upload: Upload, *, job_id: uuid.UUID, target: str
) -> None:
    """Claim a checked upload for import ``job_id`` (once) and move its file to ``target``."""
    if await db.fetchrow(Q.claim_upload, upload.id, job_id) is None:
        raise Conflict("this upload was taken or expired meanwhile; read it again")
    try:
        await storage.move(upload.key, target)
    except BaseException:
        await db.execute(Q.release_upload, upload.id, job_id)
        raise


async def give_back(
    db: Pool, storage: Storage, upload: Upload, *, job_id: uuid.UUID, source: str
) -> None:
    """Undo ``take_upload`` (the import could not be created)."""
    await storage.move(source, upload.key)
    await db.execute(Q.release_upload, upload.id, job_id)


async def expire_uploads(db: Pool, storage: Storage, *, grace_seconds: int) -> int:
    """Delete uploads never taken, ``grace_seconds`` after they expired; how many."""
    rows = await db.fetch(Q.expired_uploads, grace_seconds)
    for row in rows:
        await storage.delete(keys.upload_file(row["org_id"], row["id"]))
    return len(rows)
