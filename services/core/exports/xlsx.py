"""XLSX in constant memory: PostgreSQL writes each row's sheet XML, Python only zips it.

Both engines write the same workbook: a bold, frozen header of labels; money as
numbers with a currency format; dates as dates; text always as string cells, never
formulas (and formula-like text neutralised, as in every format); column widths
from a sample of up to 1,000 rows.

- ``postgres`` (the default) streams ``COPY (SELECT '<row>…</row>') TO STDOUT``
  into the sheet's zip entry: no row becomes a Python object; deflate runs in a
  thread one block behind the COPY, and the file reaches the sink as it is written.
- ``xlsxwriter`` (``constant_memory``) is the reference: rows from a server-side
  cursor, written in a thread into a temp file that is then copied to the sink.

A sheet holds at most 1,048,576 rows; an export that would not fit fails with a
message instead of losing rows.

The reference engine's thread pulls its row batches from the event loop; it never
waits on the loop for long, and stops once the export is cancelled or the loop has
stopped, so it cannot outlive the loop (and hang the process's exit).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import re
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape as xml_escape
from xml.sax.saxutils import quoteattr

import msgspec

from services.core.datasets import Dataset
from services.core.datasets.registry import Field
from services.core.datasets.sql import export_expression, export_query, export_sample, export_select
from services.core.db.pool import Connection
from services.core.errors import InvalidInput
from services.core.exports.csv import copy_blocks
from services.core.exports.sink import Behind, Progress, Sink, Spool

SHEET = "Records"
MAX_WIDTH = 60
SAMPLE_ROWS = 1_000
MAX_ROWS = 1_048_575  # Excel's 1,048,576 rows, less the header
CURRENCY_FORMATS = {"USD": '"$"#,##0.00', "EUR": '#,##0.00 "€"', "GBP": '"£"#,##0.00'}
DATE_FORMAT = "yyyy-mm-dd"
DATETIME_FORMAT = "yyyy-mm-dd hh:mm:ss"
ENGINES = ("postgres", "xlsxwriter")

# Deflate level 1: the sheet XML is repetitive enough that higher levels gain a
# quarter in size for three times the CPU.
LEVEL = 1
BLOCK = 1024 * 1024
CHUNK = 1024 * 1024


class Sheet(msgspec.Struct, frozen=True):
    labels: list[str]
    types: list[str]
    widths: list[float]
    money_format: str


async def sheet_for(
    conn: Connection, ds: Dataset, fields: list[Field], org_id: str, filters: Mapping[str, Any]
) -> Sheet:
    """Labels, types and column widths (label or longest sampled value, within bounds)."""
    sql, args = export_sample(ds, fields, org_id, filters, rows=SAMPLE_ROWS)
    longest = list(await conn.fetchrow(sql, *args) or [0] * len(fields))
    widths = []
    for f, length in zip(fields, longest, strict=True):
        if f.type == "money":
            length += 3  # currency symbol and thousands separators
        elif f.type == "date":
            length = 10
        widths.append(float(min(max(len(f.label), length, 6) + 2, MAX_WIDTH)))
    return Sheet(
        labels=[f.label for f in fields],
        types=[f.type for f in fields],
        widths=widths,
        money_format=CURRENCY_FORMATS.get(ds.currency, CURRENCY_FORMATS["USD"]),
    )


async def write_xlsx(
    conn: Connection,
    ds: Dataset,
    fields: list[Field],
    org_id: str,
    filters: Mapping[str, Any],
    sink: Sink,
    progress: Progress,
    *,
    escape: bool = True,
    engine: str = "postgres",
    temp_dir: str | None = None,
) -> int:
    """Write the export as a workbook to ``sink``; returns the row count.

    Must run inside a transaction (the reference engine uses a server-side cursor).
    """
    sheet = await sheet_for(conn, ds, fields, org_id, filters)
    if engine == "xlsxwriter":
        sql, args = export_query(ds, fields, org_id, filters, mode="typed", escape=escape)
        rows = await _reference(
            conn, sql + f" LIMIT {MAX_ROWS + 1}", args, sheet, sink, progress, temp_dir
        )
    else:
        sql, args = export_select(ds, org_id, filters, row_xml(fields, escape=escape))
        rows = await _stream(conn, sql + f" LIMIT {MAX_ROWS + 1}", args, sheet, sink, progress)
    if rows > MAX_ROWS:
        raise InvalidInput(
            f"more than {MAX_ROWS:,} rows do not fit in one XLSX sheet; "
            "export CSV or Parquet, or narrow the filters",
            errors=[{"field": "format", "message": "too many rows for xlsx"}],
        )
    return rows


# --- postgres: the sheet XML written by the database --------------------------------------

# Styles (cellXfs) of xl/styles.xml: 1 bold header, 2 money, 3 date, 4 date-time.
BOLD, MONEY, DATE, DATETIME = 1, 2, 3, 4

# What COPY's text format escapes, and what XML cannot hold, is rare in real text:
# PostgreSQL escapes only & < > (one fast pass each) and Python mends the rest in
# the blocks that contain any. COPY writes tab, newline, CR and backslash as \t \n
# \r \\ (and \b \f \v); they become character references, or Excel's _xHHHH_
# escape for the controls XML forbids, which COPY passes raw. A literal _xHHHH_ is
# written _x005F_xHHHH_, or Excel would read it as an escape. Markup holds none of
# these, so every one found belongs to a value.
_COPY_ESCAPES = {b"\\": b"\\", b"t": b"&#9;", b"n": b"&#10;", b"r": b"&#13;"}
_COPY_ESCAPES |= {b"b": b"_x0008_", b"f": b"_x000C_", b"v": b"_x000B_"}
_RARE = re.compile(rb"\\(.)|[\x01-\x08\x0b-\x1f]")
_RARE_BYTES = b"\\" + bytes(range(1, 9)) + bytes(range(0x0B, 0x20))
_LITERAL = re.compile(rb"_(x[0-9A-Fa-f]{4}_)")


def _mend(match: re.Match[bytes]) -> bytes:
    if match[1] is not None:
        return _COPY_ESCAPES[match[1]]
    return b"_x%04X_" % match[0][0]


def mend(block: bytes) -> bytes:
    """COPY's text-format output of the row XML, made the XML Excel reads."""
    if b"_x" in block:
        block = _LITERAL.sub(rb"_x005F_\1", block)
    # translate() finds out in one pass at memory speed; the regex would take 20x that.
    if len(block.translate(None, _RARE_BYTES)) != len(block):
        block = _RARE.sub(_mend, block)
    return block


def _plain(values: list[str]) -> bool:
    """Enum values that need no escaping at all (checked once, not per row)."""
    return all(v == xml_escape(v) and v.isprintable() for v in values)


def _cell(f: Field, *, escape: bool) -> str:
    expr = export_expression(f, mode="text", escape=escape)
    if f.type in ("text", "enum"):
        value = expr
        if not (f.type == "enum" and _plain(f.values)):
            for char, ref in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;")):
                value = f"replace({value}, '{char}', '{ref}')"
        cell = f"""'<c t="inlineStr"><is><t xml:space="preserve">' || {value} || '</t></is></c>'"""
    elif f.type == "money":
        # float8 prints the shortest exact form (12.3), cheaper than numeric.
        cell = f"""'<c s="{MONEY}"><v>' || (({f.sql})::float8 / 100)::text || '</v></c>'"""
    elif f.type == "date":
        cell = f"""'<c s="{DATE}"><v>' || ({expr} - date '1899-12-30')::text || '</v></c>'"""
    elif f.type == "datetime":
        serial = f"(extract(epoch FROM {expr}) / 86400 + 25569)::float8::text"
        cell = f"""'<c s="{DATETIME}"><v>' || {serial} || '</v></c>'"""
    elif f.type == "bool":
        cell = f"""'<c t="b"><v>' || ({expr})::int::text || '</v></c>'"""
    else:
        cell = f"""'<c><v>' || ({expr})::text || '</v></c>'"""
    return f"coalesce({cell}, '<c/>')"  # an empty cell keeps the next ones in their columns


def row_xml(fields: list[Field], *, escape: bool) -> str:
    """The SQL expression of one ``<row>`` (cells without references: they follow in order)."""
    return " || ".join(["'<row>'", *(_cell(f, escape=escape) for f in fields), "'</row>'"])


_NS = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG = "http://schemas.openxmlformats.org/package/2006"
_XML = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml"


def _parts(sheet: Sheet) -> dict[str, str]:
    """Every part of the package but the sheet itself."""
    formats = (sheet.money_format, DATE_FORMAT, DATETIME_FORMAT)
    num_fmts = "".join(
        f"<numFmt numFmtId={quoteattr(str(164 + i))} formatCode={quoteattr(code)}/>"
        for i, code in enumerate(formats)
    )
    font = '<sz val="11"/><name val="Calibri"/><family val="2"/>'
    xf = 'fillId="0" borderId="0" xfId="0"'
    return {
        "[Content_Types].xml": _XML + f'<Types xmlns="{_PKG}/content-types">'
        '<Default Extension="rels" '
        'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        f'<Override PartName="/xl/workbook.xml" ContentType="{_TYPE}.sheet.main+xml"/>'
        f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{_TYPE}.worksheet+xml"/>'
        f'<Override PartName="/xl/styles.xml" ContentType="{_TYPE}.styles+xml"/></Types>',
        "_rels/.rels": _XML + f'<Relationships xmlns="{_PKG}/relationships">'
        f'<Relationship Id="rId1" Type="{_REL}/officeDocument" Target="xl/workbook.xml"/>'
        "</Relationships>",
        "xl/workbook.xml": _XML + f'<workbook {_NS} xmlns:r="{_REL}"><sheets>'
        f'<sheet name={quoteattr(SHEET)} sheetId="1" r:id="rId1"/></sheets></workbook>',
        "xl/_rels/workbook.xml.rels": _XML + f'<Relationships xmlns="{_PKG}/relationships">'
        f'<Relationship Id="rId1" Type="{_REL}/worksheet" Target="worksheets/sheet1.xml"/>'
        f'<Relationship Id="rId2" Type="{_REL}/styles" Target="styles.xml"/></Relationships>',
        "xl/styles.xml": _XML + f"<styleSheet {_NS}>"
        f'<numFmts count="3">{num_fmts}</numFmts>'
        f'<fonts count="2"><font>{font}</font><font><b/>{font}</font></fonts>'
        '<fills count="2"><fill><patternFill patternType="none"/></fill>'
        '<fill><patternFill patternType="gray125"/></fill></fills>'
        '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
        '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/>'
        "</cellStyleXfs>"
        f'<cellXfs count="5"><xf numFmtId="0" fontId="0" {xf}/>'
        f'<xf numFmtId="0" fontId="1" {xf} applyFont="1"/>'
        f'<xf numFmtId="164" fontId="0" {xf} applyNumberFormat="1"/>'
        f'<xf numFmtId="165" fontId="0" {xf} applyNumberFormat="1"/>'
        f'<xf numFmtId="166" fontId="0" {xf} applyNumberFormat="1"/></cellXfs>'
        '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
        "</styleSheet>",
    }


def _sheet_head(sheet: Sheet) -> str:
    cols = "".join(
        f'<col min="{i}" max="{i}" width="{w:g}" customWidth="1"/>'
        for i, w in enumerate(sheet.widths, 1)
    )
    header = "".join(
        f'<c t="inlineStr" s="{BOLD}"><is><t>{xml_escape(label)}</t></is></c>'
        for label in sheet.labels
    )
    return (
        _XML + f"<worksheet {_NS}><sheetViews>"
        '<sheetView tabSelected="1" workbookViewId="0">'
        '<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>'
        '<selection pane="bottomLeft"/></sheetView></sheetViews>'
        f'<sheetFormatPr defaultRowHeight="15"/><cols>{cols}</cols>'
        f"<sheetData><row>{header}</row>\n"
    )


async def _stream(
    conn: Connection, sql: str, args: list[Any], sheet: Sheet, sink: Sink, progress: Progress
) -> int:
    spool = Spool()
    behind = Behind(spool, sink)
    book = zipfile.ZipFile(spool, "w", zipfile.ZIP_DEFLATED, compresslevel=LEVEL)
    for name, text in _parts(sheet).items():
        book.writestr(name, text)
    entry = book.open("xl/worksheets/sheet1.xml", "w")
    entry.write(_sheet_head(sheet).encode())
    lines = 0

    def deflate(block: bytes) -> None:
        entry.write(mend(block))

    async def output(block: bytes) -> None:
        nonlocal lines
        lines += block.count(b"\n")  # one row per line: XML text has no raw newline
        await behind.run(deflate, block)
        await progress(lines)

    try:
        rows = await copy_blocks(conn, sql, args, output, block=BLOCK, format="text")
        await behind.wait()
        entry.write(b"</sheetData></worksheet>")
        entry.close()
        book.close()
        await behind.wait()
    finally:
        behind.close()
    return rows


# --- xlsxwriter: the reference engine ------------------------------------------------------

BATCH = 5_000
WAIT_STEP = 0.5  # seconds the writer thread waits for a batch before looking at the loop
Batches = Iterator[list[Any]]


class Stopped(Exception):
    """The export was cancelled while the writer thread was running."""


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


def _result(
    future: concurrent.futures.Future[list[Any]],
    loop: asyncio.AbstractEventLoop,
    stop: threading.Event | None = None,
) -> list[Any]:
    """The batch a fetch on ``loop`` returns; Stopped once ``stop`` is set or the loop
    no longer runs (nobody would ever complete the fetch)."""
    while True:
        if (stop is not None and stop.is_set()) or not loop.is_running():
            raise Stopped
        with contextlib.suppress(concurrent.futures.TimeoutError):
            return future.result(timeout=WAIT_STEP)


async def _reference(
    conn: Connection,
    sql: str,
    args: list[Any],
    sheet: Sheet,
    sink: Sink,
    progress: Progress,
    temp_dir: str | None,
) -> int:
    with temp_path(".xlsx", temp_dir) as path:
        rows = await _write_file(conn, sql, args, sheet, path, progress)
        with open(path, "rb") as fh:  # noqa: ASYNC230 - chunks are read in a thread
            while chunk := await asyncio.to_thread(fh.read, CHUNK):
                await sink(chunk)
    return rows


@contextlib.contextmanager
def temp_path(suffix: str, directory: str | None = None) -> Iterator[Path]:
    """A temp file name, removed afterwards whatever happens."""
    fd, name = tempfile.mkstemp(suffix=suffix, prefix="ferry-export-", dir=directory)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


async def _write_file(
    conn: Connection, sql: str, args: list[Any], sheet: Sheet, path: Path, progress: Progress
) -> int:
    """Rows from a server-side cursor into xlsxwriter in a thread; at most two batches in memory."""
    loop = asyncio.get_running_loop()
    cursor = await conn.cursor(sql, *args)
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
                batch = _result(pending, loop, stop)
                pending = None
                if not batch:
                    return
                if len(batch) == BATCH:
                    pending = asyncio.run_coroutine_threadsafe(fetch(), loop)
                yield batch
        finally:
            if pending is not None:  # never leave a fetch running on a connection we give back
                with contextlib.suppress(Exception):
                    _result(pending, loop)

    writing = loop.run_in_executor(None, write_with_xlsxwriter, path, sheet, batches())
    try:
        await asyncio.shield(writing)
    except asyncio.CancelledError:
        # Stop the thread before the cursor's connection goes back to the pool.
        stop.set()
        with contextlib.suppress(Exception):
            await writing
        raise
    return rows
