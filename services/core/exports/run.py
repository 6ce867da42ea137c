"""One export from start to end: a consistent snapshot, the row count, the chosen writer.

The api (direct downloads) and the worker (background jobs) both come through
here; they differ only in where the bytes go.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import msgspec

from services.core.datasets import Dataset
from services.core.datasets.sql import export_count, export_estimate, export_query
from services.core.db.pool import Connection
from services.core.exports.csv import write_csv
from services.core.exports.json import write_json
from services.core.exports.sink import Gzip, Progress, Sink, no_progress
from services.core.exports.spec import ExportSpec
from services.core.exports.xlsx import write_xlsx


@contextlib.asynccontextmanager
async def snapshot(conn: Connection) -> AsyncIterator[None]:
    """A read-only REPEATABLE READ transaction: the count and the rows see the same data.

    Dates print as ISO and times in UTC whatever the server's defaults are.
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute("SET LOCAL datestyle = 'ISO, YMD'; SET LOCAL timezone = 'UTC'")
        yield


async def count_rows(
    conn: Connection, ds: Dataset, spec: ExportSpec, org_id: str, *, limit: int
) -> int:
    """Rows the export will have, counted up to ``limit`` (call inside ``snapshot``).

    A freshly written table has no visibility map yet, so an index-only scan would
    fetch every row from the heap in index order; a bitmap or sequential scan reads
    each page once, and a settled table loses little by it.
    """
    sql, args = export_count(ds, org_id, spec.filters, limit=limit)
    await conn.execute("SET LOCAL enable_indexscan = off; SET LOCAL enable_indexonlyscan = off")
    count: int = await conn.fetchval(sql, *args)
    await conn.execute("RESET enable_indexscan; RESET enable_indexonlyscan")
    return count


# Up to this many rows a background export's progress total is counted exactly
# (a bounded read: a few hundredths of a second); above it the planner estimates.
EXACT_TOTAL_UP_TO = 50_000


async def progress_total(
    conn: Connection, ds: Dataset, spec: ExportSpec, org_id: str
) -> int | None:
    """The total a background export shows while it runs, never a second full scan.

    Counted exactly up to ``EXACT_TOTAL_UP_TO`` rows; beyond that PostgreSQL's
    estimate (free, as good as the statistics), or None when the planner guesses
    fewer rows than were just counted (a table never analyzed). Call inside
    ``snapshot``.
    """
    counted = await count_rows(conn, ds, spec, org_id, limit=EXACT_TOTAL_UP_TO + 1)
    if counted <= EXACT_TOTAL_UP_TO:
        return counted
    sql, args = export_estimate(ds, org_id, spec.filters)
    plan = await conn.fetchval(sql, *args)
    if isinstance(plan, str | bytes):
        plan = msgspec.json.decode(plan)
    estimate = int(plan[0]["Plan"]["Plan Rows"])
    return estimate if estimate > EXACT_TOTAL_UP_TO else None


async def write_export(
    conn: Connection,
    ds: Dataset,
    spec: ExportSpec,
    org_id: str,
    sink: Sink,
    *,
    progress: Progress = no_progress,
    xlsx_engine: str = "postgres",
    temp_dir: str | None = None,
) -> int:
    """Write the export's bytes to ``sink`` (call inside ``snapshot``); returns the row count."""
    fields = [ds.field(name) for name in spec.columns]
    gzip = Gzip(sink) if spec.compression == "gzip" else None
    out = gzip.write if gzip else sink
    escape = spec.escape_formulas
    if spec.format == "xlsx":
        rows = await write_xlsx(
            conn,
            ds,
            fields,
            org_id,
            spec.filters,
            out,
            progress,
            escape=escape,
            engine=xlsx_engine,
            temp_dir=temp_dir,
        )
    elif spec.format in ("csv", "parquet"):
        sql, args = export_query(ds, fields, org_id, spec.filters, mode="text", escape=escape)
        if spec.format == "csv":
            rows = await write_csv(conn, sql, args, out, progress)
        else:
            # Imported here: pyarrow is some 50 MiB an api serving no Parquet need not hold.
            from services.core.exports.parquet import write_parquet

            rows = await write_parquet(conn, sql, args, fields, out, progress)
    else:
        sql, args = export_query(ds, fields, org_id, spec.filters, mode="typed", escape=escape)
        keys = [f.name for f in fields]
        rows = await write_json(conn, sql, args, keys, out, progress, lines=spec.format == "ndjson")
    if gzip:
        await gzip.close()
    return rows
