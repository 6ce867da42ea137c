"""A table need not start at A1: a sheet read from where its range starts.

Exports often leave the first rows empty or start the table a column in. python-calamine
gives such a sheet's range with its start, and its rows from the sheet's first row. A
user would notice a wrong count as "no records below a header row", or errors that
name the wrong row.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core.imports import readers
from services.core.imports.readers.chunks import Skips
from tests import workbooks

LIMITS = readers.Limits()
# Two empty rows, then the table from column C: the header on row 3, records on 4 and 5.
PLACED = [
    [],
    [],
    [None, None, "Order Number", "Sold For"],
    [None, None, "A-1", 12.5],
    [None, None, "A-2", 7.0],
]
WRITERS = {
    "xlsx": workbooks.xlsx,
    "xlsb": workbooks.xlsb,
    "ods": workbooks.ods,
    "xls": workbooks.xls,
}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_a_table_below_and_right_of_a1_reads_with_its_row_numbers(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / f"placed.{kind}"
    path.write_bytes(WRITERS[kind]({"Orders": PLACED}))
    book = readers.Workbook(path, kind, LIMITS)
    try:
        layout = readers.workbook_layout(book, LIMITS, None, lambda _headers: (1.0, "test"))
        chunks = list(readers.read_workbook(book, layout, Skips(), chunk_rows=10))
    finally:
        book.close()
    assert (layout.headers, layout.header_line) == (["Order Number", "Sold For"], 3)
    assert layout.sheets[0]["rows"] == 2
    assert [line for chunk in chunks for line in chunk.lines] == [4, 5]
    rows = [list(row) for chunk in chunks for row in zip(*chunk.columns, strict=True)]
    assert rows == [["A-1", "12.5"], ["A-2", "7"]]
