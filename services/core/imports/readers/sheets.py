"""The workbook reader process: ``python -m services.core.imports.readers.sheets``.

An untrusted workbook is parsed here, never in the worker: this process first caps
its own address space (``RLIMIT_AS``), so whatever calamine allocates beyond the cap
fails here — a ``MemoryError``, or Rust aborting the process — and the worker reads
that as a refused file, alive.

The guard (``readers.guard``) runs beside calamine, on the other core: calamine loads
the sheets while the guard scans the file, and nothing is sent until the guard has
passed it — but for the records of a sheet cut into parts, sent as the guard unpacks
it (below); a refusal of the guard ends the process at once, calamine mid-sheet or
not. Only if calamine dies first (a sparse sheet asking for gigabytes) does the worker
start this process again ``careful``: the guard first, calamine only on what it let
through — so the refusal names the sheet and its range, and the other sheets are read.

An xlsx's largest sheet, when large, is cut into parts as the guard unpacks it, and
they are loaded by fastexcel as typed columns, one after another, while the records of
the first are already sent (``readers.typed``); a part that path cannot vouch for is
loaded by calamine, and a sheet whose parts disagree with it is read again whole. The
worker cannot tell the paths apart.

It talks to ``readers.workbook`` in length-prefixed msgpack frames. It is started
with its limits only, often before there is a workbook to read (a worker keeps one
waiting), and first receives the workbook: path, kind, careful or not. It sends the
workbook's sheets (each with its used range, or why it was not read, and its first
rows as text), then, for each ``read`` the parent sends, the records of that sheet
in chunks — cells as the text a person sees, footers held back like a CSV's — and an
``end`` with what it skipped. It exits when its input closes.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import itertools
import operator
import os
import resource
import signal
import struct
import sys
import threading
from array import array
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import IO, Any

import msgspec

from services.core.errors import InvalidInput
from services.core.imports.readers import guard, typed
from services.core.imports.readers.chunks import Chunk, ChunkBuilder, Skips
from services.core.imports.readers.layout import SAMPLE_ROWS, Limits, not_tabular

FRAME = struct.Struct(">I")
# Sheets whose first rows are sent to choose among: a workbook rarely has more.
MAX_SAMPLED_SHEETS = 64
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()
WHOLE_LIMIT = 1e15  # whole numbers below this are written without a decimal point
_sending = threading.Lock()  # the guard's thread may refuse the file mid-load


def send(out: IO[bytes], message: dict[str, Any]) -> None:
    data = _encoder.encode(message)
    with _sending:
        out.write(FRAME.pack(len(data)))
        out.write(data)
        out.flush()


def receive(inp: IO[bytes]) -> dict[str, Any] | None:
    """The next frame, or None when the other side closed the pipe."""
    head = inp.read(FRAME.size)
    if len(head) < FRAME.size:
        return None
    (size,) = FRAME.unpack(head)
    data = inp.read(size)
    if len(data) < size:
        return None
    message: dict[str, Any] = _decoder.decode(data)
    return message


def cell_text(value: Any) -> str:
    """A cell as the text a person sees; dates as ISO, whole numbers without ``.0``."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if value is None:
        return ""
    if kind is float:
        if value.is_integer() and abs(value) < WHOLE_LIMIT:
            return str(int(value))
        return repr(value)
    if kind is bool:
        return "TRUE" if value else "FALSE"
    if kind is int:
        return str(value)
    if kind is datetime:
        if value.time() == time(0):
            return value.date().isoformat()  # type: ignore[no-any-return]
        return value.isoformat(sep=" ")  # type: ignore[no-any-return]
    if kind is date:
        return value.isoformat()  # type: ignore[no-any-return]
    if kind is timedelta or kind is time:
        return str(value)
    return str(value)


def column_text(column: tuple[Any, ...], kinds: set[type] | None = None) -> tuple[str, ...]:
    """A column of cells as text; a column of text costs one pass over the types.

    A column of numbers or of dates (with text, such as blank cells) is converted
    inline, as ``cell_text`` would, without a call per cell.
    """
    if kinds is None:
        kinds = set(map(type, column))
    if kinds == {str}:
        return column
    if kinds <= {str, float}:
        texts = [
            v
            if type(v) is str
            else str(int(v))
            if v.is_integer() and -WHOLE_LIMIT < v < WHOLE_LIMIT
            else repr(v)
            for v in column
        ]
        return tuple(texts)
    if kinds <= {str, date}:
        return tuple([v if type(v) is str else v.isoformat() for v in column])
    return tuple(map(cell_text, column))


# --- the workbook ---------------------------------------------------------------------------


def _calamine_error(exc: Exception) -> InvalidInput:
    import python_calamine

    if isinstance(exc, python_calamine.PasswordError):
        return not_tabular("the workbook is protected by a password; save it without one")
    return not_tabular(f"the workbook cannot be read: {exc}")


class Book:
    """The workbook as calamine opened it, and the sheets loaded so far (within budget)."""

    def __init__(
        self, path: Path, limits: Limits, out: IO[bytes], guarded: guard.Guarded | None
    ) -> None:
        import python_calamine

        self.path = path
        self.limits = limits
        self.out = out
        self.guarded = guarded  # None while the guard is still scanning the file
        try:
            self.book = python_calamine.CalamineWorkbook.from_path(str(path))
        except Exception as exc:  # calamine raises its own error types
            raise _calamine_error(exc) from None
        self.loaded: dict[str, Any] = {}
        self.loaded_cells = 0
        self.typed: typed.Parts | None = None  # the largest sheet, cut into parts

    def _refused(self, name: str) -> InvalidInput | None:
        used = self.guarded.ranges.get(name) if self.guarded is not None else None
        return guard.over_budget(name, used, self.limits) if used is not None else None

    def sheet(self, name: str) -> Any:
        """The sheet, loaded by calamine unless its used range is over the budget."""
        if refused := self._refused(name):
            if (loaded := self.loaded.pop(name, None)) is not None:  # loaded ahead of the guard
                self.loaded_cells -= loaded.height * loaded.width
            raise refused
        if name in self.loaded:
            return self.loaded[name]
        return self._load(name)

    def _load(self, name: str) -> Any:
        # Said first: if calamine takes the process down, the worker can name the sheet.
        send(self.out, {"t": "loading", "sheet": name})
        try:
            sheet = self.book.get_sheet_by_name(name)
        except MemoryError:
            raise memory_exceeded(name, self.limits) from None
        except Exception as exc:  # calamine raises its own error types
            raise _calamine_error(exc) from None
        if refused := _loaded_over_budget(name, sheet, self.limits):
            raise refused  # a range the guard did not see (a sheet cut; see ``typed``)
        cells = sheet.height * sheet.width
        if self.loaded_cells + cells <= self.limits.max_cells:
            self.loaded[name] = sheet  # kept: the sheet chosen is read without parsing again
            self.loaded_cells += cells
        return sheet

    def load(self) -> None:
        """Load the sheets ``describe`` samples, ahead of the guard's verdict on them."""
        for meta in self.book.sheets_metadata[:MAX_SAMPLED_SHEETS]:
            if self.typed is not None and meta.name == self.typed.sheet:
                continue
            with contextlib.suppress(InvalidInput):  # ``describe`` says why, once guarded
                self.sheet(str(meta.name))

    def _settle_typed(self) -> tuple[str, dict[str, Any]] | None:
        """The name and description of the sheet cut into parts, if its head was read
        and the guard lets it through; else None, the parts let go.

        The guard found that sheet's range as it was cut (``guard.check_zip``): where
        the parts are let go, the range is found again cell by cell, beside calamine
        loading the sheet whole, before either is used."""
        parts = self.typed
        if parts is None:
            return None
        assert self.guarded is not None
        name = parts.sheet
        refused = self._refused(name)
        doc = None if refused else parts.describe(self.guarded.ranges.get(name))
        if doc is not None:
            return name, doc
        self.typed = None
        parts.release()
        if self.guarded.quick == name and refused:
            self.guarded.ranges[name] = guard.exact_range(self.path, parts.part, self.limits)
        elif self.guarded.quick == name:
            with ThreadPoolExecutor(1, thread_name_prefix="guard") as pool:
                exact = pool.submit(guard.exact_range, self.path, parts.part, self.limits)
                with contextlib.suppress(InvalidInput):  # said when the sheet is asked for
                    self._load(name)
                self.guarded.ranges[name] = exact.result()
        return None

    def describe(self) -> list[dict[str, Any]]:
        """Every sheet: name, visibility, used range, first rows as text (or why not read)."""
        from python_calamine import SheetVisibleEnum

        assert self.guarded is not None
        settled = self._settle_typed()
        out = []
        for index, meta in enumerate(self.book.sheets_metadata):
            name = str(meta.name)
            used = self.guarded.ranges.get(name)
            doc: dict[str, Any] = {
                "name": name,
                "hidden": meta.visible != SheetVisibleEnum.Visible,
                "range": used.ref if used is not None else None,
                "declared": used.declared if used is not None else None,
                "sample": None,
                "refused": None,
            }
            if used is not None and used.empty:
                doc["sample"] = []
            elif index >= MAX_SAMPLED_SHEETS:
                doc["refused"] = f"not compared: only the first {MAX_SAMPLED_SHEETS} sheets are"
            else:
                try:
                    if settled is not None and settled[0] == name:
                        doc.update(settled[1])
                    else:
                        doc.update(sample_of(self.sheet(name)))
                except InvalidInput as exc:
                    doc["refused"] = exc.detail
            out.append(doc)
        return out


def _loaded_over_budget(name: str, sheet: Any, limits: Limits) -> InvalidInput | None:
    if not sheet.start:
        return None
    (first_row, first_col), (last_row, last_col) = sheet.start, sheet.end
    return guard.over_budget(
        name, guard.UsedRange(first_row, last_row, first_col, last_col), limits
    )


def memory_exceeded(sheet: str | None, limits: Limits) -> InvalidInput:
    """The refusal of a workbook (or one of its sheets) that needs more than the cap."""
    what = f"the sheet {sheet!r}" if sheet else "the workbook"
    message = (
        f"{what} needs more memory than Ferry allows for reading a workbook "
        f"({limits.memory_bytes // (1024 * 1024):,} MiB); remove what is not data "
        "(other sheets, far-away cells) or save it as CSV"
    )
    return InvalidInput(message, errors=[{"field": "file", "message": "too much memory"}])


def sample_of(sheet: Any) -> dict[str, Any]:
    """A loaded sheet's range and its first rows as text, each with its line number."""
    start = sheet.start
    first = start[0] if start else 0
    # ``iter_rows`` counts from the sheet's first row, not the range's: the rows above
    # the range come first, empty.
    rows = itertools.islice(sheet.iter_rows(), first, first + SAMPLE_ROWS)
    return {
        "first_row": first,
        "height": sheet.height,
        "width": sheet.width,
        "sample": [[first + i + 1, list(map(cell_text, row))] for i, row in enumerate(rows)],
    }


# --- the records of a sheet -------------------------------------------------------------------


def _fit(cells: tuple[str, ...] | list[str], width: int) -> list[str]:
    return list(cells[:width]) + [""] * (width - len(cells))


Columns = list[tuple[Any, ...]]


def column_batches(sheet: Any, header_line: int, rows: int) -> Iterator[Columns]:
    """The records of a sheet calamine loaded, ``rows`` at a time, as columns."""
    # ``iter_rows`` counts from the sheet's first row (see ``sample_of``): the records
    # start at index ``header_line``, the line after the header's.
    records = itertools.islice(sheet.iter_rows(), header_line, None)
    while batch := list(itertools.islice(records, rows)):
        yield list(zip(*batch, strict=True))


class SheetRows:
    """The records of one sheet after its header, in chunks (see ``readers.chunks``).

    They come in batches of columns (``column_batches``, or ``typed.Parts.batches``),
    as calamine gives cells. A row with at most a third of the header's cells filled is
    held back like a short CSV line: a report footer unless records follow. A batch of
    regular rows goes to the builder at once, without Python per row.
    """

    def __init__(self, header_line: int, width: int, limits: Limits) -> None:
        self.header_line = header_line
        self.width = width
        self.limits = limits
        self.sparse = max(1, width // 3) if width > 2 else 0

    def chunks(self, batches: Iterator[Columns], skips: Skips, chunk_rows: int) -> Iterator[Chunk]:
        builder = ChunkBuilder(self.width, self.limits, skips, chunk_rows, noun="row")
        line = self.header_line + 1
        for cells in batches:
            count = len(cells[0]) if cells else 0
            yield from self._batch(builder, cells, count, line)
            line += count
        last = builder.finish()
        if last is not None:
            last.position = line - 1
            yield last

    def _batch(
        self, builder: ChunkBuilder, cells: Columns, count: int, line: int
    ) -> Iterator[Chunk]:
        if any(type(column) not in (tuple, list) for column in cells):  # Arrow (``typed``)
            if (arrow := self._arrow_batch(builder, cells, count, line)) is not None:
                yield arrow
                return
            cells = [typed.values(c) if type(c) not in (tuple, list) else c for c in cells]
        width = self.width
        kinds = [set(map(type, column)) for column in cells[:width]]
        # Columns of numbers only, or of dates only: no cell blank, none converted here.
        uniform = [k == {float} or k == {date} for k in kinds]
        mine = [
            column if whole else column_text(column, kind)
            for column, kind, whole in zip(cells[:width], kinds, uniform, strict=True)
        ]
        extra = [column_text(column) for column in cells[width:]]
        texts = [column for column, whole in zip(mine, uniform, strict=True) if not whole]
        filled = [width - blanks for blanks in _blank_counts(texts, count)]
        if len(mine) < width:  # a sheet narrower than its header: the rest is empty
            missing = width - len(mine)
            mine += [("",) * count] * missing
            kinds += [{str}] * missing
            uniform += [False] * missing
        beyond = _filled_rows(extra) if extra else None
        regular = not builder.pending and min(filled) > self.sparse
        if regular and beyond is None and not builder.rows and count == builder.chunk_rows:
            # A whole chunk of regular rows: its columns as they are, not transposed twice;
            # numbers as 8 bytes each, for the worker to write as text (``number_texts``).
            columns = [
                _wire(column, kind) if whole else column
                for column, kind, whole in zip(mine, kinds, uniform, strict=True)
            ]
            full = builder.take_columns(list(range(line, line + count)), columns)
            full.position = line + count - 1
            yield full
            return
        mine = [
            column_text(column, kind) if whole else column
            for column, kind, whole in zip(mine, kinds, uniform, strict=True)
        ]
        rows = list(zip(*mine, strict=True))
        if regular and beyond is None:
            builder.lines.extend(range(line, line + len(rows)))
            builder.rows.extend(rows)
            if len(builder.rows) >= builder.chunk_rows:
                full = builder.take()
                full.position = line + len(rows) - 1
                yield full
            return
        for index, row in enumerate(rows):
            chunk = self._row(builder, line + index, row, filled[index], beyond, index)
            if chunk is not None:
                chunk.position = line + index
                yield chunk

    def _arrow_batch(
        self, builder: ChunkBuilder, cells: Columns, count: int, line: int
    ) -> Chunk | None:
        """A whole chunk of regular rows from Arrow columns (``typed``), sent as Arrow's
        buffers: text without a Python string per cell, numbers as 8 bytes each, days as
        their ISO text. None where any column or row needs a look cell by cell."""
        import numpy as np

        width = self.width
        if builder.pending or builder.rows or count != builder.chunk_rows or len(cells) < width:
            return None
        blanks = np.zeros(count, dtype=np.int64)
        wired: list[Any] = []
        for column in cells[:width]:
            if (sent := typed.wire(column)) is None:
                return None
            if isinstance(sent, dict):  # text: counted where blank, as ``_blank_counts``
                blanks += typed.blank(column)
            wired.append(sent)
        for column in cells[width:]:  # right of the header: all must be empty
            if type(column) in (tuple, list) or not typed.blank(column).all():
                return None
        if (width - blanks).min() <= self.sparse:
            return None
        chunk = builder.take_columns(list(range(line, line + count)), wired)
        chunk.position = line + count - 1
        return chunk

    def _row(
        self,
        builder: ChunkBuilder,
        line: int,
        row: tuple[str, ...],
        filled: int,
        beyond: list[tuple[str, ...]] | None,
        index: int,
    ) -> Chunk | None:
        if filled == 0 or filled <= self.sparse:
            return builder.add_short(line, row if filled else [])
        if beyond is not None and any(map(str.strip, beyond[index])):
            return builder.add_row(line, [*row, *beyond[index]])
        return builder.add(line, row)


def _wire(column: tuple[Any, ...], kind: set[type]) -> Any:
    """A column of numbers as their float64 bytes; of dates, as they are (msgpack
    writes a date as its ISO text)."""
    return array("d", column).tobytes() if kind == {float} else column


def _blank_counts(columns: list[tuple[str, ...]], rows: int) -> list[int]:
    """Per row, how many of these columns are blank."""
    if not columns:
        return [0] * rows
    flags = [map(operator.not_, map(str.strip, column)) for column in columns]
    return list(map(sum, zip(*flags, strict=True)))


def _filled_rows(columns: list[tuple[str, ...]]) -> list[tuple[str, ...]] | None:
    """The cells right of the header per row, when any of them is filled; else None."""
    if not any(any(map(str.strip, column)) for column in columns):
        return None
    return list(zip(*columns, strict=True))


# --- the process ------------------------------------------------------------------------------


def _limit_memory(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # Die with the worker: a reader whose parent was killed has nobody to read for.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _stream(book: Book, request: dict[str, Any], out: IO[bytes]) -> None:
    header_line, chunk_rows = request["header_line"], request["chunk_rows"]
    parts = book.typed if book.typed is not None and request["sheet"] == book.typed.sheet else None
    if parts is not None and parts.matches(request):
        assert book.guarded is not None
        batches = parts.batches(chunk_rows, book.guarded.ranges[parts.sheet].last_row)
    elif parts is not None and not parts.verified:
        # Described from its head and the guard's cutting, not yet checked part by part.
        send(out, {"t": "again"})
        return
    else:  # read again (a date order decided late): calamine, whole, as described
        batches = column_batches(book.sheet(request["sheet"]), header_line, chunk_rows)
    skips = Skips()
    rows = SheetRows(header_line, request["width"], book.limits)
    try:
        for chunk in rows.chunks(batches, skips, chunk_rows):
            send(
                out,
                {
                    "t": "chunk",
                    "lines": chunk.lines,
                    "columns": chunk.columns,
                    "row_errors": chunk.row_errors,
                    "unreadable": sorted(chunk.unreadable),
                    "position": chunk.position,
                },
            )
    except typed.Again:
        send(out, {"t": "again"})
        return
    send(out, {"t": "end", "count": skips.count, "lines": skips.lines})


class _GuardBeside:
    """The guard in a thread. A refusal is sent from the thread, and the process ends
    there and then. ``quick``: its cutting of a sheet into parts (``typed``), which the
    reader may start reading before the guard is done with it (``early``)."""

    def __init__(
        self, path: Path, kind: str, limits: Limits, out: IO[bytes], parts: typed.Parts | None
    ) -> None:
        self._verdict: list[Any] = []
        quick = guard.Quick(parts.part, parts.cut, self._before) if parts is not None else None
        self._others: guard.Guarded | None = None  # every sheet's but the one cut
        self._early = threading.Event()

        def scan() -> None:
            try:
                self._verdict.append(guard.check_workbook(path, kind, limits, quick))
            except InvalidInput as exc:
                send(out, {"t": "error", "message": exc.detail, "errors": exc.errors})
                os._exit(0)
            except BaseException as exc:  # re-raised by the wait, in the main thread
                self._verdict.append(exc)
            finally:
                if parts is not None:
                    parts.abandon()
                self._early.set()

        self._thread = threading.Thread(target=scan, name="guard", daemon=True)
        self._thread.start()

    def _before(self, others: guard.Guarded) -> None:
        self._others = others
        self._early.set()

    def wait(self) -> guard.Guarded:
        self._thread.join()
        if isinstance(self._verdict[0], BaseException):
            raise self._verdict[0]
        verdict: guard.Guarded = self._verdict[0]
        return verdict

    def early(self, parts: typed.Parts) -> guard.Guarded:
        """The verdict on every sheet but the one cut into parts, and the range the
        head and the declared size give that one; the whole verdict where there are
        none."""
        self._early.wait()
        if (others := self._others) is not None and (used := parts.provisional()) is not None:
            return guard.Guarded(others.kind, {**others.ranges, parts.sheet: used}, parts.sheet)
        return self.wait()


def _open(
    path: Path, kind: str, limits: Limits, out: IO[bytes], careful: bool, scratch: Path | None
) -> Book:
    """The workbook, guarded: the guard first if ``careful``, else beside calamine (its
    largest sheet cut into parts as the guard unpacks it, ``typed``)."""
    if careful:
        return Book(path, limits, out, guard.check_workbook(path, kind, limits))
    fast = typed.candidate(path, kind, limits)
    parts = typed.Parts(path, fast, limits, scratch) if fast else None
    beside = _GuardBeside(path, kind, limits, out, parts)
    try:
        book = Book(path, limits, out, None)
        book.typed = parts
        book.load()
    except InvalidInput:
        beside.wait()  # the guard's refusal, if it has one, is the one to give
        raise
    book.guarded = beside.early(parts) if parts is not None else beside.wait()
    return book


def serve(
    path: Path,
    kind: str,
    limits: Limits,
    inp: IO[bytes],
    out: IO[bytes],
    *,
    careful: bool,
    scratch: Path | None = None,
) -> None:
    """Describe the workbook, then stream each sheet asked for, until the input closes.
    ``scratch``: where the parts of a sheet cut (``typed``) are written."""
    book: Book | None = None
    try:
        book = _open(path, kind, limits, out, careful, scratch)
        assert book.guarded is not None
        send(out, {"t": "sheets", "kind": book.guarded.kind, "sheets": book.describe()})
        while (request := receive(inp)) is not None:
            _stream(book, request, out)
    except InvalidInput as exc:
        send(out, {"t": "error", "message": exc.detail, "errors": exc.errors})
    except MemoryError:
        send(out, {"t": "memory"})  # the worker names the sheet it was loading
    finally:
        if book is not None and book.typed is not None:
            book.typed.release()


def main(argv: list[str]) -> None:
    """Cap this process, then wait for the workbook to read: the worker may start it
    ahead (``readers.workbook``); it exits unused when its input closes. ``plain``
    after the limits: without fastexcel (``readers.typed``), for a careful reading."""
    encoded, *flags = argv
    limits = msgspec.json.decode(encoded, type=Limits)
    _limit_memory(limits.memory_bytes)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the worker's to handle
    # Rows and cells make no reference cycles: counting references frees them, and the
    # cycle detector, run every 700 new lists, cost a quarter of the conversion.
    gc.disable()
    import python_calamine  # noqa: F401 - imported while waiting, not while reading

    if "plain" not in flags:
        typed.prewarm()

    inp, out = sys.stdin.buffer, sys.stdout.buffer
    if (workbook := receive(inp)) is not None:
        path, kind, careful = Path(workbook["path"]), workbook["kind"], workbook["careful"]
        scratch = Path(workbook["scratch"]) if workbook.get("scratch") else None
        serve(path, kind, limits, inp, out, careful=careful, scratch=scratch)
    # Done: no need to free a loaded sheet cell by cell before exiting.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
