"""JSON (one array) and NDJSON: a server-side cursor read in large batches, msgspec-encoded.

Keys are the field names (stable for programs); money is a JSON number of currency
units (``12.34``), dates are ``YYYY-MM-DD``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from services.core.db.pool import Connection
from services.core.exports.sink import Progress, Sink

BATCH = 5_000


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
    cursor = await conn.cursor(query, *args)
    rows = 0
    if not lines:
        await sink(b"[")
    while batch := await cursor.fetch(BATCH):
        items = [dict(zip(keys, record, strict=True)) for record in batch]
        if lines:
            await sink(encoder.encode_lines(items))
        else:
            # The batch encoded as an array, brackets stripped, joined by commas.
            body = encoder.encode(items)[1:-1]
            await sink(body if rows == 0 else b"," + body)
        rows += len(batch)
        await progress(rows)
    if not lines:
        await sink(b"]")
    return rows
