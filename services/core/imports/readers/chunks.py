"""Records in chunks, the same for both readers: ``Chunk``, ``Skips`` and the builder.

The builder takes rows one at a time (or a regular batch straight into ``lines`` and
``rows``) and hands back a ``Chunk`` every ``chunk_rows`` records. Rows narrower than
the header are held back until the builder knows whether data follows them (then
they are records with values missing) or not (then they are report footers).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from services.core.errors import InvalidInput
from services.core.imports.readers.layout import Layout, Limits, trimmed

if TYPE_CHECKING:  # the workbook reader process imports this module, and no Arrow
    import pyarrow as pa

Row = list[str] | tuple[str, ...]
# Rows that look incomplete after the data are footers only if few; more are data errors.
MAX_PENDING = 1000


def _text(cells: Row) -> str:
    return " ".join(c.strip() for c in cells if c.strip())


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

    def add_preamble(self, layout: Layout) -> None:
        """The lines before the header, as the layout found them."""
        for line, reason, cells in layout.preamble:
            self.add(line, reason, _text(cells))

    def document(self) -> dict[str, Any]:
        reasons = Counter(entry["reason"] for entry in self.lines)
        return {"count": self.count, "reasons": dict(reasons), "lines": self.lines}


def too_many_rows(limits: Limits) -> InvalidInput:
    return InvalidInput(
        f"the file has more than {limits.max_rows:,} records; split it",
        errors=[{"field": "file", "message": "too many rows"}],
    )


@dataclass
class Chunk:
    """Up to ``chunk_rows`` records as columns, with their lines and row-level errors."""

    lines: list[int]
    # One per source column: a tuple of strings, or an Arrow string array (the Arrow reader).
    columns: list[tuple[str, ...]] | list[pa.StringArray]
    # Index in the chunk → message about the row as a whole (wrong number of values …).
    row_errors: dict[int, str] = field(default_factory=dict)
    # Rows that could not be read at all: only their row error is reported.
    unreadable: set[int] = field(default_factory=set)
    # How far the reader had got when the chunk was cut, for progress: bytes of a CSV
    # file, spreadsheet rows of a sheet (the unit pipeline reports beside it).
    position: int = 0

    def __len__(self) -> int:
        return len(self.lines)

    def row(self, index: int) -> list[str]:
        cells = [column[index] for column in self.columns]
        return [c if isinstance(c, str) else c.as_py() for c in cells]


class ChunkBuilder:
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
        self.rows: list[Row] = []
        self.row_errors: dict[int, str] = {}
        self.unreadable: set[int] = set()
        self.pending: list[tuple[int, Row]] = []
        self.records = 0
        self._blank = [""] * width

    def _append(self, line: int, row: Row) -> None:
        self.lines.append(line)
        self.rows.append(row)

    def _flush_pending(self) -> None:
        # Incomplete rows followed by more data are records with something missing.
        for line, row in self.pending:
            if not trimmed(row):
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
            raise too_many_rows(self.limits)
        columns: list[tuple[str, ...]] = (
            list(zip(*self.rows, strict=True)) if self.rows else [() for _ in range(self.width)]
        )
        chunk = Chunk(self.lines, columns, self.row_errors, self.unreadable)
        self.lines, self.rows, self.row_errors, self.unreadable = [], [], {}, set()
        return chunk

    def take_columns(self, lines: list[int], columns: list[tuple[str, ...]]) -> Chunk:
        """A chunk of regular records given as columns (nothing may be collected yet)."""
        assert not self.rows
        assert not self.pending
        self.records += len(lines)
        if self.records > self.limits.max_rows:
            raise too_many_rows(self.limits)
        return Chunk(lines, columns)

    def add_row(self, line: int, row: Row) -> Chunk | None:
        """A record of any width: as it is, cut to the header's width, or held back if short."""
        n = len(row)
        if n == self.width:
            return self.add(line, row)
        if n > self.width:
            return self.add_long(line, row)
        return self.add_short(line, row)

    def add(self, line: int, row: Row) -> Chunk | None:
        if self.pending:
            self._flush_pending()
        self._append(line, row)
        return self._ready()

    def add_long(self, line: int, row: Row) -> Chunk | None:
        if not any(cell.strip() for cell in row[self.width :]):
            return self.add(line, row[: self.width])  # trailing delimiters
        if self.pending:
            self._flush_pending()
        self.row_errors[len(self.rows)] = f"has {trimmed(row)} values; the header has {self.width}"
        self._append(line, row[: self.width])
        return self._ready()

    def add_short(self, line: int, row: Row) -> Chunk | None:
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
            if not trimmed(row):
                self.skips.add(line, f"blank {self.noun}")
            else:
                self.skips.add(line, "report footer after the data, not a record", _text(row))
        self.pending.clear()
        if not self.rows:
            return None
        return self.take()
