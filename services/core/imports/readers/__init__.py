"""Reading uploads: what kind of file it is, how it is encoded and laid out, and its records.

A reader yields ``Chunk``s: the values of up to ``chunk_rows`` records as *columns*
(one tuple of strings per source column), with the line number a person sees when
opening the file (CSV: the physical line where the record starts, quoted newlines
counted; XLSX: the spreadsheet row). Lines that are not records — blank lines, text
before the header, report footers after the data — are counted in ``Skips`` with why.

- ``layout`` — file kind by its first bytes, limits, header row (both kinds)
- ``chunks`` — ``Chunk``, ``Skips`` and the builder that holds back footers (both kinds)
- ``csv``    — encoding, delimiter, fast and careful CSV reading
- ``xlsx``   — zip-bomb guard, the sheet, cells as text

Memory is bounded by one chunk for CSV. XLSX is read by python-calamine, which holds
one sheet; the zip is checked first, so a zip or entity bomb is refused before
anything parses it.
"""

from services.core.imports.readers.chunks import Chunk, Skips
from services.core.imports.readers.csv import (
    ReadAgain,
    csv_layout,
    detect_delimiter,
    detect_encoding,
    read_csv,
)
from services.core.imports.readers.layout import (
    Kind,
    Layout,
    Limits,
    clean_headers,
    find_header,
    sniff_kind,
)
from services.core.imports.readers.xlsx import (
    XLSX_TYPE,
    Workbook,
    cell_text,
    check_zip,
    read_xlsx,
    xlsx_layout,
)

__all__ = [
    "XLSX_TYPE",
    "Chunk",
    "Kind",
    "Layout",
    "Limits",
    "ReadAgain",
    "Skips",
    "Workbook",
    "cell_text",
    "check_zip",
    "clean_headers",
    "csv_layout",
    "detect_delimiter",
    "detect_encoding",
    "find_header",
    "read_csv",
    "read_xlsx",
    "sniff_kind",
    "xlsx_layout",
]
