"""A large xlsx sheet loaded by fastexcel, as typed columns, beside the guard.

python-calamine turns every cell of a sheet into a Rust value for Python to fetch; a
100,000-row sheet takes it 0.9 s. fastexcel, calamine underneath too, loads the same
sheet into Arrow columns, one type per column, in 0.45 s. What it must be told is where
the records start, and that is the worker's to find, from the sheet's first rows. So,
in the reader process (``readers.sheets``), for the largest sheet of an xlsx:

1. the sheet's first rows are cut out into a small workbook of their own, which
   python-calamine reads: the sample the worker chooses the header row from, as it
   would read it from the whole sheet;
2. the header row is found in that sample as the worker will find it
   (``layout.find_header``), and fastexcel loads the rows below it, in a thread, while
   the guard scans the file;
3. the records are handed to ``SheetRows`` as the columns calamine would have given:
   text, numbers, dates, booleans, and ``""`` for an empty cell.

What this path cannot vouch for is read by calamine as before, whole: a column of mixed
types (a footer's text under amounts; fastexcel refuses those, ``strict``), an error
cell, a time without a day (calamine gives it as a time), a sheet whose first rows and
whole disagree (the records below the header are compared), a request for another
sheet or header row. The worker cannot tell the two paths apart. (Dates with times
agree to the millisecond: both take them from calamine's ``as_datetime``.)

fastexcel and pyarrow are imported while a spare reader waits (``prewarm``; it then
waits at about 100 MB; nothing here makes pyarrow import pandas, another 50). A reader opening a
workbook carefully is started without them (``readers.workbook``): their libraries
take about 250 MB of the address space its limit allows.
"""

from __future__ import annotations

import io
import itertools
import logging
import shutil
import threading
import zipfile
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

from services.core.errors import InvalidInput
from services.core.imports.readers import guard
from services.core.imports.readers.layout import SAMPLE_ROWS, Limits, clean_headers, find_header

# A sheet part smaller than this (unpacked) is read by calamine: it takes little time.
MIN_BYTES = 4 * 1024 * 1024
# Rows cut out for the sample: enough for the sample's rows after leading empty ones
# (the guard looks for cells after them naming rows among them).
HEAD_ROWS = guard.HEAD_ROWS
HEAD_MAX_BYTES = 16 * 1024 * 1024
BLOCK = 64 * 1024
_ROW_END = b"</row>"
# Stamps from the day after any a number below 1 can be, to before year 10,000.
_STAMPS = ("1904-01-02", "10000-01-01")
_PLACEHOLDER = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
    b"<sheetData/></worksheet>"
)

_warming: threading.Thread | None = None
_available = False


def prewarm() -> None:
    """Import fastexcel and pyarrow in a thread, while the reader waits for a workbook:
    a workbook arriving meanwhile is read at once, and only a sheet large enough for
    this path waits for the imports. Without them (or under a memory limit too tight
    for their libraries), every sheet is read by calamine."""
    global _warming
    _warming = threading.Thread(target=_warm, name="typed-imports", daemon=True)
    _warming.start()


def _warm() -> None:
    global _available
    # Its notes ("falling back to string") would end on the reader's stderr, which is
    # what the worker quotes if the reader dies.
    logging.getLogger("fastexcel").setLevel(logging.ERROR)
    try:
        import fastexcel  # noqa: F401
        import numpy  # noqa: F401
        import pyarrow  # noqa: F401
    except (ImportError, MemoryError, OSError):
        return
    _available = True


def _ready() -> bool:
    if _warming is not None:
        _warming.join()
    return _available


def candidate(path: Path, kind: str, limits: Limits) -> tuple[str, str] | None:
    """The sheet to load typed (name, part): an xlsx's largest, if it is large enough.

    Not in a zip the guard is about to refuse for its sizes: the head copies its parts."""
    if _warming is None or kind != "xlsx":
        return None
    try:
        with zipfile.ZipFile(path) as zf:
            guard.check_sizes(zf.infolist(), limits)
            parts = guard.xlsx_sheet_parts(zf)
            sizes = {name: zf.getinfo(part).file_size for name, part in parts.items()}
    except Exception:  # the guard and calamine say what is wrong with the file
        return None
    if not sizes:
        return None
    name = max(sizes, key=lambda n: sizes[n])
    if sizes[name] < MIN_BYTES or not _ready():
        return None
    return name, parts[name]


def start(path: Path, sheet: tuple[str, str], limits: Limits) -> Preload | None:
    """Start loading the ``candidate`` sheet typed, once its first rows are read; None
    if it cannot be."""
    preload = Preload(path, sheet, limits)
    return preload if preload.started else None


def _head_xml(zf: zipfile.ZipFile, part: str) -> bytes | None:
    """The part's XML up to the end of its ``HEAD_ROWS``-th row, closed; None when the
    whole part is that short, or its rows are not written as every program writes them."""
    data, ends, tail = bytearray(), 0, b""
    with zf.open(part) as fh:
        while ends < HEAD_ROWS:
            block = fh.read(BLOCK)
            if not block or len(data) > HEAD_MAX_BYTES:
                return None
            ends += (tail + block).count(_ROW_END)
            tail = block[-(len(_ROW_END) - 1) :]
            data += block
    cut = -1
    for _ in range(HEAD_ROWS):
        cut = data.index(_ROW_END, cut + 1)
    head = bytes(data[: cut + len(_ROW_END)])
    if b"<sheetData>" not in head or b"</sheetData>" in head:
        return None  # a prefixed namespace, or not where rows are
    return head + b"</sheetData></worksheet>"


def _head_workbook(zf: zipfile.ZipFile, part: str) -> bytes | None:
    """A workbook of the sheet's first rows, in memory: the parts calamine reads (the
    workbook, its relationships, styles, shared strings), every other sheet empty, no
    drawings or media; None if the sheet cannot be cut so."""
    head = _head_xml(zf, part)
    if head is None:
        return None
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as book:
        for info in zf.infolist():
            name = info.filename
            if name == part:
                book.writestr(name, head)
            elif guard.is_sheet_part("xlsx", name):
                book.writestr(name, _PLACEHOLDER)
            elif name.endswith((".xml", ".rels")) and not name.startswith(_NOT_READ):
                with zf.open(info) as src, book.open(name, "w") as copy:
                    shutil.copyfileobj(src, copy, 1024 * 1024)
    return out.getvalue()


# Parts calamine does not read for a sheet's values.
_NOT_READ = ("xl/drawings/", "xl/charts/", "xl/media/", "xl/theme/", "docProps/", "customXml/")


class Preload:
    """The sheet's first rows read by calamine, and the rows below its header loading
    in fastexcel, in a thread."""

    def __init__(self, path: Path, sheet: tuple[str, str], limits: Limits) -> None:
        self.path = path
        self.sheet, self.part = sheet
        self.started = False
        self._header = threading.Event()  # the header line is known, or never will be
        self._done = threading.Event()
        self._failed = False
        self._table: Any = None
        self._total_height = 0
        self._sheet_width = 0
        # fastexcel opens the workbook (its shared strings) while the head is read.
        thread = threading.Thread(target=self._load, args=(path,), name="typed", daemon=True)
        thread.start()
        try:
            self.started = self._read_head(limits)
        finally:
            self._header.set()

    def _read_head(self, limits: Limits) -> bool:
        """The sheet's first rows, cut out and read by calamine, and the header in them;
        False if the sheet is not to be loaded typed."""
        import python_calamine

        from services.core.imports.readers.sheets import sample_of

        try:
            with zipfile.ZipFile(self.path) as zf:
                head = _head_workbook(zf, self.part)
            if head is None:
                return False
            book = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(head))
            loaded = book.get_sheet_by_name(self.sheet)
        except Exception:  # the guard and calamine say what is wrong; read it whole
            return False
        if not loaded.start:
            return False
        self.first_row, self._first_col = loaded.start
        sample = [(line, cells) for line, cells in sample_of(loaded)["sample"]]
        self._head_rows = [cells for _, cells in sample]
        index = find_header(sample)
        if index < 0:
            return False
        try:
            self.width = len(clean_headers(sample[index][1], limits))
        except InvalidInput:
            return False
        self.header_index = index
        self.header_line = sample[index][0]
        # The sample's records as calamine gives them (``iter_rows`` counts from row 1).
        below = itertools.islice(loaded.iter_rows(), self.header_line, self.first_row + SAMPLE_ROWS)
        return not _mixed(below)  # fastexcel would refuse it, after loading it all

    def _load(self, path: Path) -> None:
        try:
            import fastexcel

            reader = fastexcel.read_excel(str(path))
            self._header.wait()
            if not self.started:
                return
            sheet = reader.load_sheet(
                self.sheet,
                header_row=None,
                skip_rows=self.header_line,  # rows counted from the sheet's first
                dtype_coercion="strict",
                schema_sample_rows=None,
            )
            table, errors = sheet.to_arrow_with_errors()
            if errors is None:
                self._table = table
                self._total_height = sheet.total_height
                self._sheet_width = sheet.width
            else:
                self._failed = True
        except BaseException:  # mixed types, a panic, memory: the sheet is read whole
            self._failed = True
        finally:
            self._done.set()

    def describe(self, used: guard.UsedRange | None) -> dict[str, Any] | None:
        """The sheet's description as ``sheets.sample_of`` gives it, once the typed load
        agrees with the sample; None to read the sheet whole instead."""
        self._done.wait()
        if self._failed or self._table is None or used is None or used.empty:
            return None
        # The guard's range can only start earlier than calamine's (it counts empty cells
        # too); where it starts on the head's first cell, so does the whole sheet's.
        start = (used.first_row, used.first_col)
        if start != (self.first_row, self._first_col) or not self._convertible():
            return None
        # A cell written after the head but naming a row of the sample (the guard looks
        # below row 1,000): calamine would show it in the sample, the head does not.
        sample_end = self.first_row + SAMPLE_ROWS
        late = used.late_row is not None and used.late_row < sample_end
        if not used.quick_only or late or sample_end > guard.LOW_ROWS:
            return None
        width = self._sheet_width
        height = self._total_height - self.first_row
        if len(self._head_rows) < min(SAMPLE_ROWS, height):
            return None  # the head ended before the sample would
        rows = [row + [""] * (width - len(row)) for row in self._head_rows]
        if any(len(row) > width for row in rows) or not self._agrees(rows):
            return None
        return {
            "first_row": self.first_row,
            "height": height,
            "width": width,
            "sample": [[self.first_row + i + 1, row] for i, row in enumerate(rows)],
        }

    def _convertible(self) -> bool:
        """Every column is of a type converted here as calamine gives it."""
        import numpy as np
        import pyarrow as pa

        for column in self._table.columns:
            kind = column.type
            if pa.types.is_timestamp(kind):
                stamps = _stamps(column)
                stamps = stamps[~np.isnat(stamps)]
                # calamine gives a time for a number below 1 (a day before 1900, or on
                # 1904-01-01 in a workbook counting from 1904), a number beyond 9999
                bounds = np.array(_STAMPS, dtype="datetime64[ms]")
                if len(stamps) and not (bounds[0] <= stamps.min() and stamps.max() < bounds[1]):
                    return False
            elif not (
                pa.types.is_string(kind)
                or pa.types.is_large_string(kind)
                or pa.types.is_float64(kind)
                or pa.types.is_boolean(kind)
                or pa.types.is_null(kind)
            ):
                return False
        return True

    def _agrees(self, rows: list[list[str]]) -> bool:
        """The head's rows below the header are the typed load's first rows, cell by cell."""
        below = rows[self.header_index + 1 :]
        if not below:
            return False
        from services.core.imports.readers.sheets import cell_text

        first = next(self.batches(len(below)), [])
        typed = [[cell_text(v) for v in row] for row in zip(*first, strict=True)]
        return typed == below

    def release(self) -> None:
        """Let the typed load go: the sheet is to be read whole, by calamine."""
        self._table = None

    def within(self, used: guard.UsedRange) -> bool:
        """The loaded range lies in ``used`` (a quick guard's range is then right)."""
        last_col = self._first_col + self._sheet_width - 1
        return (
            used.last_row >= self._total_height - 1
            and used.first_col <= self._first_col
            and used.last_col >= last_col
        )

    def matches(self, request: dict[str, Any]) -> bool:
        """The worker asks for what was loaded: this sheet, below this header."""
        return (
            self._table is not None
            and request["sheet"] == self.sheet
            and request["header_line"] == self.header_line
            and request["width"] == self.width
        )

    def batches(self, rows: int) -> Iterator[list[tuple[Any, ...]]]:
        """The records in batches of ``rows``, as columns of calamine's values."""
        table = self._table
        for offset in range(0, table.num_rows, rows):
            part = table.slice(offset, rows)
            yield [_values(column) for column in part.columns]


def _per_day(kind: Any) -> int:
    """Ticks of a timestamp type in a day."""
    return 86_400 * {"s": 1, "ms": 1000, "us": 10**6, "ns": 10**9}[kind.unit]


def _values(column: Any) -> tuple[Any, ...]:
    """A column as calamine's cells: str, float, bool, date or datetime; ``""`` if empty."""
    import numpy as np
    import pyarrow as pa

    kind = column.type
    if pa.types.is_null(kind):
        return ("",) * len(column)
    if pa.types.is_timestamp(kind):
        # calamine gives a date for a whole day number, else a date and time (to the
        # millisecond, as fastexcel); a midnight shows the same as either.
        stamps = _stamps(column)
        ticks = stamps[~np.isnat(stamps)].astype(np.int64)
        whole = not (ticks % _per_day(kind)).any()
        values = stamps.astype("datetime64[D]").tolist() if whole else column.to_pylist()
    else:
        values = column.to_pylist()
    if column.null_count:
        return tuple(["" if v is None else v for v in values])
    return tuple(values)


def _stamps(column: Any) -> Any:
    """A timestamp column as numpy's datetime64, NaT where empty, read from its buffers:
    pyarrow's own conversion imports pandas (50 MB) for it."""
    import numpy as np

    validity, data = column.buffers()
    at = slice(column.offset, column.offset + len(column))
    stamps = np.frombuffer(data, dtype=np.int64)[at].view(f"datetime64[{column.type.unit}]")
    if column.null_count:
        first, bit = divmod(column.offset, 8)
        bits = np.frombuffer(validity, np.uint8)[first : first + (bit + len(column) + 7) // 8]
        valid = np.unpackbits(bits, bitorder="little")[bit : bit + len(column)]
        stamps = np.where(valid.astype(bool), stamps, np.datetime64("NaT"))
    return stamps


def _mixed(rows: Iterator[list[Any]]) -> bool:
    """Some column of these rows holds values of two types (text and numbers, say)."""
    kinds: dict[int, set[type]] = {}
    for row in rows:
        for index, value in enumerate(row):
            if value != "":
                kinds.setdefault(index, set()).add(_KINDS.get(type(value), str))
    return any(len(found) > 1 for found in kinds.values())


_KINDS: dict[type, type] = {float: float, int: float, bool: bool, date: date, datetime: date}
