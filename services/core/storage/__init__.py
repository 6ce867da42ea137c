"""Object storage behind one interface; ``open_storage`` picks the backend."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from services.core.settings import Settings
from services.core.storage.base import Storage, StoredObject, Upload, content_disposition
from services.core.storage.local import LocalStorage

__all__ = [
    "LocalStorage",
    "Storage",
    "StoredObject",
    "Upload",
    "content_disposition",
    "open_storage",
]


@contextlib.asynccontextmanager
async def open_storage(settings: Settings) -> AsyncIterator[Storage]:
    """S3 when ``FERRY_S3_BUCKET`` is set, the local folder otherwise.

    The S3 client (aioboto3, some 40 MiB of modules) is imported only for S3."""
    if settings.storage_backend == "local":
        yield LocalStorage(settings.storage_dir)
        return
    from services.core.storage.s3 import S3Storage

    async with S3Storage.connect(
        bucket=settings.s3_bucket,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=settings.s3_secret_access_key,
        part_size=settings.s3_part_size,
        public_url=settings.s3_public_url,
    ) as storage:
        yield storage
