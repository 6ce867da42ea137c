"""Where export bytes go: an upload, an HTTP response, a file; optionally through gzip."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable

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
