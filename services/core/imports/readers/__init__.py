"""Reading uploads: what kind of file it is, how it is encoded and laid out, and its records.

A reader yields ``Chunk``s: the values of up to ``chunk_rows`` records as *columns*
(a tuple of strings or an Arrow string array per source column), with the line
number a person sees when opening the file (CSV: the physical line where the record
starts, quoted newlines counted; a workbook: the spreadsheet row). Lines that are
not records — blank lines, text before the header, report footers after the data —
are counted in ``Skips``.

- ``layout``   — file kind by its first bytes, limits, header row (every kind)
- ``chunks``   — ``Chunk``, ``Skips`` and the builder that holds back footers
- ``encoding`` — BOM, UTF-8, or the code page that reads a file's text best
- ``csv``      — line ends, delimiter, fast and careful CSV reading
- ``guard``    — zip-bomb checks and each sheet's used range; its verdict comes first
- ``sheets``   — the reader process of a workbook (python-calamine, memory-capped)
- ``workbook`` — starts that process, chooses the sheet, hands its chunks on

Memory is bounded by one chunk for CSV. A workbook (xlsx, xlsb, xls, ods) is parsed
by python-calamine, which holds a whole sheet, in a process of its own whose address
space is capped: the guard refuses a sheet whose used range is over the cell budget,
and whatever else goes wrong in there cannot take the worker down.
"""

from services.core.imports.readers.chunks import Chunk, Skips
from services.core.imports.readers.csv import (
    NotPlain,
    ReadAgain,
    arrow_fits,
    csv_layout,
    detect_delimiter,
    read_csv,
    read_csv_arrow,
)
from services.core.imports.readers.encoding import detect_encoding
from services.core.imports.readers.guard import check_workbook, check_zip
from services.core.imports.readers.layout import (
    WORKBOOKS,
    Kind,
    Layout,
    Limits,
    cell_budget,
    clean_headers,
    find_header,
    sniff_kind,
)
from services.core.imports.readers.sheets import cell_text
from services.core.imports.readers.workbook import (
    ReadWhole,
    Score,
    Workbook,
    keep_spare,
    read_workbook,
    workbook_layout,
)

# Media types of the workbooks browsers and clients send.
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
WORKBOOK_TYPES = frozenset(
    {
        XLSX_TYPE,
        "application/vnd.ms-excel",  # .xls (and what browsers on Windows call a .csv file)
        "application/vnd.ms-excel.sheet.binary.macroenabled.12",  # .xlsb
        "application/vnd.oasis.opendocument.spreadsheet",  # .ods
    }
)

__all__ = [
    "WORKBOOKS",
    "WORKBOOK_TYPES",
    "XLSX_TYPE",
    "Chunk",
    "Kind",
    "Layout",
    "Limits",
    "NotPlain",
    "ReadAgain",
    "ReadWhole",
    "Score",
    "Skips",
    "Workbook",
    "arrow_fits",
    "cell_budget",
    "cell_text",
    "check_workbook",
    "check_zip",
    "clean_headers",
    "csv_layout",
    "detect_delimiter",
    "detect_encoding",
    "find_header",
    "keep_spare",
    "read_csv",
    "read_csv_arrow",
    "read_workbook",
    "sniff_kind",
    "workbook_layout",
]
