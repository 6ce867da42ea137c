"""Object storage: one interface, a local folder and S3 behind it.

Files are written in order through an ``Upload``; nothing is visible under the key
until ``complete()``, and a failed or cancelled upload is aborted, so readers
never see half a file. Memory stays bounded by one part (S3) or one buffer.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import msgspec

CHUNK = 1024 * 1024


class StoredObject(msgspec.Struct, frozen=True):
    key: str
    size: int
    sha256: str = ""


class Upload(abc.ABC):
    """A file being written; subclasses move the bytes, this class counts and hashes."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.size = 0
        self._sha = hashlib.sha256()
        self.result: StoredObject | None = None

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._sha.update(data)
        self.size += len(data)
        await self._write(data)

    async def complete(self) -> StoredObject:
        await self._complete()
        self.result = StoredObject(self.key, self.size, self._sha.hexdigest())
        return self.result

    @abc.abstractmethod
    async def _write(self, data: bytes | bytearray | memoryview) -> None: ...

    @abc.abstractmethod
    async def _complete(self) -> None: ...

    @abc.abstractmethod
    async def abort(self) -> None:
        """Throw away everything written so far."""


class Storage(abc.ABC):
    backend: str

    @abc.abstractmethod
    async def _start(self, key: str, content_type: str) -> Upload: ...

    @contextlib.asynccontextmanager
    async def writer(
        self, key: str, *, content_type: str = "application/octet-stream"
    ) -> AsyncIterator[Upload]:
        """Write a file in order; completed on exit, aborted on any exception."""
        upload = await self._start(key, content_type)
        try:
            yield upload
        except BaseException:
            # Shielded: a cancelled export must still remove its partial upload.
            await asyncio.shield(upload.abort())
            raise
        await upload.complete()

    async def put_file(
        self, key: str, path: str | Path, *, content_type: str = "application/octet-stream"
    ) -> StoredObject:
        """Upload a local file in bounded chunks."""
        async with self.writer(key, content_type=content_type) as upload:
            with open(path, "rb") as fh:  # noqa: ASYNC230 - chunks are read in a thread
                while chunk := await asyncio.to_thread(fh.read, CHUNK):
                    await upload.write(chunk)
        assert upload.result is not None
        return upload.result

    @abc.abstractmethod
    def read(self, key: str, *, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        """The bytes of a stored file, in chunks; ``FileNotFoundError`` if missing."""

    @abc.abstractmethod
    async def stat(self, key: str) -> StoredObject | None:
        """Size of a stored file, or None."""

    def local_path(self, key: str) -> Path | None:
        """Where the file of ``key`` lies on this machine's disk, if this backend keeps
        it there (to be read in place rather than copied); None for object stores."""
        return None

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove a file; missing files are fine."""

    @abc.abstractmethod
    async def delete_prefix(self, prefix: str) -> int:
        """Remove every file under ``prefix``; returns how many."""

    @abc.abstractmethod
    async def presigned_url(
        self, key: str, *, expires_in: int, filename: str, content_type: str
    ) -> str | None:
        """A time-limited GET URL, or None when the api must serve the file itself."""

    async def presigned_put(
        self, key: str, *, content_type: str, content_length: int, expires_in: int
    ) -> str | None:
        """A time-limited PUT URL with the type and length bound into its signature, or
        None when the api must take the file itself (the local folder)."""
        return None

    @abc.abstractmethod
    async def move(self, source: str, target: str) -> None:
        """Give a stored file another key (``FileNotFoundError`` if there is none)."""

    @abc.abstractmethod
    async def abort_stale_uploads(self, older_than: timedelta) -> int:
        """Abort uploads started before ``older_than`` ago and never finished."""

    @abc.abstractmethod
    async def check(self) -> None:
        """Raise when the storage cannot be used (readiness probe)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback and the RFC 6266 ``filename*`` form."""
    ascii_name = (
        "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
        or "download"
    )
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"
