"""XLSX: a zip checked for bombs, one sheet read by python-calamine, its records.

The zip is checked before anything parses it (entries, unpacked size, compression
ratio, no DTDs), so a zip or entity bomb is refused early. python-calamine then reads
the workbook and holds the chosen sheet; cells become the text a person sees in the
spreadsheet, and line numbers are its row numbers.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from services.core.errors import InvalidInput
from services.core.imports.readers.chunks import Chunk, ChunkBuilder, Skips
from services.core.imports.readers.layout import (
    SAMPLE_ROWS,
    Layout,
    Limits,
    clean_headers,
    find_header,
    not_tabular,
    preamble,
)

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# Zip limits of an XLSX upload: a workbook has a few dozen entries and compresses ~5-20x.
MAX_ZIP_ENTRIES = 10_000
MAX_ZIP_RATIO = 200
_DTD = re.compile(rb"<!(?:DOCTYPE|ENTITY)", re.IGNORECASE)


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
                raise not_tabular("this zip archive is not an Excel workbook")
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
        raise not_tabular(f"the file looks like a workbook but is not a valid zip: {exc}") from None
    except (zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
        raise not_tabular(f"the workbook cannot be read: {exc}") from None


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
            raise not_tabular(f"the workbook cannot be read: {exc}") from None
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
    layout = Layout(
        kind="xlsx",
        headers=clean_headers(cells, limits),
        header_line=line,
        sheet=book.name,
        sheets=book.names,
        preamble=preamble(sample, index, "row"),
    )
    return layout, book


def read_xlsx(
    book: Workbook, layout: Layout, limits: Limits, skips: Skips, *, chunk_rows: int
) -> Iterator[Chunk]:
    """The records of the chosen sheet after its header, ``chunk_rows`` at a time."""
    skips.add_preamble(layout)
    width = len(layout.headers)
    builder = ChunkBuilder(width, limits, skips, chunk_rows, noun="row")
    # A footer row in a sheet has at most a third of the header's cells filled.
    sparse = max(1, width // 3)
    for line, cells in book.rows():
        if line <= layout.header_line:
            continue
        filled = sum(1 for c in cells if c.strip())
        if filled == 0 or (filled <= sparse and width > 2):
            # Held back like a short CSV line: a footer unless records follow it.
            chunk = builder.add_short(line, _fit(cells, width) if filled else [])
        else:
            # Blank cells right of the header are cut like a CSV line's trailing delimiters.
            chunk = builder.add_row(line, cells if len(cells) >= width else _fit(cells, width))
        if chunk is not None:
            chunk.position = line
            yield chunk
    last = builder.finish()
    if last is not None:
        last.position = book.first_row + book.height
        yield last


def _fit(cells: list[str], width: int) -> list[str]:
    return cells[:width] + [""] * (width - len(cells))
