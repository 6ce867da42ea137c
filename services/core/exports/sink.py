"""Where export bytes go: an upload, an HTTP response, a file; optionally through gzip."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

Sink = Callable[[bytes], Awaitable[None]]
Progress = Callable[[int], Awaitable[None]]

# Compressing a large block takes long enough to stall heartbeats; zlib releases
# the GIL, so such blocks are compressed in a thread.
THREAD_ABOVE = 256 * 1024


async def no_progress(done: int) -> None:
    return None


class Gzip:
    """A sink that gzips into another sink (a ``.gz`` file, not a Content-Encoding)."""

    def __init__(self, sink: Sink, level: int = 6) -> None:
        self._sink = sink
        self._zip = zlib.compressobj(level, zlib.DEFLATED, 31)

    async def write(self, data: bytes) -> None:
        if len(data) >= THREAD_ABOVE:
            out = await asyncio.to_thread(self._zip.compress, data)
        else:
            out = self._zip.compress(data)
        if out:
            await self._sink(out)

    async def close(self) -> None:
        await self._sink(self._zip.flush())


class Spool:
    """A write-only file that keeps its bytes until taken: zipfile and pyarrow write into it.

    It has ``tell`` but no ``seek``, so zipfile writes data descriptors instead of
    going back to patch headers, and nothing written is ever revisited.
    """

    closed = False

    def __init__(self) -> None:
        self._data = bytearray()
        self._position = 0

    def write(self, data: bytes) -> int:
        self._data += data
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data, self._data = bytes(self._data), bytearray()
        return data


class Behind:
    """Blocking steps (deflate, Parquet encoding) run in a thread, one block behind the loop.

    While the thread works on one block the loop keeps reading the next from
    PostgreSQL; at most two blocks are in memory. What a step writes into the
    ``Spool`` goes to the sink, in order, once the step is done. A cancelled export
    leaves at most one step to finish in its thread, on objects nobody reads again.

    Every step of one export runs on the same thread of its own: steps that took
    turns on the loop's pool left each pool thread's allocator arena holding an
    Arrow block (a Parquet export of a million rows grew the worker by 105 MiB).
    """

    def __init__(self, spool: Spool, sink: Sink) -> None:
        self._spool = spool
        self._sink = sink
        self._pending: asyncio.Future[None] | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="export")

    async def run(self, step: Callable[[bytes], None], block: bytes) -> None:
        await self.wait()
        loop = asyncio.get_running_loop()
        self._pending = loop.run_in_executor(self._thread, step, block)

    def close(self) -> None:
        """Let the thread go once its last step is done (the caller waited for it, or
        the export was cancelled and nobody will)."""
        self._thread.shutdown(wait=False)

    async def wait(self) -> None:
        """Let the running step finish and pass on what it wrote."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await pending
        if data := self._spool.take():
            await self._sink(data)
