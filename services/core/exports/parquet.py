"""Parquet: COPY's CSV typed by Arrow's parser, one row group per block, for analysts.

Columns are named by field name (as JSON keys) and typed: text and enums as
``string``, ints as ``int64``, money as ``decimal128(12, 2)``, dates as ``date32``,
date-times as ``timestamp[us, UTC]``, bools as ``bool``. PostgreSQL formats the
values exactly as for CSV (computed fields and formula neutralising included);
Arrow's C++ parser types each block in a thread one block behind COPY, and each
block is written as a row group straight to the sink, so memory holds two blocks
whatever the size of the export.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from services.core.datasets.registry import Field
from services.core.db.pool import Connection
from services.core.exports.csv import copy_blocks
from services.core.exports.sink import Behind, Progress, Sink, Spool

ARROW_TYPES: dict[str, pa.DataType] = {
    "text": pa.string(),
    "enum": pa.string(),
    "int": pa.int64(),
    "money": pa.decimal128(12, 2),
    "date": pa.date32(),
    "datetime": pa.timestamp("us", tz="UTC"),
    "bool": pa.bool_(),
}
# About 45,000 rows of the demo dataset: a row group large enough to compress and
# scan well, small enough to keep memory flat (measured: larger blocks and Arrow's
# own threads leave the allocator holding more at a million rows than at 100,000).
BLOCK = 4 * 1024 * 1024


async def write_parquet(
    conn: Connection,
    query: str,
    args: list[Any],
    fields: list[Field],
    sink: Sink,
    progress: Progress,
) -> int:
    """Write the query's rows (its CSV text form) as a Parquet file; returns the row count."""
    schema = pa.schema([pa.field(f.name, ARROW_TYPES[f.type]) for f in fields])
    read = pacsv.ReadOptions(column_names=schema.names, use_threads=False)
    # COPY writes NULL as an empty field and an empty string as "": only the first
    # is null, and a text that reads "NULL" or "NA" stays text.
    convert = pacsv.ConvertOptions(
        column_types=schema,
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        true_values=["t"],
        false_values=["f"],
    )
    parse = pacsv.ParseOptions(newlines_in_values=True)
    spool = Spool()
    writer = pq.ParquetWriter(spool, schema)
    behind = Behind(spool, sink)
    lines = 0

    def encode(block: bytes) -> None:
        table = pacsv.read_csv(
            pa.py_buffer(block), read_options=read, parse_options=parse, convert_options=convert
        )
        writer.write_table(table)

    async def output(block: bytes) -> None:
        nonlocal lines
        lines += block.count(b"\n")  # an estimate (quoted newlines); COPY's count is exact
        await behind.run(encode, block)
        await progress(lines)

    try:
        rows = await copy_blocks(
            conn, query, args, output, block=BLOCK, format="csv", encoding="utf-8"
        )
        await behind.wait()
        writer.close()
        await behind.wait()
    finally:
        behind.close()
    await progress(rows)
    return rows
