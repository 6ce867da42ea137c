"""A large sheet cut into parts and loaded typed by fastexcel reads exactly as calamine
reads it whole.

The reader (``readers.sheets``) serves each workbook twice here, in this process: once
with the sheet cut into parts (``readers.typed``, its thresholds lowered to cut these
small files into parts of a few rows) and once without. Everything it sends the worker
must be the same: the sheets' descriptions, every chunk of records, what it skipped.
Where the reader says ``again``, the worker reads the workbook again whole; so does this
test. And the parts must really have been used where the sheet is one they vouch for,
their records loaded by fastexcel, or by calamine where a part is not typed alike.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pytest
import xlsxwriter

from services.core.imports.readers import Limits, guard, sheets, typed, workbook
from services.core.imports.readers.layout import clean_headers, find_header
from tests import workbooks

LIMITS = Limits()
ROWS = 450  # more than the rows cut out for the sample (``typed.HEAD_ROWS``)
CHUNK_ROWS = 64


def write(
    path: Path, rows: list[list[Any]], *, first: tuple[int, int] = (0, 0), since_1904: bool = False
) -> None:
    """A sheet as Excel writes it (shared strings, date formats), from cell ``first``."""
    book = xlsxwriter.Workbook(str(path), {"date_1904": since_1904})
    sheet = book.add_worksheet("Orders")
    day = book.add_format({"num_format": "yyyy-mm-dd"})
    stamp = book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss.000"})
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            at = (first[0] + r, first[1] + c)
            if value is None:
                continue
            if isinstance(value, Serial):
                sheet.write_number(*at, value.number, stamp)
            elif isinstance(value, datetime):
                sheet.write_datetime(*at, value, stamp)
            elif isinstance(value, date):
                midnight = datetime(value.year, value.month, value.day)  # noqa: DTZ001 - no zone
                sheet.write_datetime(*at, midnight, day)
            else:
                sheet.write(*at, value)
    book.close()


def orders(count: int = ROWS) -> list[list[Any]]:
    header: list[Any] = ["Order Number", "Sale Date", "Item", "Sold For", "Paid", "Quantity"]
    body: list[list[Any]] = [
        [f"11-{i:05d}", date(2026, 1, 1 + i % 28), f"Lamp {i % 7}", i * 1.25, i % 2 == 0, i % 5]
        for i in range(count)
    ]
    return [header, *body]


def clean(path: Path) -> None:
    write(path, orders())


def placed(path: Path) -> None:
    write(path, [["Sales report"], [], *orders()], first=(3, 2))


def gaps(path: Path) -> None:
    rows = orders()
    for i in (40, 41, 300, *range(420, 436)):  # the last across parts
        rows[i] = [None] * 6  # blank rows
    rows[100] = ["11-x", None, None, None, None, None]  # a short row among records
    rows[200][3] = None  # an empty amount
    rows[201][1] = None  # an empty date
    write(path, [*rows, [], ["Total", None, None, 1234.5]])  # a footer of numbers


def extremes(path: Path) -> None:
    rows = orders()
    for i, value in enumerate([1e16, 1e-7, -0.0, 0.1 + 0.2, 123456789012345.0, -3.5]):
        rows[10 + i][3] = value
    write(path, rows)


def extra_cells(path: Path) -> None:
    rows = orders()
    rows[50] = [*rows[50], None, "a note right of the table"]
    rows[60][2] = None
    write(path, [[*rows[0], None], *rows[1:]])


def empty_column(path: Path) -> None:
    write(
        path, [[*row[:2], "Notes" if i == 0 else None, *row[2:]] for i, row in enumerate(orders())]
    )


def summary_first(path: Path) -> None:
    book = xlsxwriter.Workbook(str(path))
    book.add_worksheet("Summary").write_row(0, 0, ["Total", 12])
    data = book.add_worksheet("Orders")
    for r, row in enumerate(orders()):
        data.write_row(r, 0, [v.isoformat() if isinstance(v, date) else v for v in row])
    book.close()


def footer_text_under_amounts(path: Path) -> None:
    write(path, [*orders(), ["Total", None, None, "12 orders"]])


@dataclass
class Serial:
    """A date as the number a sheet stores, with a date and time format."""

    number: float


def times_of_day(path: Path) -> None:
    rows = orders()
    rows[300][1] = datetime(2026, 3, 1, 14, 30)  # noqa: DTZ001 - a sheet's time has no zone
    for i, row in enumerate(rows[1:100], start=1):  # to the millisecond, and half of one
        row[1] = Serial(46000 + i / 7 + (i % 3) / 2 / 86_400_000)
    write(path, rows)


def times_since_1904(path: Path) -> None:
    rows = orders()
    for i, row in enumerate(rows[1:], start=1):
        row[1] = Serial(40000 + i * 1.37)
    write(path, rows, since_1904=True)


def times_without_a_day(path: Path) -> None:
    rows = orders()
    rows[400][1] = Serial(0.75)  # 18:00, a time calamine gives as a time
    write(path, rows)


def text_far_down_a_number_column(path: Path) -> None:
    rows = orders()
    rows[420][5] = "five"  # beyond the rows fastexcel would guess a column's type from
    write(path, rows)


def text_early_in_a_number_column(path: Path) -> None:
    rows = orders()
    rows[10][5] = "five"  # in the first rows: not even loaded typed
    write(path, rows)


def edit_sheet(path: Path, edit: Any) -> None:
    """The workbook at ``path`` with its sheet's XML changed by ``edit``."""
    with zipfile.ZipFile(path) as zf:
        parts = {i.filename: zf.read(i) for i in zf.infolist()}
    sheet = parts["xl/worksheets/sheet1.xml"].decode()
    edited = edit(sheet)
    assert edited != sheet, "the edit applies"
    parts["xl/worksheets/sheet1.xml"] = edited.encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in parts.items():
            zf.writestr(name, data)
    path.write_bytes(out.getvalue())


def cell_naming_another_row(path: Path) -> None:
    """A cell whose reference names a row far below the one it is written in."""
    write(path, orders())
    edit_sheet(path, lambda xml: xml.replace('<c r="A3" ', '<c r="A900" ', 1))


def header_cell_written_last(path: Path) -> None:
    """A row 1 written again after the last row, one more header cell in it: calamine
    shows it in the header; the sheet's first rows, cut out, do not have it."""
    write(path, orders())
    extra = '<row r="1"><c r="G1" t="inlineStr"><is><t>Extra</t></is></c></row>'
    edit_sheet(path, lambda xml: xml.replace("</sheetData>", f"{extra}</sheetData>"))


def sample_cell_written_late(path: Path) -> None:
    """A cell naming row 2 written in row 421."""
    write(path, orders())
    edit_sheet(path, lambda xml: xml.replace('<c r="A421" ', '<c r="A2" ', 1))


def without_booleans(path: Path) -> None:
    """Text, numbers and days only: whole chunks go as Arrow's buffers."""
    rows = [[*row[:4], *row[5:]] for row in orders(700)]
    rows[530][2] = "  "  # a blank among text
    rows[540][2] = "\u3000"
    rows[600] = [None, None, " ", None, None]  # a blank row: that chunk read cell by cell
    write(path, rows)


def inline_strings(path: Path) -> None:
    path.write_bytes(workbooks.xlsx({"Orders": orders()}))


def column_a_empty_for_a_while(path: Path) -> None:
    rows = orders()
    for row in rows[410:440]:  # a part with nothing in column A to place its columns by
        row[0] = None
    write(path, rows)


def a_note_right_of_the_head(path: Path) -> None:
    rows = orders()
    rows[430] = [*rows[430], None, None, "a note further right than any before"]
    write(path, rows)


def a_comment_in_the_sheet(path: Path) -> None:
    write(path, orders())
    edit_sheet(path, lambda xml: xml.replace('<row r="420"', '<!-- hi --><row r="420"', 1))


def a_dimension_declaring_more_rows(path: Path) -> None:
    write(path, orders())
    edit_sheet(
        path, lambda xml: xml.replace('<dimension ref="A1:F451"/>', '<dimension ref="A1:F999"/>')
    )


def a_dimension_declaring_fewer_rows(path: Path) -> None:
    write(path, orders())
    edit_sheet(
        path, lambda xml: xml.replace('<dimension ref="A1:F451"/>', '<dimension ref="A1:F9"/>')
    )


def formatted_empty_rows_and_empty_formulas(path: Path) -> None:
    """Rows Excel writes for formatting only, and formulas that give "": cells calamine
    places, or rows without any, at the parts' edges."""
    write(path, orders())

    def edit(xml: str) -> str:
        for n in (405, 420, 421, 438):
            empty = f'<row r="{n}" ht="20" customHeight="1"/>'
            xml = re.sub(rf'<row r="{n}"[^>]*>.*?</row>', empty, xml)
        for n in (410, 437, 451):
            formula = f'<c r="F{n}" t="str"><f>""</f><v></v></c>'
            xml = re.sub(rf'<c r="F{n}"[^>]*>.*?</c>', formula, xml, count=1)
        return xml

    edit_sheet(path, edit)


def empty_formulas_right_of_the_head(path: Path) -> None:
    """Formulas giving "" in a column no row of the head has: the sheet is wider."""
    write(path, orders())

    def edit(xml: str) -> str:
        for n in (410, 437):
            formula = f'<c r="G{n}" t="str"><f>""</f><v></v></c>'
            xml = xml.replace(f'</row><row r="{n + 1}"', f'{formula}</row><row r="{n + 1}"')
        return xml

    edit_sheet(path, edit)


def inline_text_given_as_a_value(path: Path) -> None:
    """An inline-string cell written with ``<v>``: calamine keeps no value for it."""
    write(path, orders())
    edit_sheet(
        path,
        lambda xml: re.sub(
            r'<c r="A430"[^>]*>.*?</c>', '<c r="A430" t="inlineStr"><v>7</v></c>', xml, count=1
        ),
    )


def cells_naming_the_next_row(path: Path) -> None:
    """After the head, every cell names the row below its own: calamine places them there."""
    write(path, orders())

    def edit(xml: str) -> str:
        def shift(row: re.Match[str]) -> str:
            n = int(row[1])
            if n <= 410:
                return row[0]
            return re.sub(r'(<c r="[A-Z]+)(\d+)"', lambda c: f'{c[1]}{int(c[2]) + 1}"', row[0])

        return re.sub(r'<row r="(\d+)".*?</row>', shift, xml)

    edit_sheet(path, edit)


# How the sheet is read: in parts, all typed ("typed"), or some by calamine ("parts");
# the parts declined before anything was sent ("whole"), or after ("again").
SHAPES = {
    clean: "typed",
    placed: "whole",  # not from column A
    gaps: "typed",
    extremes: "typed",
    extra_cells: "typed",
    empty_column: "typed",
    summary_first: "typed",
    inline_strings: "typed",
    without_booleans: "typed",
    footer_text_under_amounts: "parts",  # a column of numbers and text: calamine's part
    times_of_day: "typed",  # both to the millisecond, from calamine's as_datetime
    times_since_1904: "typed",
    times_without_a_day: "parts",
    text_far_down_a_number_column: "parts",
    text_early_in_a_number_column: "typed",  # in the head, which calamine reads
    column_a_empty_for_a_while: "typed",  # its columns placed by their indices
    a_comment_in_the_sheet: "again",  # found after the head was read: declined late
    cell_naming_another_row: "again",  # the head's range reaches into the parts
    header_cell_written_last: "again",
    sample_cell_written_late: "again",
    a_note_right_of_the_head: "again",
    formatted_empty_rows_and_empty_formulas: "parts",  # "" among numbers: calamine's parts
    empty_formulas_right_of_the_head: "again",
    inline_text_given_as_a_value: "typed",
    cells_naming_the_next_row: "again",  # the declared last row is not where they end
    a_dimension_declaring_more_rows: "again",  # described as declared, found shorter
    a_dimension_declaring_fewer_rows: "typed",  # described once cut
}


def frames(data: bytes) -> list[dict[str, Any]]:
    found, at = [], 0
    while at < len(data):
        (size,) = sheets.FRAME.unpack_from(data, at)
        found.append(msgspec.msgpack.decode(data[at + 4 : at + 4 + size]))
        at += 4 + size
    for frame in found:  # as the worker reads them: text sent as Arrow's buffers or not
        if frame["t"] == "chunk":
            frame["columns"] = [as_text(column) for column in frame["columns"]]
    return [f for f in found if f["t"] != "loading"]  # when a sheet is loaded differs


def as_text(column: Any) -> list[str]:
    read = workbook._column(column)
    return list(read.to_pylist() if isinstance(read, pa.Array) else read)


def serve(path: Path, request: dict[str, Any] | None) -> list[dict[str, Any]]:
    inp = io.BytesIO()
    if request is not None:
        encoded = msgspec.msgpack.encode(request)
        inp = io.BytesIO(sheets.FRAME.pack(len(encoded)) + encoded)
    out = io.BytesIO()
    sheets.serve(path, "xlsx", LIMITS, inp, out, careful=False, scratch=path.parent)
    return frames(out.getvalue())


def read(path: Path, monkeypatch: pytest.MonkeyPatch, *, typed_load: bool) -> tuple[Any, str]:
    """What the reader sends for the workbook and for its orders' records, as the worker
    sees them; and how the sheet was read (see ``SHAPES``)."""
    monkeypatch.setattr(typed, "MIN_BYTES", 0 if typed_load else 1 << 62)
    monkeypatch.setattr(typed, "PART_BYTES", 1500)  # parts of a few rows
    monkeypatch.setattr(guard, "BLOCK", 997)  # unpacked in steps that end anywhere
    monkeypatch.setattr(typed, "STRINGS_SHARE", 0)
    pieces: list[str] = []
    load_typed, load_cells = typed.Parts._load_typed, typed.Parts._load_cells

    def loaded_typed(self: typed.Parts, cut: Any) -> Any:
        piece = load_typed(self, cut)
        pieces.append("typed" if piece is not None else "not typed")
        return piece

    def loaded_cells(self: typed.Parts, cut: Any) -> Any:
        piece = load_cells(self, cut)
        pieces.append("parts" if piece is not None else "not placed")
        return piece

    monkeypatch.setattr(typed.Parts, "_load_typed", loaded_typed)
    monkeypatch.setattr(typed.Parts, "_load_cells", loaded_cells)
    streamed = []
    batches = typed.Parts.batches

    def counted(self: typed.Parts, *args: Any) -> Any:
        streamed.append(True)
        return batches(self, *args)

    monkeypatch.setattr(typed.Parts, "batches", counted)
    (described,) = serve(path, None)
    doc = next(s for s in described["sheets"] if s["name"] == "Orders")
    sample = [(line, cells) for line, cells in doc["sample"]]
    index = find_header(sample)
    request = {
        "sheet": "Orders",
        "header_line": sample[index][0],
        "width": len(clean_headers(sample[index][1], LIMITS)),
        "chunk_rows": CHUNK_ROWS,
    }
    records = serve(path, request)
    if records[-1]["t"] == "again":
        return read(path, monkeypatch, typed_load=False)[0], "again"
    how = "whole" if not streamed else "parts" if "parts" in pieces else "typed"
    return [described, records], how


@pytest.fixture(scope="module", autouse=True)
def imports_ready() -> Iterator[None]:
    """This process reads as a reader process does, its imports done; then as before."""
    before = typed._warming, typed._available
    typed.prewarm()
    assert typed._ready(), "fastexcel and pyarrow are installed"
    yield
    typed._warming, typed._available = before


@pytest.mark.parametrize("shape", list(SHAPES), ids=[f.__name__ for f in SHAPES])
def test_a_sheet_loaded_typed_reads_as_calamine_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shape: Any
) -> None:
    path = tmp_path / "book.xlsx"
    shape(path)

    whole, plainly = read(path, monkeypatch, typed_load=False)
    loaded, how = read(path, monkeypatch, typed_load=True)

    assert plainly == "whole"
    assert loaded == whole
    records = sum(len(f["lines"]) for f in whole[1] if f["t"] == "chunk")
    assert records >= ROWS - 20  # the records were read, not refused
    assert how == SHAPES[shape]


@pytest.mark.parametrize("shape", [gaps, footer_text_under_amounts], ids=lambda f: f.__name__)
def test_parts_written_to_files_read_as_parts_kept_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shape: Any
) -> None:
    path = tmp_path / "book.xlsx"
    shape(path)
    in_memory, _ = read(path, monkeypatch, typed_load=True)
    monkeypatch.setattr(typed, "IN_MEMORY", 0)
    files: list[Path] = []
    load = typed.Parts._load_file

    def spied(self: typed.Parts, cut: Any) -> Any:
        files.append(cut.source)
        return load(self, cut)

    monkeypatch.setattr(typed.Parts, "_load_file", spied)
    on_disk, how = read(path, monkeypatch, typed_load=True)
    assert (on_disk, how) == (in_memory, SHAPES[shape])
    assert files
    assert all(isinstance(f, Path) and f.is_relative_to(tmp_path) for f in files)
    assert not list(tmp_path.glob("ferry-parts-*"))  # deleted with the reader's parts


def test_whole_chunks_of_text_numbers_and_days_go_as_arrow_buffers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "book.xlsx"
    without_booleans(path)
    sent = []
    arrow_batch = sheets.SheetRows._arrow_batch

    def spied(self: sheets.SheetRows, *args: Any) -> Any:
        chunk = arrow_batch(self, *args)
        sent.append(chunk is not None)
        return chunk

    monkeypatch.setattr(sheets.SheetRows, "_arrow_batch", spied)
    whole, _ = read(path, monkeypatch, typed_load=False)
    loaded, how = read(path, monkeypatch, typed_load=True)
    assert (loaded, how) == (whole, "typed")
    assert any(sent)  # the records after the head's, as Arrow's buffers


def test_a_reader_sending_arrow_buffers_does_not_import_pandas(tmp_path: Path) -> None:
    # pandas would cost every reader process 0.25 s and 50 MB: pyarrow imports it for its
    # compute functions and conversions, which the reader does without.
    path = tmp_path / "book.xlsx"
    without_booleans(path)
    script = f"""
import io, sys
import msgspec
from pathlib import Path
from services.core.imports.readers import Limits, sheets, typed
typed.MIN_BYTES, typed.PART_BYTES = 0, 1500
typed.prewarm()
ask = {{"sheet": "Orders", "header_line": 1, "width": 5, "chunk_rows": 64}}
request = msgspec.msgpack.encode(ask)
inp, out = io.BytesIO(sheets.FRAME.pack(len(request)) + request), io.BytesIO()
path, scratch = Path({str(path)!r}), Path({str(tmp_path)!r})
sheets.serve(path, "xlsx", Limits(), inp, out, careful=False, scratch=scratch)
sent = out.getvalue()
print(b"\\xa5again" not in sent and b"offsets" in sent, "pandas" in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split() == ["True", "False"]  # Arrow buffers sent; no pandas


def with_flagged_sheet(path: Path) -> None:
    """The sheet's zip entry marked encrypted: the guard cannot open it to cut it."""
    write(path, orders())
    data = bytearray(path.read_bytes())
    name = b"xl/worksheets/sheet1.xml"
    for header in (b"PK\x03\x04", b"PK\x01\x02"):  # the local and the central entry
        at = 0
        while (at := data.find(header, at)) >= 0:
            flags = at + (6 if header == b"PK\x03\x04" else 8)
            if name in data[at : at + 100]:
                data[flags] |= 1
            at += 4
    path.write_bytes(bytes(data))


def test_a_sheet_the_guard_never_hands_over_ends_the_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The parts are waited for only until the guard is done: a sheet it never cuts (an
    # entry it cannot open) ends in its error, not in a reader waiting for ever.
    path = tmp_path / "book.xlsx"
    with_flagged_sheet(path)
    monkeypatch.setattr(typed, "MIN_BYTES", 0)
    ended: list[BaseException | list[dict[str, Any]]] = []

    def run() -> None:
        try:
            ended.append(serve(path, None))
        except BaseException as exc:  # what the reader ends with
            ended.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the reader waits for parts that never come"
    assert isinstance(ended[0], RuntimeError), ended
    assert "encrypted" in str(ended[0])
