"""A folder as object storage: the embedded default of ``ferry dev``."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path, PurePosixPath

from services.core.storage.base import CHUNK, Storage, StoredObject, Upload

_PARTIAL = ".uploads"


class LocalUpload(Upload):
    def __init__(self, key: str, final: Path, partial: Path) -> None:
        super().__init__(key)
        self._final = final
        self._partial = partial
        self._buffer = bytearray()
        partial.touch()

    async def _write(self, data: bytes | bytearray | memoryview) -> None:
        self._buffer += data
        if len(self._buffer) >= CHUNK:
            await self._flush()

    async def _flush(self) -> None:
        block, self._buffer = bytes(self._buffer), bytearray()
        await asyncio.to_thread(self._append, block)

    def _append(self, block: bytes, *, sync: bool = False) -> None:
        # Opened per block, so an upload abandoned by a dead worker holds no handle.
        with open(self._partial, "ab") as fh:
            fh.write(block)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())

    async def _complete(self) -> None:
        block, self._buffer = bytes(self._buffer), bytearray()
        await asyncio.to_thread(self._finish, block)

    def _finish(self, block: bytes) -> None:
        self._append(block, sync=True)
        self._final.parent.mkdir(parents=True, exist_ok=True)
        # Atomic on one filesystem: readers see the old file or the whole new one.
        os.replace(self._partial, self._final)

    async def abort(self) -> None:
        self._buffer = bytearray()
        self._partial.unlink(missing_ok=True)


class LocalStorage(Storage):
    backend = "local"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        (self.root / _PARTIAL).mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """The file of a key; keys are relative POSIX paths without ``..``."""
        pure = PurePosixPath(key)
        if pure.is_absolute() or ".." in pure.parts or not pure.parts or pure.parts[0] == _PARTIAL:
            raise ValueError(f"invalid storage key {key!r}")
        return self.root.joinpath(*pure.parts)

    def local_path(self, key: str) -> Path | None:
        return self.path(key)

    async def _start(self, key: str, content_type: str) -> Upload:
        final = self.path(key)
        partial = self.root / _PARTIAL / f"{uuid.uuid4().hex}.part"
        return LocalUpload(key, final, partial)

    async def read(self, key: str, *, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        path = self.path(key)
        with open(path, "rb") as fh:  # noqa: ASYNC230 - chunks are read in a thread
            while chunk := await asyncio.to_thread(fh.read, chunk_size):
                yield chunk

    async def stat(self, key: str) -> StoredObject | None:
        try:
            return StoredObject(key, self.path(key).stat().st_size)
        except FileNotFoundError:
            return None

    async def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    async def delete_prefix(self, prefix: str) -> int:
        base = self.path(prefix.rstrip("/"))
        if not base.exists():
            return 0
        if base.is_file():
            base.unlink()
            return 1
        count = sum(1 for p in base.rglob("*") if p.is_file())
        await asyncio.to_thread(shutil.rmtree, base, True)
        return count

    async def presigned_url(
        self, key: str, *, expires_in: int, filename: str, content_type: str
    ) -> str | None:
        return None  # the api streams local files itself

    async def move(self, source: str, target: str) -> None:
        destination = self.path(target)
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path(source), destination)  # atomic on one filesystem

    async def abort_stale_uploads(self, older_than: timedelta) -> int:
        cutoff = time.time() - older_than.total_seconds()
        removed = 0
        for part in (self.root / _PARTIAL).glob("*.part"):
            if part.stat().st_mtime < cutoff:
                part.unlink(missing_ok=True)
                removed += 1
        return removed

    async def check(self) -> None:
        probe = self.root / _PARTIAL / f"ready-{uuid.uuid4().hex}"
        probe.write_bytes(b"ok")
        probe.unlink()
