"""CSV: the encoding, the delimiter and the header row of a file, then its records.

The encoding comes from ``readers.encoding``. The delimiter is the one that cuts a
sample into the most regular columns. A line ends at CR, LF or CRLF, mixed as they
come. Line numbers are the physical lines a person sees in an editor (quoted line
breaks counted). Memory is bounded by one chunk: the file is read as a stream.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.core.errors import InvalidInput
from services.core.imports.readers.chunks import Chunk, ChunkBuilder, Skips, too_many_rows
from services.core.imports.readers.encoding import detect_encoding
from services.core.imports.readers.layout import (
    SAMPLE_ROWS,
    Layout,
    Limits,
    clean_headers,
    find_header,
    preamble,
    trimmed,
)

if TYPE_CHECKING:
    import pyarrow as pa

DELIMITERS = (",", ";", "\t", "|")
SAMPLE_CHARS = 64 * 1024


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
    # newline="": a line ends at CR, LF or CRLF (Excel for Mac writes CR alone).
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
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


def detect_delimiter(text: str) -> str:
    """The delimiter that splits the sample into the most consistent number of columns."""
    best: tuple[float, int, int, str] = (0.0, 1, 0, ",")
    for rank, delimiter in enumerate(DELIMITERS):
        counts = [trimmed(row) for _, row in _sample_rows(text, delimiter)]
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
    rows = _sample_rows(text, delimiter)
    index = find_header(rows)
    if index < 0:
        raise InvalidInput(
            "the file has no header row", errors=[{"field": "file", "message": "no header row"}]
        )
    line, cells = rows[index]
    return Layout(
        kind="csv",
        headers=clean_headers(cells, limits),
        header_line=line,
        encoding=codec,
        encoding_label=label,
        encoding_reason=reason,
        delimiter=delimiter,
        preamble=preamble(rows, index, "line"),
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
    skips.add_preamble(layout)
    errors = "strict" if layout.encoding.startswith("utf") else "replace"
    raw = _Counted(path)
    with io.TextIOWrapper(
        io.BufferedReader(raw), encoding=layout.encoding, errors=errors, newline=""
    ) as fh:
        reader = csv.reader(fh, delimiter=layout.delimiter)
        builder = ChunkBuilder(len(layout.headers), limits, skips, chunk_rows)
        read = _read_careful if careful else _read_fast
        try:
            for chunk in read(reader, builder, layout.header_line):
                chunk.position = raw.read_bytes
                yield chunk
        except csv.Error:
            raise ReadAgain from None  # only the fast way lets one through


class NotPlain(Exception):
    """The file is not plain enough for the Arrow reader; read it with the csv module."""


ARROW_ENCODINGS = frozenset({"utf-8", "utf-8-sig"})
ARROW_BLOCK = 256 * 1024


def arrow_fits(layout: Layout) -> bool:
    """Whether the Arrow reader may read the file: UTF-8 with the header on line 1.

    The Arrow reader reads every record as the csv module does, but counts no lines
    and cannot tell a blank line from a row of empty values: as it reads, each chunk
    is checked for a record over two lines and for a row with nothing in it.
    """
    return layout.encoding in ARROW_ENCODINGS and layout.header_line == 1


def read_csv_arrow(
    path: Path, layout: Layout, limits: Limits, skips: Skips, *, chunk_rows: int
) -> Iterator[Chunk]:
    """The records of a plain CSV file as Arrow string columns, ``chunk_rows`` at a time.

    Raises ``NotPlain`` (before or after some chunks) where the file is not plain: a
    row of another width, a value with a line break, a blank line (or a row of empty
    values: Arrow reads both alike), a value over the size limit, text that is not
    UTF-8. The caller reads the file again with the csv module then.
    """
    # Imported here: the workbook reader process imports this package, and Arrow's
    # libraries would take much of its capped address space.
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    assert layout.delimiter is not None
    width = len(layout.headers)
    irregular: list[Any] = []

    def invalid(row: Any) -> str:
        irregular.append(row)
        return "skip"

    skips.add_preamble(layout)
    try:
        # Arrow's own file: through a Python file object, Arrow's reader held more
        # memory the larger the file was.
        with pa.OSFile(str(path)) as fh:
            reader = pa_csv.open_csv(
                fh,
                read_options=pa_csv.ReadOptions(
                    block_size=ARROW_BLOCK, autogenerate_column_names=True
                ),
                parse_options=pa_csv.ParseOptions(
                    delimiter=layout.delimiter,
                    newlines_in_values=True,
                    ignore_empty_lines=False,
                    invalid_row_handler=invalid,
                ),
                convert_options=pa_csv.ConvertOptions(
                    column_types={f"f{i}": pa.string() for i in range(width)},
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
            if len(reader.schema) != width:
                raise NotPlain
            yield from _arrow_chunks(reader, fh, limits, irregular, layout, chunk_rows)
    except (pa.ArrowInvalid, UnicodeDecodeError):
        raise NotPlain from None


def _arrow_chunks(
    reader: Any,
    raw: Any,
    limits: Limits,
    irregular: list[Any],
    layout: Layout,
    chunk_rows: int,
) -> Iterator[Chunk]:
    """The batches Arrow reads, cut into chunks; the header row (the first) left out."""
    import pyarrow as pa

    pending: list[pa.RecordBatch] = []
    held = records = 0
    header = 1
    line = layout.header_line + 1
    for read in reader:
        if irregular:
            raise NotPlain
        batch = read.slice(min(header, read.num_rows))
        header -= read.num_rows - batch.num_rows
        pending.append(batch)
        held += batch.num_rows
        while held >= chunk_rows:
            table = pa.Table.from_batches(pending)
            chunk, rest = table.slice(0, chunk_rows), table.slice(chunk_rows)
            pending, held = rest.to_batches(), rest.num_rows
            records += chunk.num_rows
            yield _arrow_chunk(chunk, line, raw.tell(), limits, records)
            line += chunk.num_rows
    if irregular:
        raise NotPlain
    if held:
        table = pa.Table.from_batches(pending)
        yield _arrow_chunk(table, line, raw.tell(), limits, records + table.num_rows)


def _arrow_chunk(table: pa.Table, line: int, position: int, limits: Limits, records: int) -> Chunk:
    import numpy as np
    import pyarrow.compute as pc

    if records > limits.max_rows:
        raise too_many_rows(limits)
    columns = [table.column(i).combine_chunks() for i in range(table.num_columns)]
    lengths = [pc.binary_length(column) for column in columns]
    if len(table) and pc.any(pc.equal(pc.max_element_wise(*lengths), 0)).as_py():
        raise NotPlain  # a blank line, which the csv module skips
    for column, length in zip(columns, lengths, strict=True):
        data = column.buffers()[2]
        if data is not None:
            values = np.frombuffer(data, dtype=np.uint8)
            if np.any((values == 10) | (values == 13)):
                raise NotPlain  # a value with a line break spans lines
        if len(column) and pc.max(length).as_py() >= csv.field_size_limit():
            raise NotPlain  # the csv module makes a row error of it
    return Chunk(list(range(line, line + table.num_rows)), columns, position=position)


def _line_breaks(row: list[str]) -> int:
    return sum(f.count("\n") + f.count("\r") - f.count("\r\n") for f in row)


def _read_fast(reader: Any, builder: ChunkBuilder, header: int) -> Iterator[Chunk]:
    """Rows in batches; a batch of regular one-line rows costs no Python per row."""
    width, chunk_rows = builder.width, builder.chunk_rows
    while reader.line_num < header:  # the preamble and the header itself
        if next(reader, None) is None:
            return
    before = reader.line_num
    while batch := list(itertools.islice(reader, chunk_rows)):
        after = reader.line_num
        if after - before == len(batch) and set(map(len, batch)) == {width} and not builder.pending:
            builder.lines.extend(range(before + 1, after + 1))
            builder.rows.extend(batch)
            if len(builder.rows) >= chunk_rows:
                yield builder.take()
        else:
            yield from _row_by_row(builder, batch, before, after)
        before = after
    if (last := builder.finish()) is not None:
        yield last


def _row_by_row(
    builder: ChunkBuilder, batch: list[list[str]], before: int, after: int
) -> Iterator[Chunk]:
    """A batch with quoted line breaks, blank lines, short or long rows: each row in turn."""
    one_line_each = after - before == len(batch)
    starts: list[int] = []
    line = before + 1
    for row in batch:
        starts.append(line)
        line += 1 + (0 if one_line_each else _line_breaks(row))
    if line - 1 != after:
        raise csv.Error("line count mismatch")  # never expected; read carefully then
    for start, row in zip(starts, batch, strict=True):
        if (chunk := builder.add_row(start, row)) is not None:
            yield chunk


def _read_careful(reader: Any, builder: ChunkBuilder, header: int) -> Iterator[Chunk]:
    """Row by row; a row the csv module cannot read becomes a row error, and reading goes on."""
    width, chunk_rows = builder.width, builder.chunk_rows
    prev = 0
    chunk: Chunk | None
    while True:
        try:
            # The hot loop: a regular row is two appends; anything else goes to the builder.
            lines, rows = builder.lines, builder.rows
            for row in reader:
                start = prev + 1
                prev = reader.line_num
                if len(row) == width and not builder.pending and start > header:
                    lines.append(start)
                    rows.append(row)
                    if len(rows) < chunk_rows:
                        continue
                    chunk = builder.take()
                elif start <= header:
                    continue
                else:
                    chunk = builder.add_row(start, row)
                if chunk is not None:
                    yield chunk
                    lines, rows = builder.lines, builder.rows
            break
        except csv.Error as exc:
            start = prev + 1
            prev = reader.line_num
            chunk = builder.add_unreadable(start, _csv_error(exc))
            if chunk is not None:
                yield chunk
    if (last := builder.finish()) is not None:
        yield last


def _csv_error(exc: csv.Error) -> str:
    if "field larger than field limit" in str(exc):
        return (
            f"a value is longer than {csv.field_size_limit():,} characters (the limit); "
            "the row was not read"
        )
    return f"the row could not be read: {exc}"
