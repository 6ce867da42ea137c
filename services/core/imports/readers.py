"""Reading uploads: what kind of file it is, how it is encoded and laid out, and its records.

A reader yields ``Chunk``s: the values of up to ``chunk_rows`` records as *columns*
(one tuple of strings per source column), with the line number a person sees when
opening the file (CSV: the physical line where the record starts, quoted newlines
counted; XLSX: the spreadsheet row). Lines that are not records — blank lines, text
before the header, report footers after the data — are counted in ``Skips`` with why.

Memory is bounded by one chunk for CSV. XLSX is read by python-calamine, which holds
one sheet; the zip is checked first (entries, unpacked size, compression ratio, no
DTDs), so a zip or entity bomb is refused before anything parses it.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import re
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal

import charset_normalizer

from services.core.errors import InvalidInput

Kind = Literal["csv", "xlsx"]

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
ZIP_MAGIC = b"PK\x03\x04"
# What other files people upload by mistake, by their first bytes.
BINARY_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\xd0\xcf\x11\xe0", "a legacy Excel (.xls) or other OLE document; save it as .xlsx or CSV"),
    (b"\x7fELF", "a program"),
    (b"MZ", "a Windows program"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ", "an xz archive"),
    (b"RIFF", "a media file"),
    (b"OggS", "a media file"),
    (b"ID3", "an MP3 file"),
)
BOMS: tuple[tuple[bytes, str, str], ...] = (
    (codecs.BOM_UTF8, "utf-8-sig", "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16", "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16", "utf-16"),
)
# Where a file is not UTF-8, these are the encodings spreadsheet users really produce;
# charset-normalizer chooses among them only (left free it guesses exotic code pages).
FALLBACK_ENCODINGS = ["cp1252", "cp1250", "iso8859_15", "mac_roman"]
ENCODING_LABELS = {
    "cp1252": "windows-1252",
    "cp1250": "windows-1250",
    "iso8859_15": "iso-8859-15",
    "mac_roman": "mac-roman",
}
DELIMITERS = (",", ";", "\t", "|")
SAMPLE_CHARS = 64 * 1024
SAMPLE_ROWS = 200
HEADER_SEARCH_ROWS = 30
# Rows that look incomplete after the data are footers only if few; more are data errors.
MAX_PENDING = 1000
# Zip limits of an XLSX upload: a workbook has a few dozen entries and compresses ~5-20x.
MAX_ZIP_ENTRIES = 10_000
MAX_ZIP_RATIO = 200
_DTD = re.compile(rb"<!(?:DOCTYPE|ENTITY)", re.IGNORECASE)
_NUMBERISH = re.compile(r"^[\s$€£(+-]*\d[\d\s.,/:-]*[)%]?$")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Limits:
    """Bounds on what one upload may contain (from Settings)."""

    max_columns: int = 500
    max_field_chars: int = 65_536
    max_rows: int = 2_000_000
    max_unpacked_bytes: int = 512 * 1024 * 1024


@dataclass
class Skips:
    """Lines left out because they are not records: a count per reason, the first ones listed."""

    count: int = 0
    lines: list[dict[str, Any]] = field(default_factory=list)
    limit: int = 100

    def add(self, line: int, reason: str, text: str | None = None) -> None:
        self.count += 1
        if len(self.lines) < self.limit:
            entry: dict[str, Any] = {"line": line, "reason": reason}
            if text:
                entry["text"] = text[:120]
            self.lines.append(entry)

    def document(self) -> dict[str, Any]:
        reasons = Counter(entry["reason"] for entry in self.lines)
        return {"count": self.count, "reasons": dict(reasons), "lines": self.lines}


@dataclass
class Layout:
    """What Ferry understood about a file before reading its records."""

    kind: Kind
    headers: list[str]
    header_line: int
    encoding: str | None = None
    encoding_label: str | None = None
    encoding_reason: str | None = None
    delimiter: str | None = None
    sheet: str | None = None
    sheets: list[str] = field(default_factory=list)
    preamble: list[tuple[int, str, list[str]]] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "encoding": self.encoding_label,
            "encoding_reason": self.encoding_reason,
            "delimiter": self.delimiter,
            "sheet": self.sheet,
            "sheets": self.sheets,
            "header_line": self.header_line,
            "headers": self.headers,
        }


@dataclass
class Chunk:
    """Up to ``chunk_rows`` records as columns, with their lines and row-level errors."""

    lines: list[int]
    columns: list[tuple[str, ...]]
    # Index in the chunk → message about the row as a whole (wrong number of values …).
    row_errors: dict[int, str] = field(default_factory=dict)
    # Rows that could not be read at all: only their row error is reported.
    unreadable: set[int] = field(default_factory=set)
    bytes_read: int = 0

    def __len__(self) -> int:
        return len(self.lines)

    def row(self, index: int) -> list[str]:
        return [column[index] for column in self.columns]


# --- what kind of file ------------------------------------------------------------------


def sniff_kind(head: bytes) -> Kind:
    """CSV or XLSX from a file's first bytes, whatever its name says; InvalidInput otherwise."""
    if not head:
        raise InvalidInput(
            "the file is empty", errors=[{"field": "file", "message": "the file is empty"}]
        )
    if head.startswith(ZIP_MAGIC):
        return "xlsx"
    for magic, what in BINARY_MAGIC:
        if head.startswith(magic):
            raise _not_tabular(f"this is {what}, not a CSV or XLSX file")
    if not any(head.startswith(bom) for bom, _, _ in BOMS):
        sample = head[:8192]
        controls = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13))
        if controls > max(8, len(sample) // 20):
            raise _not_tabular("this is binary data, not a CSV or XLSX file")
    return "csv"


def _not_tabular(message: str) -> InvalidInput:
    return InvalidInput(message, errors=[{"field": "file", "message": message}])


# --- CSV ----------------------------------------------------------------------------------


def detect_encoding(path: Path) -> tuple[str, str, str]:
    """``(codec, label, reason)``: BOM, else strict UTF-8 over the whole file, else a guess.

    The UTF-8 check reads the whole file (C speed, ~1 GB/s), so a stray Windows-1252
    byte on the last line is caught before parsing, not after half the rows.
    """
    with open(path, "rb") as fh:
        head = fh.read(4)
        for bom, codec, label in BOMS:
            if head.startswith(bom):
                return codec, label, "byte order mark"
        fh.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")("strict")
        try:
            while block := fh.read(1024 * 1024):
                decoder.decode(block)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            pass
        else:
            return "utf-8", "utf-8", "valid UTF-8"
        fh.seek(0)
        sample = fh.read(1024 * 1024)
    matches = charset_normalizer.from_bytes(
        sample, cp_isolation=FALLBACK_ENCODINGS, preemptive_behaviour=False
    )
    best = matches.best()
    candidates = {m.encoding: m for m in matches}
    codec = "cp1252"
    if best is not None and best.encoding in ENCODING_LABELS:
        codec = best.encoding
        # Where Windows-1252 reads the text as well as the winner, it is far likelier.
        ours = candidates.get("cp1252")
        if ours is not None and ours.chaos <= best.chaos + 0.01:
            codec = "cp1252"
    label = ENCODING_LABELS[codec]
    return codec, label, f"not UTF-8; reads best as {label}"


def _sample_text(path: Path, codec: str) -> str:
    with open(path, encoding=codec, errors="replace", newline="") as fh:
        text = fh.read(SAMPLE_CHARS)
        if len(text) == SAMPLE_CHARS:
            # Finish the line so the last sampled record is whole (bounded: a line of a
            # huge field is cut, which only makes it look irregular).
            text += fh.readline(SAMPLE_CHARS)
    return text


def _sample_rows(
    text: str, delimiter: str, limit: int = SAMPLE_ROWS
) -> list[tuple[int, list[str]]]:
    """(line, row) of the first records of the sample; stops at a row it cannot read."""
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    rows: list[tuple[int, list[str]]] = []
    prev = 0
    try:
        for row in reader:
            rows.append((prev + 1, row))
            prev = reader.line_num
            if len(rows) >= limit:
                break
    except csv.Error:
        pass
    return rows


def _trimmed(row: list[str]) -> int:
    n = len(row)
    while n and not row[n - 1].strip():
        n -= 1
    return n


def detect_delimiter(text: str) -> str:
    """The delimiter that splits the sample into the most consistent number of columns."""
    best: tuple[float, int, int, str] = (0.0, 1, 0, ",")
    for rank, delimiter in enumerate(DELIMITERS):
        counts = [_trimmed(row) for _, row in _sample_rows(text, delimiter)]
        counts = [c for c in counts if c]
        if not counts:
            continue
        modal, freq = Counter(counts).most_common(1)[0]
        if modal < 2:
            continue
        score = (round(freq / len(counts), 2), modal, -rank, delimiter)
        if score > best:
            best = score
    return best[3]


def _looks_like_header(cells: list[str], width: int) -> bool:
    filled = [c for c in cells if c.strip()]
    if len(filled) < min(2, width):
        return False
    numbers = sum(1 for c in filled if _NUMBERISH.match(c))
    return numbers * 2 < len(filled)


def find_header(rows: list[tuple[int, list[str]]]) -> int:
    """Index in ``rows`` of the header: the first wide, mostly textual row."""
    widths = [_trimmed(r) for _, r in rows]
    nonblank = [w for w in widths if w]
    if not nonblank:
        return -1
    # The table's width is the most common width among the rows (data outnumber preamble).
    width = Counter(nonblank).most_common(1)[0][0]
    for index, (_, cells) in enumerate(rows[:HEADER_SEARCH_ROWS]):
        if widths[index] >= width and _looks_like_header(cells, width):
            return index
    return next(i for i, w in enumerate(widths) if w)


def clean_headers(cells: list[str], limits: Limits) -> list[str]:
    """Header names as shown: whitespace collapsed; blanks named; duplicates and excess refused."""
    width = _trimmed(cells)
    if width > limits.max_columns:
        raise InvalidInput(
            f"the file has {width:,} columns; Ferry reads at most {limits.max_columns:,}",
            errors=[{"field": "file", "message": f"{width} columns"}],
        )
    headers = [_SPACES.sub(" ", c.replace("\x00", "")).strip() for c in cells[:width]]
    seen: dict[str, int] = {}
    for index, name in enumerate(headers):
        if not name:
            headers[index] = name = f"(column {index + 1})"
        key = name.casefold()
        if key in seen:
            raise InvalidInput(
                f"the header {name!r} appears twice (columns {seen[key] + 1} and {index + 1}); "
                "rename one and upload again",
                errors=[{"field": "file", "message": f"duplicate header {name!r}"}],
            )
        seen[key] = index
    return headers


def csv_layout(path: Path, limits: Limits) -> Layout:
    """Encoding, delimiter, header row and headers of a CSV file."""
    codec, label, reason = detect_encoding(path)
    text = _sample_text(path, codec)
    if not text.strip():
        raise InvalidInput(
            "the file has no header row (it is empty or blank)",
            errors=[{"field": "file", "message": "no header row"}],
        )
    delimiter = detect_delimiter(text)
    csv.field_size_limit(limits.max_field_chars)
    rows = _sample_rows(text, delimiter)
    index = find_header(rows)
    if index < 0:
        raise InvalidInput(
            "the file has no header row", errors=[{"field": "file", "message": "no header row"}]
        )
    line, cells = rows[index]
    preamble = [
        (n, "blank line before the header" if not _trimmed(r) else "text before the header", r)
        for n, r in rows[:index]
    ]
    return Layout(
        kind="csv",
        headers=clean_headers(cells, limits),
        header_line=line,
        encoding=codec,
        encoding_label=label,
        encoding_reason=reason,
        delimiter=delimiter,
        preamble=preamble,
    )


class _Counted(io.RawIOBase):
    """A raw file that counts the bytes read, for progress."""

    def __init__(self, path: Path) -> None:
        self._fh = open(path, "rb")  # noqa: SIM115 - closed with this object
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._fh.readinto(buffer)
        self.read_bytes += n
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


class ReadAgain(Exception):
    """The fast reader met a row it cannot read; read the file again, carefully."""


def read_csv(
    path: Path,
    layout: Layout,
    limits: Limits,
    skips: Skips,
    *,
    chunk_rows: int,
    careful: bool = False,
) -> Iterator[Chunk]:
    """The records of a CSV file after its header, ``chunk_rows`` at a time.

    The fast way takes ``chunk_rows`` rows from the csv module at once (no Python per
    row) and works out their lines from the reader's line count; only a chunk with
    odd rows is looked at row by row. A row the csv module cannot read (a value over
    the size limit) raises ``ReadAgain``: the careful way reads row by row and turns
    such a row into a row error.
    """
    assert layout.encoding is not None
    assert layout.delimiter is not None
    for line, reason, cells in layout.preamble:
        skips.add(line, reason, " ".join(c.strip() for c in cells if c.strip()))
    width = len(layout.headers)
    errors = "strict" if layout.encoding.startswith("utf") else "replace"
    csv.field_size_limit(limits.max_field_chars)
    raw = _Counted(path)
    with io.TextIOWrapper(
        io.BufferedReader(raw), encoding=layout.encoding, errors=errors, newline=""
    ) as fh:
        reader = csv.reader(fh, delimiter=layout.delimiter)
        builder = _ChunkBuilder(width, limits, skips, chunk_rows)
        prev = 0
        header = layout.header_line
        chunk: Chunk | None
        if not careful:
            try:
                for fast in _read_fast(reader, builder, header, chunk_rows):
                    fast.bytes_read = raw.read_bytes
                    yield fast
            except csv.Error:
                raise ReadAgain from None
        while careful:
            try:
                # The hot loop: a regular row is two appends; anything else goes to the builder.
                lines, rows = builder.lines, builder.rows
                for row in reader:
                    start = prev + 1
                    prev = reader.line_num
                    n = len(row)
                    if n == width and not builder.pending and start > header:
                        lines.append(start)
                        rows.append(row)
                        if len(rows) < chunk_rows:
                            continue
                        chunk = builder.take()
                    elif start <= header:
                        continue
                    elif n == width:
                        chunk = builder.add(start, row)
                    elif n > width:
                        chunk = builder.add_long(start, row)
                    else:
                        chunk = builder.add_short(start, row)
                    if chunk is not None:
                        chunk.bytes_read = raw.read_bytes
                        yield chunk
                        lines, rows = builder.lines, builder.rows
                break
            except csv.Error as exc:
                start = prev + 1
                prev = reader.line_num
                chunk = builder.add_unreadable(start, _csv_error(exc, limits))
                if chunk is not None:
                    chunk.bytes_read = raw.read_bytes
                    yield chunk
        last = builder.finish()
        if last is not None:
            last.bytes_read = raw.read_bytes
            yield last


def _line_breaks(row: list[str]) -> int:
    return sum(f.count("\n") + f.count("\r") - f.count("\r\n") for f in row)


def _read_fast(
    reader: Any, builder: _ChunkBuilder, header: int, chunk_rows: int
) -> Iterator[Chunk]:
    """Rows in batches; a batch of regular one-line rows costs no Python per row."""
    width = builder.width
    while reader.line_num < header:  # the preamble and the header itself
        if next(reader, None) is None:
            return
    while True:
        before = reader.line_num
        batch = list(itertools.islice(reader, chunk_rows))
        if not batch:
            return
        after = reader.line_num
        one_line_each = after - before == len(batch)
        widths = set(map(len, batch))
        if one_line_each and widths == {width} and not builder.pending:
            builder.lines.extend(range(before + 1, after + 1))
            builder.rows.extend(batch)
            if len(builder.rows) >= chunk_rows:
                yield builder.take()
            continue
        # Quoted line breaks, blank lines, short or long rows: look at each row.
        starts: list[int] = []
        line = before + 1
        for row in batch:
            starts.append(line)
            line += 1 + (0 if one_line_each else _line_breaks(row))
        if line - 1 != after:
            raise csv.Error("line count mismatch")  # never expected; read carefully then
        for start, row in zip(starts, batch, strict=True):
            n = len(row)
            if n == width:
                chunk = builder.add(start, row)
            elif n > width:
                chunk = builder.add_long(start, row)
            else:
                chunk = builder.add_short(start, row)
            if chunk is not None:
                yield chunk


def _csv_error(exc: csv.Error, limits: Limits) -> str:
    if "field larger than field limit" in str(exc):
        return (
            f"a value is longer than {limits.max_field_chars:,} characters (the limit); "
            "the row was not read"
        )
    return f"the row could not be read: {exc}"


class _ChunkBuilder:
    """Collects rows into chunks; holds back incomplete rows until it knows if they are footers."""

    def __init__(
        self, width: int, limits: Limits, skips: Skips, chunk_rows: int, noun: str = "line"
    ) -> None:
        self.width = width
        self.noun = noun
        self.limits = limits
        self.skips = skips
        self.chunk_rows = chunk_rows
        self.lines: list[int] = []
        self.rows: list[list[str] | tuple[str, ...]] = []
        self.row_errors: dict[int, str] = {}
        self.unreadable: set[int] = set()
        self.pending: list[tuple[int, list[str] | tuple[str, ...]]] = []
        self.records = 0
        self._blank = [""] * width

    def _append(self, line: int, row: list[str] | tuple[str, ...]) -> None:
        self.lines.append(line)
        self.rows.append(row)

    def _flush_pending(self) -> None:
        # Incomplete rows followed by more data are records with something missing.
        for line, row in self.pending:
            if not _trimmed(list(row)):
                self.skips.add(line, f"blank {self.noun}")
                continue
            if len(row) < self.width:
                self.row_errors[len(self.rows)] = (
                    f"has {len(row)} values; the header has {self.width}"
                )
                row = list(row) + [""] * (self.width - len(row))
            self._append(line, row)
        self.pending.clear()

    def _ready(self) -> Chunk | None:
        if len(self.rows) < self.chunk_rows:
            return None
        return self.take()

    def take(self) -> Chunk:
        """The rows collected so far as a chunk (the caller re-reads ``lines``/``rows``)."""
        self.records += len(self.rows)
        if self.records > self.limits.max_rows:
            raise InvalidInput(
                f"the file has more than {self.limits.max_rows:,} records; split it",
                errors=[{"field": "file", "message": "too many rows"}],
            )
        columns: list[tuple[str, ...]] = (
            list(zip(*self.rows, strict=True)) if self.rows else [() for _ in range(self.width)]
        )
        chunk = Chunk(self.lines, columns, self.row_errors, self.unreadable)
        self.lines, self.rows, self.row_errors, self.unreadable = [], [], {}, set()
        return chunk

    def add(self, line: int, row: list[str] | tuple[str, ...]) -> Chunk | None:
        if self.pending:
            self._flush_pending()
        self._append(line, row)
        return self._ready()

    def add_long(self, line: int, row: list[str]) -> Chunk | None:
        if not any(cell.strip() for cell in row[self.width :]):
            return self.add(line, row[: self.width])  # trailing delimiters
        if self.pending:
            self._flush_pending()
        self.row_errors[len(self.rows)] = f"has {_trimmed(row)} values; the header has {self.width}"
        self._append(line, row[: self.width])
        return self._ready()

    def add_short(self, line: int, row: list[str] | tuple[str, ...]) -> Chunk | None:
        self.pending.append((line, row))
        if len(self.pending) > MAX_PENDING:
            self._flush_pending()
            return self._ready()
        return None

    def add_unreadable(self, line: int, message: str) -> Chunk | None:
        if self.pending:
            self._flush_pending()
        index = len(self.rows)
        self.row_errors[index] = message
        self.unreadable.add(index)
        self._append(line, self._blank)
        return self._ready()

    def finish(self) -> Chunk | None:
        # Incomplete rows after the last record: report footers and trailing blank lines.
        for line, row in self.pending:
            if not _trimmed(list(row)):
                self.skips.add(line, f"blank {self.noun}")
            else:
                text = " ".join(c.strip() for c in row if c.strip())
                self.skips.add(line, "report footer after the data, not a record", text)
        self.pending.clear()
        if not self.rows:
            return None
        return self.take()


# --- XLSX ---------------------------------------------------------------------------------


def check_zip(path: Path, limits: Limits) -> None:
    """Refuse zip bombs and XML entity bombs before any XML parser sees the workbook.

    Declared sizes can lie, so every entry is also decompressed (bounded, streaming)
    and counted; XML parts must not declare a DTD or entities (as defusedxml forbids).
    """
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_ZIP_ENTRIES:
                raise _bomb(f"it has {len(infos):,} entries (at most {MAX_ZIP_ENTRIES:,})")
            names = {i.filename for i in infos}
            if "xl/workbook.xml" not in names and "[Content_Types].xml" not in names:
                raise _not_tabular("this zip archive is not an Excel workbook")
            declared = sum(i.file_size for i in infos)
            if declared > limits.max_unpacked_bytes:
                raise _bomb(f"it would unpack to {declared:,} bytes")
            for info in infos:
                if info.file_size > 1024 * 1024 and info.file_size > MAX_ZIP_RATIO * max(
                    info.compress_size, 1
                ):
                    ratio = info.file_size // max(info.compress_size, 1)
                    raise _bomb(f"{info.filename} is compressed {ratio:,}:1")
            total = 0
            for info in infos:
                xml = info.filename.endswith((".xml", ".rels", ".vml"))
                tail = b""
                with zf.open(info) as fh:
                    while block := fh.read(1024 * 1024):
                        total += len(block)
                        if total > limits.max_unpacked_bytes:
                            raise _bomb(
                                f"it unpacks to more than {limits.max_unpacked_bytes:,} bytes"
                            )
                        if xml and _DTD.search(tail + block):
                            raise InvalidInput(
                                f"the workbook is refused: {info.filename} declares a DTD or "
                                "XML entities, which Excel never writes (an entity bomb?)",
                                errors=[{"field": "file", "message": "XML entity declarations"}],
                            )
                        tail = block[-16:]
    except zipfile.BadZipFile as exc:
        raise _not_tabular(
            f"the file looks like a workbook but is not a valid zip: {exc}"
        ) from None
    except (zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
        raise _not_tabular(f"the workbook cannot be read: {exc}") from None


def _bomb(why: str) -> InvalidInput:
    message = f"the workbook is refused: {why} — it looks like a zip bomb"
    return InvalidInput(message, errors=[{"field": "file", "message": "zip bomb"}])


def cell_text(value: Any) -> str:
    """A cell as the text a person sees; dates as ISO, whole numbers without ``.0``."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if value is None:
        return ""
    if kind is float:
        if value.is_integer() and abs(value) < 1e15:
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


class Workbook:
    """An opened, checked XLSX file and the sheet chosen from it."""

    def __init__(self, path: Path, limits: Limits, sheet: str | None) -> None:
        import python_calamine

        check_zip(path, limits)
        try:
            self._book = python_calamine.CalamineWorkbook.from_path(str(path))
        except Exception as exc:  # calamine raises its own error types
            raise _not_tabular(f"the workbook cannot be read: {exc}") from None
        self.names: list[str] = list(self._book.sheet_names)
        self.limits = limits
        if sheet is not None:
            if sheet not in self.names:
                raise InvalidInput(
                    f"the workbook has no sheet {sheet!r}; its sheets are "
                    + ", ".join(repr(n) for n in self.names),
                    errors=[{"field": "sheet", "message": f"no sheet {sheet!r}"}],
                )
            self.name = sheet
            self._sheet = self._book.get_sheet_by_name(sheet)
        else:
            for name in self.names:
                candidate = self._book.get_sheet_by_name(name)
                if candidate.height and any(
                    cell_text(c).strip() for row in candidate.to_python(nrows=50) for c in row
                ):
                    self.name, self._sheet = name, candidate
                    break
            else:
                raise InvalidInput(
                    "every sheet of the workbook is empty",
                    errors=[{"field": "file", "message": "empty workbook"}],
                )
        start = self._sheet.start
        self.first_row = start[0] if start else 0
        if self._sheet.width > limits.max_columns:
            raise InvalidInput(
                f"the sheet {self.name!r} has {self._sheet.width:,} columns; "
                f"Ferry reads at most {limits.max_columns:,}",
                errors=[{"field": "file", "message": f"{self._sheet.width} columns"}],
            )
        self.height: int = self._sheet.height

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """(spreadsheet row number, cells as text) from the first used row."""
        for index, row in enumerate(self._sheet.iter_rows()):
            yield self.first_row + index + 1, [cell_text(c) for c in row]


def xlsx_layout(path: Path, limits: Limits, sheet: str | None) -> tuple[Layout, Workbook]:
    """Sheet, header row and headers of an XLSX file."""
    book = Workbook(path, limits, sheet)
    sample = []
    for item in book.rows():
        sample.append(item)
        if len(sample) >= SAMPLE_ROWS:
            break
    index = find_header(sample)
    if index < 0:
        raise InvalidInput(
            f"the sheet {book.name!r} has no header row",
            errors=[{"field": "file", "message": "no header row"}],
        )
    line, cells = sample[index]
    preamble = [
        (n, "blank row before the header" if not _trimmed(r) else "text before the header", r)
        for n, r in sample[:index]
    ]
    layout = Layout(
        kind="xlsx",
        headers=clean_headers(cells, limits),
        header_line=line,
        sheet=book.name,
        sheets=book.names,
        preamble=preamble,
    )
    return layout, book


def read_xlsx(
    book: Workbook, layout: Layout, limits: Limits, skips: Skips, *, chunk_rows: int
) -> Iterator[Chunk]:
    """The records of the chosen sheet after its header, ``chunk_rows`` at a time."""
    for line, reason, cells in layout.preamble:
        skips.add(line, reason, " ".join(c.strip() for c in cells if c.strip()))
    width = len(layout.headers)
    builder = _ChunkBuilder(width, limits, skips, chunk_rows, noun="row")
    # A footer row in a sheet has at most a third of the header's cells filled.
    sparse = max(1, width // 3)
    for line, cells in book.rows():
        if line <= layout.header_line:
            continue
        filled = sum(1 for c in cells if c.strip())
        row = cells[:width] + [""] * (width - len(cells)) if len(cells) != width else cells
        if filled == 0 or (filled <= sparse and width > 2):
            chunk = builder.add_short(line, row if filled else [])
        elif _trimmed(cells) > width:
            chunk = builder.add_long(line, cells)
        else:
            chunk = builder.add(line, row)
        if chunk is not None:
            chunk.bytes_read = line
            yield chunk
    last = builder.finish()
    if last is not None:
        last.bytes_read = book.first_row + book.height
        yield last
