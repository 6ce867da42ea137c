"""Workbooks made for tests, in every kind Ferry reads: xlsx, xlsb, xls and ods.

The xlsx, xlsb and ods writers are written out by hand, part by part, so a test can
also make what no spreadsheet program would: a cell at SF1048576, a dimension that
lies, a thousand sheets. ``.xls`` comes from xlwt (Excel 97-2003, BIFF8).

A sheet is a list of rows; a row a list of cells (``str``, ``int``, ``float``, ``date``
or ``None`` for an empty cell). ``far`` adds single cells by spreadsheet reference.
"""

from __future__ import annotations

import io
import struct
import zipfile
from datetime import date
from typing import Any
from xml.sax.saxutils import escape, quoteattr

Rows = list[list[Any]]
Sheets = dict[str, Rows]

# --- hostile shapes (the sparse-sheet files of issue 8) -------------------------------------

ORDERS: Rows = [
    ["Order Number", "Sale Date", "Item Title", "Sold For"],
    ["11-1", "2026-01-02", "Lamp", 12.5],
    ["11-2", "2026-01-03", "Desk", 120.0],
    ["11-3", "2026-01-04", "Chair", 45.25],
]
# shape → (how the orders sheet is spoilt, the used range Ferry must name when it refuses
# the file, or None when the file must import). Over the default limits: 500 columns, and
# 16,777,216 cells (1 GiB for the reader at 64 bytes a cell).
HOSTILE: dict[str, tuple[dict[str, Any], str | None]] = {
    "far-row": ({"far": {"T1048576": "x"}}, "A1:T1048576"),  # 20.9M cells
    "far-column": ({"far": {"XFD2": "x"}}, "A1:XFD4"),  # 16,384 columns
    "far-both": ({"far": {"SF1048576": "x"}}, "A1:SF1048576"),  # 524M cells
    "huge-declared-dimension": ({"dimension": "A1:XFD1048576"}, None),
}


def hostile_xlsx(shape: str) -> bytes:
    """The small orders sheet with one of the shapes in ``HOSTILE``; a few KB each."""
    options, _ = HOSTILE[shape]
    return xlsx({"Orders": ORDERS}, **options)


def many_sheets_xlsx(count: int = 300, *, data_at: int = 0) -> bytes:
    """``count`` sheets of two-row summaries, the orders on sheet number ``data_at``."""
    sheets: Sheets = {}
    for index in range(count):
        name = "Orders" if index == data_at else f"Summary {index + 1}"
        sheets[name] = ORDERS if index == data_at else [["Total", "Count"], [1, 2]]
    return xlsx(sheets)


# --- xlsx -------------------------------------------------------------------------------------

_CT = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
    'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-'
    'officedocument.spreadsheetml.sheet.main+xml"/></Types>'
)
_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>'
)
_SHEET_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet"


def column_name(index: int) -> str:
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(65 + rest) + name
    return name


def _split_ref(ref: str) -> tuple[int, int]:
    letters = "".join(c for c in ref if c.isalpha())
    col = 0
    for char in letters:
        col = col * 26 + ord(char) - 64
    return int(ref[len(letters) :]) - 1, col - 1


def _xlsx_cell(ref: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return f'<c r="{ref}" t="b"><v>{int(value)}</v></c>'
    if isinstance(value, int | float):
        return f'<c r="{ref}"><v>{value!r}</v></c>'
    if isinstance(value, date):
        value = value.isoformat()
    return f'<c r="{ref}" t="inlineStr"><is><t>{escape(str(value))}</t></is></c>'


def _xlsx_sheet(rows: Rows, far: dict[str, Any], dimension: str | None) -> str:
    cells: dict[int, list[tuple[int, Any]]] = {}
    for r, row in enumerate(rows):
        cells[r] = [(c, v) for c, v in enumerate(row)]
    for ref, value in far.items():
        r, c = _split_ref(ref)
        cells.setdefault(r, []).append((c, value))
    body = "".join(
        f'<row r="{r + 1}">'
        + "".join(_xlsx_cell(f"{column_name(c)}{r + 1}", v) for c, v in sorted(cells[r]))
        + "</row>"
        for r in sorted(cells)
    )
    width = max((len(row) for row in rows), default=1)
    dim = dimension or f"A1:{column_name(width - 1)}{max(len(rows), 1)}"
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        f'<dimension ref="{dim}"/><sheetData>{body}</sheetData></worksheet>'
    )


def xlsx(
    sheets: Sheets,
    *,
    far: dict[str, Any] | None = None,
    dimension: str | None = None,
    hidden: set[str] | None = None,
) -> bytes:
    """An xlsx of inline strings and numbers; ``far`` cells go on the first sheet."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", _CT)
        zf.writestr("_rels/.rels", _RELS)
        entries, rels = [], []
        for index, (name, rows) in enumerate(sheets.items(), start=1):
            state = ' state="hidden"' if name in (hidden or set()) else ""
            entries.append(
                f'<sheet name={quoteattr(name)} sheetId="{index}"{state} r:id="rId{index}"/>'
            )
            rels.append(
                f'<Relationship Id="rId{index}" Type="{_SHEET_REL}" '
                f'Target="worksheets/sheet{index}.xml"/>'
            )
            first = index == 1
            zf.writestr(
                f"xl/worksheets/sheet{index}.xml",
                _xlsx_sheet(rows, (far or {}) if first else {}, dimension if first else None),
            )
        zf.writestr(
            "xl/workbook.xml",
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
            'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
            f"<sheets>{''.join(entries)}</sheets></workbook>",
        )
        zf.writestr(
            "xl/_rels/workbook.xml.rels",
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f"{''.join(rels)}</Relationships>",
        )
    return out.getvalue()


# --- xlsb (BIFF12 records, as calamine reads them) ---------------------------------------------


def _record(kind: int, body: bytes = b"") -> bytes:
    head = bytes([kind]) if kind < 0x80 else bytes([(kind & 0x7F) | 0x80, kind >> 7])
    size, length = len(body), b""
    while True:
        byte = size & 0x7F
        size >>= 7
        length += bytes([byte | (0x80 if size else 0)])
        if not size:
            break
    return head + length + body


def _wide(text: str) -> bytes:
    return struct.pack("<I", len(text)) + text.encode("utf-16-le")


def _xlsb_cell(col: int, value: Any) -> bytes:
    style = struct.pack("<I", 0)
    if isinstance(value, bool):
        return _record(0x04, struct.pack("<I", col) + style + bytes([int(value)]))
    if isinstance(value, int | float):
        return _record(0x05, struct.pack("<I", col) + style + struct.pack("<d", float(value)))
    if isinstance(value, date):
        value = value.isoformat()
    return _record(0x06, struct.pack("<I", col) + style + _wide(str(value)))


def _xlsb_sheet(rows: Rows) -> bytes:
    width = max((len(row) for row in rows), default=1)
    parts = [
        _record(0x81),  # BrtBeginSheet
        _record(0x94, struct.pack("<4I", 0, max(len(rows) - 1, 0), 0, width - 1)),  # BrtWsDim
        _record(0x91),  # BrtBeginSheetData
    ]
    for r, row in enumerate(rows):
        parts.append(_record(0x00, struct.pack("<IIHH", r, 0, 300, 0)))  # BrtRowHdr
        parts += [_xlsb_cell(c, v) for c, v in enumerate(row) if v is not None]
    parts += [_record(0x92), _record(0x82)]  # BrtEndSheetData, BrtEndSheet
    return b"".join(parts)


def xlsb(sheets: Sheets) -> bytes:
    """A binary workbook: workbook.bin, its relationships and one .bin part per sheet."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", _CT.replace("workbook.xml", "workbook.bin"))
        zf.writestr("_rels/.rels", _RELS.replace("workbook.xml", "workbook.bin"))
        book = [_record(0x83)]  # BrtBeginBook
        rels = []
        for index, (name, rows) in enumerate(sheets.items(), start=1):
            body = struct.pack("<II", 0, index) + _wide(f"rId{index}") + _wide(name)
            book.append(_record(0x9C, body))  # BrtBundleSh
            rels.append(
                f'<Relationship Id="rId{index}" Type="{_SHEET_REL}" '
                f'Target="worksheets/sheet{index}.bin"/>'
            )
            zf.writestr(f"xl/worksheets/sheet{index}.bin", _xlsb_sheet(rows))
        book += [_record(0x90), _record(0x9D, b"\0" * 24), _record(0x84)]
        zf.writestr("xl/workbook.bin", b"".join(book))
        zf.writestr(
            "xl/_rels/workbook.bin.rels",
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f"{''.join(rels)}</Relationships>",
        )
    return out.getvalue()


# --- ods ----------------------------------------------------------------------------------------

_ODS_NS = (
    'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"'
)


def _ods_cell(value: Any) -> str:
    if value is None:
        return "<table:table-cell/>"
    if isinstance(value, bool):
        kind = f'office:value-type="boolean" office:boolean-value="{str(value).lower()}"'
    elif isinstance(value, int | float):
        kind = f'office:value-type="float" office:value="{value!r}"'
    elif isinstance(value, date):
        kind = f'office:value-type="date" office:date-value="{value.isoformat()}"'
    else:
        kind = 'office:value-type="string"'
    return f"<table:table-cell {kind}><text:p>{escape(str(value))}</text:p></table:table-cell>"


def ods(sheets: Sheets, *, trailing_empty_rows: int = 0) -> bytes:
    """An OpenDocument spreadsheet; LibreOffice's trailing repeated empty rows if asked."""
    tables = []
    for name, rows in sheets.items():
        body = "".join(
            "<table:table-row>" + "".join(map(_ods_cell, row)) + "</table:table-row>"
            for row in rows
        )
        if trailing_empty_rows:
            body += (
                f'<table:table-row table:number-rows-repeated="{trailing_empty_rows}">'
                '<table:table-cell table:number-columns-repeated="1024"/></table:table-row>'
            )
        tables.append(f"<table:table table:name={quoteattr(name)}>{body}</table:table>")
    content = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<office:document-content {_ODS_NS} office:version="1.2"><office:body>'
        f"<office:spreadsheet>{''.join(tables)}</office:spreadsheet>"
        "</office:body></office:document-content>"
    )
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" '
        'manifest:version="1.2"><manifest:file-entry manifest:full-path="/" '
        'manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/>'
        '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
        "</manifest:manifest>"
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        # The mimetype entry first and stored: that is how a reader knows an ODS file.
        zf.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet")
        zf.writestr("META-INF/manifest.xml", manifest, zipfile.ZIP_DEFLATED)
        zf.writestr("content.xml", content, zipfile.ZIP_DEFLATED)
    return out.getvalue()


# --- xls ----------------------------------------------------------------------------------------


def xls(sheets: Sheets) -> bytes:
    """An Excel 97-2003 workbook (BIFF8) written by xlwt; dates as real date cells."""
    import xlwt

    book = xlwt.Workbook(encoding="utf-8")
    dated = xlwt.easyxf(num_format_str="yyyy-mm-dd")
    for name, rows in sheets.items():
        sheet = book.add_sheet(name)
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                if isinstance(value, date):
                    sheet.write(r, c, value, dated)
                elif value is not None:
                    sheet.write(r, c, value)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


WRITERS = {"xlsx": xlsx, "xlsb": xlsb, "xls": xls, "ods": ods}
MEDIA_TYPES = {
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "xlsb": "application/vnd.ms-excel.sheet.binary.macroenabled.12",
    "xls": "application/vnd.ms-excel",
    "ods": "application/vnd.oasis.opendocument.spreadsheet",
}
