"""CSV: PostgreSQL's ``COPY (SELECT …) TO STDOUT`` streamed through asyncpg.

Formatting (money, formula neutralising, computed fields) happens in the SELECT,
so rows never become Python objects: bytes go from the socket to the sink. XLSX
and Parquet read their rows through the same ``copy_blocks``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from services.core.db.pool import Connection
from services.core.exports.sink import Progress, Sink

# COPY hands over one CopyData message at a time (often one row); passing each on
# would cost an await per row, so bytes are gathered into blocks of whole rows.
BLOCK = 256 * 1024


async def copy_blocks(
    conn: Connection,
    query: str,
    args: list[Any],
    on_block: Callable[[bytes], Awaitable[None]],
    *,
    block: int = BLOCK,
    **options: Any,
) -> int:
    """Run ``COPY (query) TO STDOUT`` handing ``on_block`` blocks of whole rows; returns rows.

    asyncpg passes on whole CopyData messages, and COPY sends one row per message,
    so no row is ever split between two blocks.
    """
    buffer = bytearray()

    async def output(chunk: bytes) -> None:
        nonlocal buffer
        buffer += chunk
        if len(buffer) >= block:
            full, buffer = bytes(buffer), bytearray()
            await on_block(full)

    status = await conn.copy_from_query(query, *args, output=output, **options)
    if buffer:
        await on_block(bytes(buffer))
    return int(status.split()[-1])


async def write_csv(
    conn: Connection, query: str, args: list[Any], sink: Sink, progress: Progress
) -> int:
    """Stream the query's rows as CSV with a header of labels; returns the row count."""
    lines = 0

    async def output(block: bytes) -> None:
        nonlocal lines
        # Quoted newlines inside a value make this an estimate; COPY's status is exact.
        lines += block.count(b"\n")
        await sink(block)
        await progress(max(lines - 1, 0))

    rows = await copy_blocks(conn, query, args, output, format="csv", header=True, encoding="utf-8")
    await progress(rows)
    return rows
