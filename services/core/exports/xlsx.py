"""XLSX in constant memory: rows from a server-side cursor into a temp file.

Two engines behind one interface, both writing the same workbook: a bold, frozen
header of labels; money as numbers with a currency format; dates as dates; text
always as text cells, never as formulas. ``rust`` (rustpy-xlsxwriter, a Rust
writer fed by a generator) is several times faster than ``xlsxwriter``
(``constant_memory``), the reference. Both write from a thread, so the event loop
keeps heartbeats and cancellation going; the thread pulls row batches from the
loop, so at most two batches are in memory at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import msgspec

from services.core.datasets.registry import Field
from services.core.db.pool import Connection
from services.core.exports.sink import Progress

BATCH = 5_000
SHEET = "Records"
MAX_WIDTH = 60
CURRENCY_FORMATS = {"USD": '"$"#,##0.00', "EUR": '#,##0.00 "€"', "GBP": '"£"#,##0.00'}
DATE_FORMAT = "yyyy-mm-dd"
DATETIME_FORMAT = "yyyy-mm-dd hh:mm:ss"


class Stopped(Exception):
    """The export was cancelled while the writer thread was running."""


class Sheet(msgspec.Struct, frozen=True):
    labels: list[str]
    types: list[str]
    widths: list[float]
    money_format: str


Batches = Iterator[list[Any]]
Engine = Callable[[Path, Sheet, Batches], None]


def _widths(fields: list[Field], sample: list[Any]) -> list[float]:
    """Label or longest value of the first batch, within sensible bounds."""
    widths = []
    for i, f in enumerate(fields):
        longest = max((len(str(row[i])) for row in sample if row[i] is not None), default=0)
        if f.type == "money":
            longest += 3  # currency symbol and thousands separators
        elif f.type == "date":
            longest = 10
        widths.append(float(min(max(len(f.label), longest, 6) + 2, MAX_WIDTH)))
    return widths


def write_with_rust(path: Path, sheet: Sheet, batches: Batches) -> None:
    import rustpy_xlsxwriter as rx

    labels = sheet.labels
    formats: dict[str, Any] = {}
    for label, kind in zip(labels, sheet.types, strict=True):
        if kind == "money":
            formats[label] = rx.Format().set_num_format(sheet.money_format)
        elif kind == "date":
            formats[label] = rx.Format().set_num_format(DATE_FORMAT)
        elif kind == "datetime":
            formats[label] = rx.Format().set_num_format(DATETIME_FORMAT)
    naive = [i for i, kind in enumerate(sheet.types) if kind == "datetime"]

    def records() -> Iterator[dict[str, Any]]:
        for batch in batches:
            for row in batch:
                if naive:
                    row = list(row)
                    for i in naive:
                        if row[i] is not None:
                            row[i] = row[i].astimezone(UTC).replace(tzinfo=None)
                yield dict(zip(labels, row, strict=True))

    (
        rx.FastExcel(str(path))
        .format(bold_headers=True)
        .freeze(row=1)
        .sheet(
            SHEET,
            records(),
            column_formats=formats,
            column_widths=dict(zip(labels, sheet.widths, strict=True)),
        )
        .save()
    )


def write_with_xlsxwriter(path: Path, sheet: Sheet, batches: Batches) -> None:
    import xlsxwriter

    options = {
        "constant_memory": True,
        "strings_to_formulas": False,
        "strings_to_numbers": False,
        "strings_to_urls": False,
        "remove_timezone": True,
    }
    workbook = xlsxwriter.Workbook(str(path), options)
    try:
        ws = workbook.add_worksheet(SHEET)
        bold = workbook.add_format({"bold": True})
        cell_formats = {
            "money": workbook.add_format({"num_format": sheet.money_format}),
            "date": workbook.add_format({"num_format": DATE_FORMAT}),
            "datetime": workbook.add_format({"num_format": DATETIME_FORMAT}),
        }
        writers: list[Callable[[int, int, Any], Any]] = []
        for i, kind in enumerate(sheet.types):
            fmt = cell_formats.get(kind)
            ws.set_column(i, i, sheet.widths[i])
            if kind in ("money", "int"):
                writers.append(functools.partial(ws.write_number, cell_format=fmt))
            elif kind in ("date", "datetime"):
                writers.append(functools.partial(ws.write_datetime, cell_format=fmt))
            elif kind == "bool":
                writers.append(ws.write_boolean)
            else:
                writers.append(ws.write_string)
        ws.freeze_panes(1, 0)
        for c, label in enumerate(sheet.labels):
            ws.write_string(0, c, label, bold)
        r = 0
        for batch in batches:
            for row in batch:
                r += 1
                for c, value in enumerate(row):
                    if value is not None:
                        writers[c](r, c, value)
    finally:
        workbook.close()


ENGINES: dict[str, Engine] = {"rust": write_with_rust, "xlsxwriter": write_with_xlsxwriter}


async def write_xlsx(
    conn: Connection,
    query: str,
    args: list[Any],
    fields: list[Field],
    path: Path,
    progress: Progress,
    *,
    engine: str = "rust",
    money_format: str = CURRENCY_FORMATS["USD"],
) -> int:
    """Write the query's rows to ``path`` as a workbook; returns the row count.

    Must run inside a transaction (server-side cursor).
    """
    loop = asyncio.get_running_loop()
    cursor = await conn.cursor(query, *args)
    first = await cursor.fetch(BATCH)
    rows = len(first)
    await progress(rows)
    stop = threading.Event()

    async def fetch() -> list[Any]:
        nonlocal rows
        batch = await cursor.fetch(BATCH)
        rows += len(batch)
        await progress(rows)
        return batch

    def batches() -> Batches:
        # The next batch is fetched on the loop while the writer works on this one.
        pending = asyncio.run_coroutine_threadsafe(fetch(), loop) if len(first) == BATCH else None
        try:
            if first:
                yield first
            while pending is not None:
                if stop.is_set():
                    raise Stopped
                batch = pending.result()
                pending = None
                if not batch:
                    return
                if len(batch) == BATCH:
                    pending = asyncio.run_coroutine_threadsafe(fetch(), loop)
                yield batch
        finally:
            if pending is not None:  # never leave a fetch running on a connection we give back
                with contextlib.suppress(Exception):
                    pending.result()

    sheet = Sheet(
        labels=[f.label for f in fields],
        types=[f.type for f in fields],
        widths=_widths(fields, first[:1000]),
        money_format=money_format,
    )
    writing = loop.run_in_executor(None, ENGINES[engine], path, sheet, batches())
    try:
        await asyncio.shield(writing)
    except asyncio.CancelledError:
        # Stop the thread before the cursor's connection goes back to the pool.
        stop.set()
        with contextlib.suppress(Exception):
            await writing
        raise
    return rows
