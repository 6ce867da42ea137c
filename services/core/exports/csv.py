"""CSV: PostgreSQL's ``COPY (SELECT …) TO STDOUT`` streamed through asyncpg.

Formatting (money, formula neutralising, computed fields) happens in the SELECT,
so rows never become Python objects: bytes go from the socket to the sink.
"""

from __future__ import annotations

from typing import Any

from services.core.db.pool import Connection
from services.core.exports.sink import Progress, Sink

# COPY hands over one CopyData message at a time (often one row); passing each to
# the sink would cost an await per row, so bytes are gathered into blocks.
BLOCK = 256 * 1024


async def write_csv(
    conn: Connection, query: str, args: list[Any], sink: Sink, progress: Progress
) -> int:
    """Stream the query's rows as CSV with a header of labels; returns the row count."""
    buffer = bytearray()
    lines = 0

    async def output(chunk: bytes) -> None:
        nonlocal buffer, lines
        buffer += chunk
        if len(buffer) >= BLOCK:
            block, buffer = bytes(buffer), bytearray()
            # Quoted newlines inside a value make this an estimate; COPY's status is exact.
            lines += block.count(b"\n")
            await sink(block)
            await progress(max(lines - 1, 0))

    status = await conn.copy_from_query(
        query, *args, output=output, format="csv", header=True, encoding="utf-8"
    )
    if buffer:
        await sink(bytes(buffer))
    rows = int(status.split()[-1])
    await progress(rows)
    return rows
