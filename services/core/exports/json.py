"""JSON (one array) and NDJSON: a server-side cursor read in large batches, msgspec-encoded.

Keys are the field names (stable for programs); money is a JSON number of currency
units (``12.34``), dates are ``YYYY-MM-DD``. Each row becomes a msgspec Struct (its
keys encoded once, not per row), and the next batch is already asked for while
this one is encoded, so PostgreSQL and Python work at the same time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from services.core.db.pool import Connection
from services.core.exports.sink import Progress, Sink

BATCH = 5_000


def row_type(keys: list[str]) -> type[msgspec.Struct]:
    """A Struct encoding a row as an object with these keys, in this order."""
    names = [f"f{i}" for i in range(len(keys))]  # keys need not be identifiers
    return msgspec.defstruct(
        "Row", [(n, Any) for n in names], rename=dict(zip(names, keys, strict=True)), gc=False
    )


async def write_json(
    conn: Connection,
    query: str,
    args: list[Any],
    keys: list[str],
    sink: Sink,
    progress: Progress,
    *,
    lines: bool,
) -> int:
    """Stream rows as one JSON array (``lines=False``) or as NDJSON; returns the row count.

    Must run inside a transaction (server-side cursors live in one).
    """
    encoder = msgspec.json.Encoder()
    row = row_type(keys)
    cursor = await conn.cursor(query, *args)
    rows = 0
    if not lines:
        await sink(b"[")
    pending = asyncio.ensure_future(cursor.fetch(BATCH))
    try:
        while batch := await pending:
            pending = asyncio.ensure_future(cursor.fetch(BATCH))
            await asyncio.sleep(0)  # let the fetch go out before encoding
            items = [row(*record) for record in batch]
            if lines:
                await sink(encoder.encode_lines(items))
            else:
                # The batch encoded as an array, brackets stripped, joined by commas.
                body = encoder.encode(items)[1:-1]
                await sink(body if rows == 0 else b"," + body)
            rows += len(batch)
            await progress(rows)
    finally:
        if not pending.done():
            pending.cancel()
    if not lines:
        await sink(b"]")
    return rows
