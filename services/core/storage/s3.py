"""S3 (or MinIO, moto) through aioboto3: multipart upload fed as a file is produced."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from services.core.errors import FerryError, Transient
from services.core.storage.base import CHUNK, Storage, StoredObject, Upload, content_disposition

log = logging.getLogger(__name__)


# Answers that no retry will change: the bucket or the credentials are wrong.
PERMANENT = frozenset(
    {
        "NoSuchBucket",
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "InvalidBucketName",
        "SignatureDoesNotMatch",
        "AccountProblem",
    }
)


def storage_error(exc: BotoCoreError | ClientError, bucket: str, key: str) -> FerryError:
    """A permanent error naming what to fix, or Transient (worth a retry with backoff)."""
    code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
    if code in PERMANENT:
        return FerryError(
            f"storage refused to write {key}: {code} on bucket {bucket!r}; "
            "check FERRY_S3_BUCKET and the S3 credentials, then try again"
        )
    return Transient(f"storage refused {key}: {exc}")


class S3Upload(Upload):
    """Buffers one part at a time; a file smaller than a part is a single PUT."""

    def __init__(
        self, client: Any, bucket: str, key: str, content_type: str, part_size: int
    ) -> None:
        super().__init__(key)
        self._client = client
        self._bucket = bucket
        self._content_type = content_type
        self._part_size = part_size
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    async def _write(self, data: bytes | bytearray | memoryview) -> None:
        self._buffer += data
        while len(self._buffer) >= self._part_size:
            await self._send_part(bytes(self._buffer[: self._part_size]))
            del self._buffer[: self._part_size]

    async def _send_part(self, body: bytes) -> None:
        try:
            if self._upload_id is None:
                started = await self._client.create_multipart_upload(
                    Bucket=self._bucket, Key=self.key, ContentType=self._content_type
                )
                self._upload_id = started["UploadId"]
            number = len(self._parts) + 1
            sent = await self._client.upload_part(
                Bucket=self._bucket,
                Key=self.key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=body,
            )
        except (BotoCoreError, ClientError) as exc:
            raise storage_error(exc, self._bucket, self.key) from exc
        self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})

    async def _complete(self) -> None:
        try:
            if self._upload_id is None:
                await self._client.put_object(
                    Bucket=self._bucket,
                    Key=self.key,
                    Body=bytes(self._buffer),
                    ContentType=self._content_type,
                )
            else:
                if self._buffer:
                    await self._send_part(bytes(self._buffer))
                await self._client.complete_multipart_upload(
                    Bucket=self._bucket,
                    Key=self.key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                )
        except (BotoCoreError, ClientError) as exc:
            raise storage_error(exc, self._bucket, self.key) from exc
        finally:
            self._buffer = bytearray()

    async def abort(self) -> None:
        self._buffer = bytearray()
        if self._upload_id is None:
            return
        try:
            await self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=self.key, UploadId=self._upload_id
            )
        except (BotoCoreError, ClientError):
            # The stale-upload cron (and the bucket lifecycle) will get it.
            log.warning("abort of multipart upload failed", extra={"key": self.key})


class S3Storage(Storage):
    backend = "s3"

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        part_size: int = 8 * 1024 * 1024,
        public_client: Any = None,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.part_size = part_size
        # Presigns download links against the endpoint browsers reach (signing is local).
        self.public_client = public_client or client

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls,
        *,
        bucket: str,
        endpoint_url: str = "",
        region: str = "us-east-1",
        access_key_id: str = "",
        secret_access_key: str = "",
        part_size: int = 8 * 1024 * 1024,
        public_url: str = "",
    ) -> AsyncIterator[S3Storage]:
        """One client for the life of the process; a second, never connected, to presign
        download links for ``public_url`` when browsers reach S3 under another name."""
        session = aioboto3.Session(
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key or None,
            region_name=region,
        )
        config = AioConfig(
            signature_version="s3v4",
            retries={"max_attempts": 4, "mode": "standard"},
            s3={"addressing_style": "path"} if endpoint_url else {},
        )
        async with contextlib.AsyncExitStack() as stack:
            client = await stack.enter_async_context(
                session.client("s3", endpoint_url=endpoint_url or None, config=config)
            )
            public = None
            if public_url:
                public = await stack.enter_async_context(
                    session.client("s3", endpoint_url=public_url, config=config)
                )
            yield cls(client, bucket, part_size=part_size, public_client=public)

    async def _start(self, key: str, content_type: str) -> Upload:
        return S3Upload(self.client, self.bucket, key, content_type, self.part_size)

    async def read(self, key: str, *, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        try:
            response = await self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(key) from exc
            raise Transient(f"storage refused to read {key}: {exc}") from exc
        body = response["Body"]
        try:
            async for chunk in body.iter_chunks(chunk_size):
                yield chunk
        finally:
            body.close()

    async def stat(self, key: str) -> StoredObject | None:
        try:
            head = await self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise Transient(f"storage refused to stat {key}: {exc}") from exc
        return StoredObject(key, int(head["ContentLength"]))

    async def delete(self, key: str) -> None:
        await self.client.delete_object(Bucket=self.bucket, Key=key)

    async def delete_prefix(self, prefix: str) -> int:
        removed = 0
        paginator = self.client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if keys:
                await self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})
                removed += len(keys)
        return removed

    async def presigned_url(
        self, key: str, *, expires_in: int, filename: str, content_type: str
    ) -> str | None:
        url: str = await self.public_client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ResponseContentDisposition": content_disposition(filename),
                "ResponseContentType": content_type,
            },
            ExpiresIn=expires_in,
        )
        return url

    async def presigned_put(
        self, key: str, *, content_type: str, content_length: int, expires_in: int
    ) -> str | None:
        # Content-Type and Content-Length become signed headers: a PUT of another type or
        # size does not match the signature (X-Amz-SignedHeaders names them).
        url: str = await self.client.generate_presigned_url(
            "put_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ContentType": content_type,
                "ContentLength": content_length,
            },
            ExpiresIn=expires_in,
        )
        return url

    async def move(self, source: str, target: str) -> None:
        try:
            await self.client.copy_object(
                Bucket=self.bucket, Key=target, CopySource={"Bucket": self.bucket, "Key": source}
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(source) from exc
            raise Transient(f"storage refused to copy {source}: {exc}") from exc
        await self.client.delete_object(Bucket=self.bucket, Key=source)

    async def abort_stale_uploads(self, older_than: timedelta) -> int:
        cutoff = datetime.now(UTC) - older_than
        aborted = 0
        paginator = self.client.get_paginator("list_multipart_uploads")
        async for page in paginator.paginate(Bucket=self.bucket):
            for upload in page.get("Uploads", []):
                if upload["Initiated"] < cutoff:
                    await self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted += 1
        return aborted

    async def check(self) -> None:
        await self.client.head_bucket(Bucket=self.bucket)

    async def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (development and tests)."""
        try:
            await self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            await self.client.create_bucket(Bucket=self.bucket)
