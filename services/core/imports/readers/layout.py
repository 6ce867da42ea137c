"""What both readers share before the records: the kind of file, its limits, its header row.

``sniff_kind`` tells CSV from a workbook by the first bytes (whatever the name says)
and refuses what is neither; ``find_header`` and ``clean_headers`` pick and name the
header row among the first rows, the same way for a CSV file and a sheet.
"""

from __future__ import annotations

import codecs
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from services.core.errors import InvalidInput

Kind = Literal["csv", "xlsx", "xlsb", "xls", "ods"]
WORKBOOKS = frozenset({"xlsx", "xlsb", "xls", "ods"})

ZIP_MAGIC = b"PK\x03\x04"
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # Excel 97-2003 (.xls) and other OLE files
# An OpenDocument file starts with its stored ``mimetype`` entry.
ODS_HEAD = b"mimetypeapplication/vnd.oasis.opendocument.spreadsheet"
# A dense sheet costs calamine 32 bytes a cell, and its list of filled cells as much
# again while it builds the sheet: the memory budget buys this many bytes per cell.
BYTES_PER_CELL = 64
# What other files people upload by mistake, by their first bytes.
BINARY_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
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
# (mark, codec, label): a UTF-16 text is full of NUL bytes, so sniffing needs these too.
BOMS: tuple[tuple[bytes, str, str], ...] = (
    (codecs.BOM_UTF8, "utf-8-sig", "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16", "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16", "utf-16"),
)
NOT_TABULAR = "not a CSV file or a spreadsheet (xlsx, xls, xlsb, ods)"
SAMPLE_ROWS = 200
HEADER_SEARCH_ROWS = 30
_NUMBERISH = re.compile(r"^[\s$€£(+-]*\d[\d\s.,/:-]*[)%]?$")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Limits:
    """Bounds on what one upload may contain (from Settings).

    The longest value is the csv module's process-wide limit (see ``tune_process``).
    ``memory_bytes`` caps the address space of the process that reads a workbook;
    ``max_cells``, the cells of a sheet's dense range, follows from it and from the
    row and column limits (``cell_budget``).
    """

    max_columns: int = 500
    max_rows: int = 2_000_000
    max_unpacked_bytes: int = 512 * 1024 * 1024
    memory_bytes: int = 1024 * 1024 * 1024
    max_cells: int = 16 * 1024 * 1024


def cell_budget(max_rows: int, max_columns: int, memory_bytes: int) -> int:
    """Cells a sheet's used range may hold: what the limits admit and the memory affords."""
    return min((max_rows + HEADER_SEARCH_ROWS) * max_columns, memory_bytes // BYTES_PER_CELL)


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
    sheet_reason: str | None = None
    # Every sheet of a workbook: name, score, why, used range, rows, hidden, chosen.
    sheets: list[dict[str, Any]] = field(default_factory=list)
    preamble: list[tuple[int, str, list[str]]] = field(default_factory=list)
    rows_end: int = 0  # a sheet's last row (for progress)

    def document(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "encoding": self.encoding_label,
            "encoding_reason": self.encoding_reason,
            "delimiter": self.delimiter,
            "sheet": self.sheet,
            "sheet_reason": self.sheet_reason,
            "sheets": self.sheets,
            "header_line": self.header_line,
            "headers": self.headers,
        }


def sniff_kind(head: bytes) -> Kind:
    """CSV or a workbook kind from a file's first bytes, whatever its name says.

    A zip is an xlsx unless its first entry says ods or its head names ``workbook.bin``
    (the reader settles it from the whole archive); InvalidInput for anything else.
    """
    if not head:
        raise InvalidInput(
            "the file is empty", errors=[{"field": "file", "message": "the file is empty"}]
        )
    if head.startswith(ZIP_MAGIC):
        if ODS_HEAD in head[:128]:
            return "ods"
        return "xlsb" if b"xl/workbook.bin" in head else "xlsx"
    if head.startswith(OLE_MAGIC):
        return "xls"
    for magic, what in BINARY_MAGIC:
        if head.startswith(magic):
            raise not_tabular(f"this is {what}, {NOT_TABULAR}")
    if not any(head.startswith(bom) for bom, _, _ in BOMS):
        sample = head[:8192]
        controls = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13))
        if controls > max(8, len(sample) // 20):
            raise not_tabular(f"this is binary data, {NOT_TABULAR}")
    return "csv"


def not_tabular(message: str) -> InvalidInput:
    return InvalidInput(message, errors=[{"field": "file", "message": message}])


def trimmed(row: list[str] | tuple[str, ...]) -> int:
    """The row's width without its trailing blank cells."""
    n = len(row)
    while n and not row[n - 1].strip():
        n -= 1
    return n


def _looks_like_header(cells: list[str], width: int) -> bool:
    filled = [c for c in cells if c.strip()]
    if len(filled) < min(2, width):
        return False
    numbers = sum(1 for c in filled if _NUMBERISH.match(c))
    return numbers * 2 < len(filled)


def find_header(rows: list[tuple[int, list[str]]]) -> int:
    """Index in ``rows`` of the header: the first wide, mostly textual row."""
    widths = [trimmed(r) for _, r in rows]
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
    width = trimmed(cells)
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


def preamble(
    rows: list[tuple[int, list[str]]], header: int, noun: str
) -> list[tuple[int, str, list[str]]]:
    """The rows before the header as (line, why skipped, cells)."""
    return [
        (n, f"blank {noun} before the header" if not trimmed(r) else "text before the header", r)
        for n, r in rows[:header]
    ]
