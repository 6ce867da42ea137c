"""A large xlsx sheet read in parts, as typed columns, while the rest is still unpacked.

python-calamine turns every cell of a sheet into a Rust value for Python to fetch; a
100,000-row sheet takes it 0.5-0.9 s, and nothing of it can be used until all of it is
parsed. So, in the reader process (``readers.sheets``), the largest sheet of an xlsx is
cut where its rows begin, as the guard unpacks it (``Parts.cut``, called by
``guard.check_zip`` in place of its scan of that sheet):

1. its first ``HEAD_ROWS`` rows become a small workbook of their own, which
   python-calamine reads: the sample the worker chooses the header row from, and the
   first records, exactly as it would read them from the whole sheet. The sheet is
   described then, its height as it declares it (``<dimension>``), checked at the end;
2. the rows below, about ``PART_BYTES`` at a time, become workbooks too (in memory up
   to ``IN_MEMORY``, else in the worker's scratch folder; with the workbook's styles and
   shared strings), and two threads load them with fastexcel into Arrow columns, one
   type per column, while the records of the ones before are sent: the worker checks
   the first records while the last are still being parsed;
3. the records are handed to ``SheetRows`` as the columns calamine would have given
   (text, numbers, dates, booleans, ``""`` for an empty cell), or, for a whole chunk
   of regular rows, as Arrow's own buffers (``wire``).

A part fastexcel cannot vouch for (a column of mixed types, a footer's text under
amounts; an error cell; a time without a day; no value in column A to place its
columns by) is read by python-calamine instead: the same cells, the same values. Each
part is checked against where it was cut: its cells must fill the rows its first and
last row with a value name, no column may lie right of the head's, and the last row
must be where the sheet said. A sheet that breaks that (cells naming another part's
rows, say) ends the stream with ``again``, and the worker reads the workbook again
without this path (``readers.workbook``). So does the worker's asking for another
header row. The worker cannot tell the paths apart.

fastexcel and pyarrow are imported while a spare reader waits (``prewarm``; it then
waits at about 100 MB). Nothing here may make pyarrow import pandas (another 0.25 s and
50 MB): no compute function, no conversion of pyarrow's own. A reader opening a
workbook carefully is started without them (``readers.workbook``): their libraries
take about 250 MB of the address space its limit allows.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import itertools
import logging
import queue
import re
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.core.errors import InvalidInput
from services.core.imports.readers import guard
from services.core.imports.readers.layout import SAMPLE_ROWS, Limits, clean_headers, find_header

# A sheet part smaller than this (unpacked) is read by calamine: it takes little time.
MIN_BYTES = 4 * 1024 * 1024
# Rows cut out for the sample: enough for the sample's rows after leading empty ones.
HEAD_ROWS = 400
# A part's XML: about 10,000 rows of nine columns. Each part copies the workbook's other
# parts, and its load parses the shared strings again: a part is at least
# ``STRINGS_SHARE`` times their size.
PART_BYTES = 4 * 1024 * 1024
STRINGS_SHARE = 20
MAX_PART_BYTES = 64 * 1024 * 1024
# A head larger than this (rows of megabytes each) is not cut out: calamine reads the sheet.
HEAD_MAX_BYTES = 16 * 1024 * 1024
# Parts loaded and not yet sent, at most, and parts loading at once: what the reader
# holds of the sheet. Two loads keep both cores busy while the worker waits for rows.
AHEAD = 2
LOADERS = 2
# Parts cut and not yet loaded are kept in memory up to this many bytes of XML; beyond,
# written to files (``scratch``), when the cutting runs far ahead of the loading.
IN_MEMORY = 48 * 1024 * 1024
_ROW_END = b"</row>"
_ROW_START = re.compile(rb'<row r="(\d{1,7})"')
# A cell with a value (calamine places it): a number or shared string, inline text.
_VALUE = re.compile(rb"<c [^>]*[^/]>(?:<f[^>]*(?:/>|>[^<]*</f>))?(?:<v>[^<]|<is>)")
_DIMENSION = re.compile(rb"<dimension [^>]*/>")
_SENTINEL = '<row r="{row}"><c r="{column}{row}" t="inlineStr"><is><t>|</t></is></c></row>'
# Stamps from the day after any a number below 1 can be, to before year 10,000.
_STAMPS = ("1904-01-02", "10000-01-01")
_PLACEHOLDER = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
    b"<sheetData/></worksheet>"
)
# Parts calamine does not read for a sheet's values.
_NOT_READ = ("xl/drawings/", "xl/charts/", "xl/media/", "xl/theme/", "docProps/", "customXml/")

_warming: threading.Thread | None = None
_available = False


class Again(Exception):
    """The parts do not agree with the sheet as described: read the workbook again."""


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

    Not in a zip the guard is about to refuse for its sizes: every part copies its
    entries (``Parts``)."""
    if _warming is None or kind != "xlsx":
        return None
    try:
        with zipfile.ZipFile(path) as zf:
            guard.check_sizes(zf.infolist(), limits)
            if guard.zip_kind({i.filename for i in zf.infolist()}, zf) != "xlsx":
                return None  # read as the guard reads it
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


@dataclass
class _Piece:
    """Records of one stretch of the sheet: rows ``first`` to ``end`` (0-based), as
    columns from column A: Arrow arrays (a typed part) or calamine's values."""

    first: int
    end: int
    columns: list[Any]


class _NotTyped:
    """What ``Parts._load_typed`` says of a part whose values fastexcel cannot vouch for."""


_NOT_TYPED = _NotTyped()


@dataclass
class _Cut:
    """A part as cut: its workbook, where its sentinels are (the rows just above and
    below its own, ``below`` None for the last part), and the size of its rows' XML."""

    source: bytes | Path
    above: int
    below: int | None
    size: int


class Parts:
    """The sheet cut into its head and parts as the guard unpacks it (``cut``); the
    parts loaded in a thread, ``AHEAD`` at most, and handed on as records (``batches``)."""

    def __init__(self, path: Path, sheet: tuple[str, str], limits: Limits, scratch: Path | None):
        self.sheet, self.part = sheet
        self.limits = limits
        self.started = False  # the head was read and the parts are being cut
        self.declined = False  # not cut into parts after all: read whole
        self.failed = False  # a part loaded wrong: ``batches`` raises Again
        self.verified = False  # every part was handed on, each where it was cut
        self._scratch = scratch
        self._dir: Path | None = None  # made when a part is first written to a file
        self._cut_done = threading.Event()
        self._head_done = threading.Event()  # the head read, or the cutting over
        self._provisional: guard.UsedRange | None = None
        self._files: queue.Queue[_Cut | None] = queue.Queue()
        self._lock = threading.Lock()
        self._in_memory = 0  # bytes of the parts in memory, not yet loaded
        self._loaded: queue.Queue[_Piece | None] = queue.Queue(AHEAD)
        self._taken = False
        self._released = False
        self._loading = False  # the loading thread was started
        self._cut_entered = False
        self.head: Any = None  # calamine's reading of the head
        self._others = self._other_parts(path)

    def _other_parts(self, path: Path) -> dict[str, bytes]:
        """What each part's workbook holds besides its rows: the workbook, relationships,
        styles and shared strings; every other sheet empty, no drawings or media."""
        others: dict[str, bytes] = {}
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = info.filename
                if name == self.part:
                    continue
                if guard.is_sheet_part("xlsx", name):
                    others[name] = _PLACEHOLDER
                elif name.endswith((".xml", ".rels")) and not name.startswith(_NOT_READ):
                    others[name] = zf.read(info)
        # Copied into every part, the shared strings parsed again for each.
        copied = STRINGS_SHARE * sum(map(len, others.values()))
        self.part_bytes = min(max(PART_BYTES, copied), MAX_PART_BYTES)
        return others

    def _workbook(self, target: Path | io.BytesIO, *sheet: bytes | memoryview) -> None:
        """A workbook of the sheet's XML given in pieces, and the other parts it needs."""
        with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as book:
            for name, data in self._others.items():
                book.writestr(name, data)
            with book.open(self.part, "w") as part:
                for piece in sheet:
                    part.write(piece)

    # --- the guard's thread ------------------------------------------------------------------

    def cut(self, blocks: Iterator[bytes]) -> guard.UsedRange | None:
        """Cut the sheet's XML, as unpacked, into the head and parts; the sheet's used
        range. None where it is not cut so (the guard scans it cell by cell)."""
        self._cut_entered = True
        used = None
        try:
            used = self._cut(blocks)
        finally:
            self.declined = used is None
            if not self._head_done.is_set():
                self._provisional = used
                self._head_done.set()
            self._files.put(None)
            if not self._loading:
                self._loaded.put(None)  # no part was cut: nothing to wait for
            self._cut_done.set()
        return used

    def abandon(self) -> None:
        """The guard is done: where it never handed the sheet over (``cut``; it refused
        the file, or read it as no xlsx), nothing may wait for the parts."""
        if not self._cut_entered:
            self.declined = True
            self._head_done.set()
            self._loaded.put(None)
            self._cut_done.set()

    def provisional(self) -> guard.UsedRange | None:
        """The sheet's used range as its head and its declared size give it, once the
        head is read; or as found, once cut; None if it is not cut into parts."""
        self._head_done.wait()
        return self._provisional

    def _cut(self, blocks: Iterator[bytes]) -> guard.UsedRange | None:
        data = bytearray()
        ends = 0
        plain = _plain(blocks)
        stream = iter(plain)
        for block in stream:
            ends += block.count(_ROW_END)
            data += block
            if ends >= HEAD_ROWS or len(data) > HEAD_MAX_BYTES:
                break
        else:
            return None  # the whole sheet is its head, or not plain XML
        if ends < HEAD_ROWS:
            return None  # rows of megabytes each: calamine reads the sheet whole
        cut = -1
        for _ in range(HEAD_ROWS):
            cut = data.index(_ROW_END, cut + 1)
        cut += len(_ROW_END)
        head = bytes(data[:cut])
        opening = head.find(b"<sheetData>") + len(b"<sheetData>")
        if opening < len(b"<sheetData>") or b"</sheetData>" in head:
            return None  # a prefixed namespace, or not where rows are
        used = self._read_head(head + b"</sheetData></worksheet>")
        if used is None:
            return None
        used.declared = guard.declared_range(head)
        self.started = True
        # The rows below, as the sheet declares them, checked as they are read (``batches``):
        # the worker lays out the sheet while it is cut.
        if (
            declared := _declared_last_row(used.declared)
        ) is not None and declared >= used.last_row:
            self._provisional = dataclasses.replace(used)
            self._provisional.add(declared, used.first_col)
            self._head_done.set()
        # A part holds fewer rows than the sheet declares.
        prefix = _DIMENSION.sub(b"", head[:opening])
        last_row = self._cut_parts(prefix, data[cut:], stream)
        if not plain.clean:
            return None
        if last_row is None:
            return None
        used.add(last_row, used.first_col)
        return used

    def _cut_parts(self, prefix: bytes, rest: bytearray, blocks: Iterator[bytes]) -> int | None:
        """The rows after the head, cut into parts; the last row with a value, or None
        where they are not cut so."""
        index = 0
        for block in itertools.chain([b""], blocks):
            rest += block
            start = max(self.part_bytes, len(rest) - len(block) - len(b"<row "))
            while len(rest) > self.part_bytes and (at := rest.find(b"<row ", start)) > 0:
                start = self.part_bytes
                if not self._emit(index, prefix, rest, at, last=False):
                    return None
                index += 1
                del rest[:at]
        closing = rest.find(b"</sheetData>")
        if closing < 0:
            return None
        if not rest[:closing].strip() or not self._emit(index, prefix, rest, closing, last=True):
            return None
        return _last_value_row(rest, closing)

    def _emit(self, index: int, prefix: bytes, rows: bytearray, end: int, *, last: bool) -> bool:
        """Write one part's workbook, its rows ``rows[:end]`` between two sentinel rows,
        and hand it to the loading thread; False if its first or last row has no number.

        A sentinel is a cell right of the head's columns, on the row just above the
        part's first row and the row just below its last (none below the sheet's last
        part): calamine places cells by the rows they name, so the part's cells lie
        between its sentinels, and where its rows are, only if its rows and cells
        agree. A part is kept in memory while the parts waiting to be loaded hold less
        than ``IN_MEMORY`` bytes, else written to a file."""
        first = _ROW_START.match(rows, len(rows[:end]) - len(rows[:end].lstrip()))
        at = rows.rfind(b"<row ", 0, end)
        final = _ROW_START.match(rows, at) if at >= 0 else None
        if first is None or final is None:
            return False
        above, below = int(first[1]) - 1, int(final[1]) + 1  # 1-based, as the XML names rows
        if below <= above + 1 or above < 1:
            return False
        column = guard.column_name(self.sheet_width)
        top = _SENTINEL.format(row=above, column=column).encode()
        bottom = b"" if last else _SENTINEL.format(row=below, column=column).encode()
        target: Path | io.BytesIO = io.BytesIO()
        with self._lock:
            if self._released:
                return False
            in_memory = self._in_memory + end <= IN_MEMORY
            self._in_memory += end if in_memory else 0
            if not in_memory:
                if self._dir is None:
                    self._dir = Path(tempfile.mkdtemp(prefix="ferry-parts-", dir=self._scratch))
                target = self._dir / f"part-{index}.xlsx"
        with memoryview(rows) as view:
            self._workbook(target, prefix + top, view[:end], bottom + b"</sheetData></worksheet>")
        source = target.getvalue() if isinstance(target, io.BytesIO) else target
        self._files.put(_Cut(source, above - 1, None if last else below - 1, end))
        if not self._loading:
            self._loading = True
            threading.Thread(target=self._load_all, name="parts", daemon=True).start()
        return True

    def _read_head(self, xml: bytes) -> guard.UsedRange | None:
        """The head read by calamine: its sample and header; the range it starts."""
        import python_calamine

        from services.core.imports.readers.sheets import sample_of

        out = io.BytesIO()
        self._workbook(out, xml)
        try:
            book = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(out.getvalue()))
            loaded: Any = book.get_sheet_by_name(self.sheet)
        except Exception:  # the guard and calamine say what is wrong; read it whole
            return None
        if not loaded.start or loaded.start[1] != 0:
            return None  # a sheet not starting in column A: its parts could not be placed
        described = sample_of(loaded)
        sample = [(line, cells) for line, cells in described["sample"]]
        index = find_header(sample)
        if index < 0 or len(sample) < SAMPLE_ROWS:
            return None
        try:
            self.width = len(clean_headers(sample[index][1], self.limits))
        except InvalidInput:
            return None
        self.head = loaded
        self._head_end = loaded.end[0]
        self.first_row = described["first_row"]
        self.header_line = sample[index][0]
        self._sample = described["sample"]
        self.sheet_width = loaded.width
        used = guard.UsedRange()
        used.add_span((self.first_row, loaded.end[0]), (0, loaded.width - 1))
        return used

    # --- the loading thread -----------------------------------------------------------------

    def _load_all(self) -> None:
        """Load the parts as they are cut, ``LOADERS`` at once, and queue them in order;
        None after the last, or after the first that is not right."""
        try:
            self._load_in_order()
        except BaseException:  # the reader's thread must not wait for ever
            self.failed = True
            raise
        finally:
            self._loaded.put(None)

    def _load_in_order(self) -> None:
        done = self._head_end + 1  # the next row to load: the rows above are handed on
        loading: collections.deque[Future[_Piece | None]] = collections.deque()
        more = True
        with ThreadPoolExecutor(LOADERS, thread_name_prefix="part") as pool:
            while more or loading:
                while more and len(loading) < LOADERS:
                    try:  # wait for the next part only when none is loading
                        cut = self._files.get(block=not loading)
                    except queue.Empty:
                        break
                    if cut is None:
                        more = False
                    else:
                        loading.append(pool.submit(self._load_file, cut))
                if not loading:
                    break
                piece = loading.popleft().result()
                if piece is None or piece.first < done:
                    self.failed = True  # its cells not between its sentinels, say
                    break
                self._loaded.put(piece)
                done = piece.end + 1

    def _load_file(self, cut: _Cut) -> _Piece | None:
        try:
            typed = self._load_typed(cut)
            return self._load_cells(cut) if isinstance(typed, _NotTyped) else typed
        except Exception:  # memory, say: the sheet is read whole
            return None
        finally:
            if isinstance(cut.source, Path):
                cut.source.unlink(missing_ok=True)
            else:
                with self._lock:
                    self._in_memory -= cut.size

    def _load_typed(self, cut: _Cut) -> _Piece | _NotTyped | None:
        """The part loaded by fastexcel, its cells where the sentinels say; None where
        they are not between them (the sheet read whole); ``_NOT_TYPED`` where fastexcel
        cannot vouch for its values (types mixed in a column, ``strict``; an error)."""
        import fastexcel
        import pyarrow as pa

        try:
            source = str(cut.source) if isinstance(cut.source, Path) else cut.source
            loaded = fastexcel.read_excel(source).load_sheet(
                self.sheet,
                header_row=None,
                skip_rows=None,  # from the first row with a cell: the sentinel above
                dtype_coercion="strict",
                schema_sample_rows=None,
            )
            table, errors = loaded.to_arrow_with_errors()
            places = [c.absolute_index for c in loaded.selected_columns]
        except BaseException:  # a Rust panic too: calamine reads the part
            return _NOT_TYPED
        if errors is not None or not _convertible(table) or not places:
            return _NOT_TYPED
        left, n = places[0], table.num_rows
        if places != list(range(left, left + len(places))) or places[-1] != self.sheet_width:
            return None  # not dense, or a cell right of the sentinels' column
        marks = _valid(table.column(len(places) - 1))  # where the sentinels' column has cells
        rows = n - 1 if cut.below is None else n - 2
        expected = [0] if cut.below is None else [0, n - 1]
        if cut.below is not None and n != cut.below - cut.above + 1:
            return None  # a cell naming a row outside the part's
        if list(marks.nonzero()[0]) != expected:
            return None  # a cell in the sentinels' column, or one above the sentinel
        for i in range(len(places) - 1):
            if _valid(table.column(i))[expected].any():
                return None  # a cell naming a sentinel's row: another part's
        columns = [pa.nulls(rows)] * left + [
            table.column(i).slice(1, rows) for i in range(len(places) - 1)
        ]
        return _Piece(cut.above + 1, cut.above + rows, columns)

    def _load_cells(self, cut: _Cut) -> _Piece | None:
        """The part read by python-calamine, its cells where the sentinels say; None
        where they are not between them."""
        import python_calamine

        if isinstance(cut.source, Path):
            book = python_calamine.CalamineWorkbook.from_path(str(cut.source))
        else:
            book = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(cut.source))
        sheet: Any = book.get_sheet_by_name(self.sheet)
        (top, left), (end, right) = sheet.start, sheet.end
        if top != cut.above or right != self.sheet_width or cut.below not in (None, end):
            return None
        last = end if cut.below is None else end - 1
        rows = list(itertools.islice(sheet.iter_rows(), top, end + 1))
        mark = self.sheet_width - left
        if any(row[mark] != "" for row in rows[1 : last - top + 1]):
            return None  # a cell in the sentinels' column
        if any(any(v != "" for v in rows[i][:mark]) for i in {0, end - top} - {last - top}):
            return None  # a cell naming a sentinel's row: another part's
        cells = [("",) * (last - top)] * left + [
            column[1 : last - top + 1] for column in list(zip(*rows, strict=True))[:mark]
        ]
        return _Piece(top + 1, last, cells)

    # --- the reader's thread ----------------------------------------------------------------

    def describe(self, used: guard.UsedRange | None) -> dict[str, Any] | None:
        """The sheet's description as ``sheets.sample_of`` gives it; None to read the sheet
        whole instead."""
        self._head_done.wait()
        if not self.started or used is None or used.empty:  # a decline later: again
            return None
        return {
            "first_row": self.first_row,
            "height": used.last_row - self.first_row + 1,
            "width": self.sheet_width,
            "sample": self._sample,
        }

    def matches(self, request: dict[str, Any]) -> bool:
        """The worker asks for what was cut: this sheet, below this header, once."""
        return (
            self.started
            and not self._taken
            and request["sheet"] == self.sheet
            and request["header_line"] == self.header_line
            and request["width"] == self.width
        )

    def batches(self, rows: int, last_row: int) -> Iterator[list[Any]]:
        """The records in batches of ``rows``, as columns of calamine's values, up to the
        used range's ``last_row``; Again where a part disagrees with the sheet."""
        self._taken = True
        batcher = _Batcher(rows, self.sheet_width)
        done = self._head_end + 1  # the next row to hand on
        head = list(itertools.islice(self.head.iter_rows(), self.header_line, None))
        yield from batcher.add(list(zip(*head, strict=True)) if head else [], len(head))
        while (piece := self._loaded.get()) is not None:
            yield from batcher.add([], piece.first - done)  # empty rows between parts
            yield from batcher.add(piece.columns, piece.end - piece.first + 1)
            done = piece.end + 1
        self._cut_done.wait()
        if self.failed or self.declined or done != last_row + 1:
            raise Again  # the last row is not where the sheet said, or not cut after all
        self.verified = True
        yield from batcher.finish()

    def release(self) -> None:
        """Let the parts go: the sheet is read whole, by calamine, or not at all."""
        with self._lock:
            self._released = True
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
        self.head = None
        self._taken = True


class _Batcher:
    """Columns of records, however many rows they come in, as batches of ``rows``,
    ``width`` columns each (the sheet's; a narrower part's missing ones empty).

    A column of a batch is an Arrow array where all its rows came from typed parts (see
    ``sheets.SheetRows``), else calamine's values."""

    def __init__(self, rows: int, width: int) -> None:
        self.rows = rows
        self.width = width
        # Per column, its pieces not yet taken: Arrow arrays or lists of values.
        self.columns: list[collections.deque[Any]] = [collections.deque() for _ in range(width)]
        self.count = 0

    def add(self, cells: list[Any], count: int) -> Iterator[list[Any]]:
        if count:
            for column, values in itertools.zip_longest(self.columns, cells[: self.width]):
                column.append(values if values is not None else [""] * count)
            self.count += count
        while self.count >= self.rows:
            yield self._take(self.rows)

    def finish(self) -> Iterator[list[Any]]:
        if self.count:
            yield self._take(self.count)

    def _take(self, n: int) -> list[Any]:
        self.count -= n
        return [_first(column, n) for column in self.columns]


def _first(pieces: collections.deque[Any], n: int) -> Any:
    """The first ``n`` values of a column's pieces, taken off them."""
    import pyarrow as pa

    taken = []
    while n:
        piece = pieces.popleft()
        if len(piece) > n:
            pieces.appendleft(piece[n:])
            piece = piece[:n]
        taken.append(piece)
        n -= len(piece)
    kinds = {piece.type for piece in taken if isinstance(piece, pa.Array)}
    if len(kinds) == 1 and all(isinstance(piece, pa.Array) for piece in taken):
        return taken[0] if len(taken) == 1 else pa.concat_arrays(taken)
    out: list[Any] = []
    for piece in taken:
        out.extend(values(piece) if isinstance(piece, pa.Array) else piece)
    return tuple(out)


class _plain:  # noqa: N801 - read as a function
    """The blocks, until one holds ``<!`` (a comment, a DTD, CDATA: the guard's scan
    says what it is); ``clean`` then False."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self.blocks = blocks
        self.clean = True
        self.last = b""

    def __iter__(self) -> Iterator[bytes]:
        for block in self.blocks:
            if b"!" in block and (b"<!" in block or b"<!" in self.last + block[:1]):
                self.clean = False
                return
            self.last = block[-1:]
            yield block


def _declared_last_row(declared: str | None) -> int | None:
    """The 0-based last row of a declared range (``A1:I100001``), if it names one."""
    found = re.search(r"(\d+)$", declared or "")
    return int(found[1]) - 1 if found else None


def _last_value_row(rows: bytearray, end: int) -> int | None:
    """The 0-based number of the last row with a value in ``rows[:end]``, if it has one."""
    while (at := rows.rfind(b"<row ", 0, end)) >= 0:
        if _VALUE.search(rows, at, end):
            found = _ROW_START.match(rows, at)
            return int(found[1]) - 1 if found else None
        end = at
    return None


def _convertible(table: Any) -> bool:
    """Every column is of a type converted here as calamine gives it."""
    import numpy as np
    import pyarrow as pa

    for column in table.columns:
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


# ASCII bytes that are not whitespace (``str.isspace``): a cell holding one is not blank.
_SOLID = bytes(0x21 <= b < 0x7F or b < 0x09 or 0x0E <= b < 0x1C or b == 0x7F for b in range(256))


def blank(column: Any) -> Any:
    """Per cell of an Arrow column, whether it is empty or only whitespace, as
    ``str.strip`` finds it (a numpy array). From Arrow's buffers: any of pyarrow's own
    conversions or compute functions imports pandas (0.25 s, 50 MB) in the reader."""
    import numpy as np
    import pyarrow as pa

    n = len(column)
    if pa.types.is_null(column.type):
        return np.ones(n, dtype=bool)
    empty = ~_valid(column)
    if not pa.types.is_string(column.type):
        return empty
    ends, data = _text(column)
    solid = np.frombuffer(_SOLID, dtype=bool)[data]
    counted = np.concatenate([[0], np.cumsum(solid)])[ends - ends[0]]
    blank = (np.diff(counted) == 0) | empty
    # Cells of spaces and bytes beyond ASCII: as Python strips them.
    for at in np.flatnonzero(blank & (np.diff(ends) > 0) & ~empty):
        text = data[ends[at] - ends[0] : ends[at + 1] - ends[0]].tobytes().decode()
        blank[at] = not text.strip()
    return blank


def wire(column: Any) -> Any:
    """An Arrow column as a chunk sends it without a Python value per cell: text as its
    buffers, numbers as float64 bytes, whole days as ISO text; None for any other
    (empty numbers or days, times, booleans), to be sent as calamine's values."""
    import numpy as np
    import pyarrow as pa

    kind, n = column.type, len(column)
    if pa.types.is_string(kind):
        ends, data = _text(column)
        if column.null_count and np.diff(ends)[~_valid(column)].any():
            return None  # an empty cell with text behind it: not as fastexcel writes them
        return {
            "n": n,
            "offsets": (ends - ends[0]).astype(np.int32).tobytes(),
            "data": data.tobytes(),
        }
    if column.null_count:
        return None
    if pa.types.is_float64(kind):
        values = np.frombuffer(column.buffers()[1], dtype=np.float64)
        return values[column.offset : column.offset + n].tobytes()
    if pa.types.is_timestamp(kind):
        stamps = _stamps(column)
        if (stamps.astype(np.int64) % _per_day(kind)).any():
            return None  # a time of day: calamine gives a datetime
        days = stamps.astype("datetime64[D]").astype("S10")  # years 1904-9999: ``_convertible``
        offsets = np.arange(0, 10 * (n + 1), 10, dtype=np.int32)
        return {"n": n, "offsets": offsets.tobytes(), "data": days.tobytes()}
    return None


def _text(column: Any) -> tuple[Any, Any]:
    """A string column's offsets (its own ``n + 1``) and bytes, as numpy arrays."""
    import numpy as np

    _, offsets, data = column.buffers()
    n, at = len(column), column.offset
    ends = np.frombuffer(offsets, dtype=np.int32)[at : at + n + 1]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    return ends, raw[ends[0] : ends[-1]]


def _valid(column: Any) -> Any:
    """Per cell, whether it has a value (numpy), from the validity bitmap."""
    import numpy as np

    n = len(column)
    validity = column.buffers()[0]
    if not column.null_count or validity is None:
        return np.ones(n, dtype=bool)
    first, bit = divmod(column.offset, 8)
    bits = np.frombuffer(validity, np.uint8)[first : first + (bit + n + 7) // 8]
    return np.unpackbits(bits, bitorder="little")[bit : bit + n].astype(bool)


def _per_day(kind: Any) -> int:
    """Ticks of a timestamp type in a day."""
    return 86_400 * {"s": 1, "ms": 1000, "us": 10**6, "ns": 10**9}[kind.unit]


def values(column: Any) -> tuple[Any, ...]:
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

    at = slice(column.offset, column.offset + len(column))
    data = column.buffers()[1]
    stamps = np.frombuffer(data, dtype=np.int64)[at].view(f"datetime64[{column.type.unit}]")
    if column.null_count:
        stamps = np.where(_valid(column), stamps, np.datetime64("NaT"))
    return stamps
