"""What a workbook is allowed to cost, checked before anything read from it is used.

python-calamine reads a sheet into a *dense* range: one 32-byte cell for every
position between the first and the last filled cell. A 4.7 KB file with one value at
SF1048576 therefore asks for 16 GB, and Rust aborts the process when that fails (the
reader process is capped, so only it dies; see ``readers.sheets`` for how the guard
runs beside calamine and, after such a death, before it). The guard:

- a zip (xlsx, xlsb, ods) is checked for bombs: entries, declared and real unpacked
  size, compression ratio, no DTD or entity declaration in its XML parts;
- every sheet's *used range* — the rows and columns its filled cells really name,
  not what the file declares (``<dimension ref>``) — is found by a streaming scan of
  the sheet (XML, or binary records for xlsb), bounded by the unpacked-size limit;
- a sheet whose used range holds more cells than ``Limits.max_cells`` is refused,
  naming the sheet and the range.

An ``.xls`` is an OLE file, not a zip: it is not compressed, so the upload limit bounds
it, and the BIFF8 format bounds a sheet to 65,536 x 256 cells. What no scan can bound
(calamine's own allocations, a lying ``.xls``) is bounded by the reader process's
memory limit (``readers.workbook``).
"""

from __future__ import annotations

import re
import struct
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from xml.etree import ElementTree

from services.core.errors import InvalidInput
from services.core.imports.readers.layout import Limits, not_tabular

# Zip limits of an upload: a workbook has a few dozen entries and compresses ~5-20x.
MAX_ZIP_ENTRIES = 10_000
MAX_ZIP_RATIO = 200
BLOCK = 1024 * 1024
# Small XML parts read whole (workbook.xml, its relationships).
MAX_PART_BYTES = 8 * 1024 * 1024
_DTD = re.compile(rb"<!(?:DOCTYPE|ENTITY)", re.IGNORECASE)
ODS_MIMETYPE = b"application/vnd.oasis.opendocument.spreadsheet"
_NS_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


@dataclass
class UsedRange:
    """The cells a sheet really fills (0-based, inclusive), and what it declares."""

    first_row: int = -1
    last_row: int = -1
    first_col: int = -1
    last_col: int = -1
    declared: str | None = None

    @property
    def empty(self) -> bool:
        return self.last_row < 0

    @property
    def cells(self) -> int:
        """Cells of the dense range a reader allocates for it."""
        if self.empty:
            return 0
        return (self.last_row - self.first_row + 1) * (self.last_col - self.first_col + 1)

    def add(self, row: int, col: int) -> None:
        if self.empty:
            self.first_row = self.last_row = row
            self.first_col = self.last_col = col
            return
        self.first_row = min(self.first_row, row)
        self.last_row = max(self.last_row, row)
        self.first_col = min(self.first_col, col)
        self.last_col = max(self.last_col, col)

    def add_span(self, rows: tuple[int, int], cols: tuple[int, int]) -> None:
        self.add(rows[0], cols[0])
        self.add(rows[1], cols[1])

    @property
    def ref(self) -> str:
        """``A1:I100001``, as a spreadsheet names the range."""
        if self.empty:
            return "(empty)"
        return (
            f"{column_name(self.first_col)}{self.first_row + 1}:"
            f"{column_name(self.last_col)}{self.last_row + 1}"
        )


@dataclass
class Guarded:
    """A workbook that passed the checks: its kind, and each sheet's used range by name.

    ``quick``: the sheet whose range its cutting into parts found (``check_zip``)."""

    kind: str
    ranges: dict[str, UsedRange]
    quick: str | None = None


@dataclass
class Quick:
    """An xlsx part read as it is unpacked by ``cut``, which finds its used range on the
    way (or declines: None), in place of the guard's scan; ``before`` is told the other
    sheets' verdict before it starts (``readers.typed``)."""

    part: str
    cut: Callable[[Iterator[bytes]], UsedRange | None]
    before: Callable[[Guarded], None] | None = None


def column_name(index: int) -> str:
    """0 → ``A``, 499 → ``SF``."""
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(65 + rest) + name
    return name


def column_index(letters: bytes | str) -> int:
    """``A`` → 0, ``SF`` → 499."""
    index = 0
    for char in letters.upper() if isinstance(letters, str) else letters.decode().upper():
        index = index * 26 + ord(char) - 64
    return index - 1


def over_budget(sheet: str, used: UsedRange, limits: Limits) -> InvalidInput | None:
    """The refusal of a sheet whose used range is wider than the column limit or holds
    more cells than the budget, if it is."""
    width = used.last_col - used.first_col + 1
    if used.empty or (width <= limits.max_columns and used.cells <= limits.max_cells):
        return None
    declared = f" (it declares {used.declared})" if used.declared else ""
    if width > limits.max_columns:
        size = f"{width:,} columns; Ferry reads at most {limits.max_columns:,}"
    else:
        size = f"{used.cells:,} cells; Ferry reads at most {limits.max_cells:,} cells of a sheet"
    message = (
        f"the sheet {sheet!r} uses the range {used.ref}{declared}: {size}. A stray value far "
        "from the data? Delete the rows and columns after the data and save the file again"
    )
    return InvalidInput(message, errors=[{"field": "file", "message": f"range {used.ref}"}])


# --- the zip ------------------------------------------------------------------------------


def _bomb(why: str) -> InvalidInput:
    message = f"the workbook is refused: {why} — it looks like a zip bomb"
    return InvalidInput(message, errors=[{"field": "file", "message": "zip bomb"}])


def zip_kind(names: set[str], zf: zipfile.ZipFile) -> str:
    """xlsx, xlsb or ods by the archive's parts; InvalidInput for any other zip."""
    if "xl/workbook.bin" in names:
        return "xlsb"
    if "xl/workbook.xml" in names or "[Content_Types].xml" in names:
        return "xlsx"
    if "content.xml" in names and "mimetype" in names:
        with zf.open("mimetype") as fh:
            if fh.read(256).strip() == ODS_MIMETYPE:
                return "ods"
    raise not_tabular("this zip archive is not a spreadsheet (xlsx, xlsb or ods)")


def check_sizes(infos: list[zipfile.ZipInfo], limits: Limits) -> None:
    """Refuse a zip of too many entries, or declaring too much, or too compressed."""
    if len(infos) > MAX_ZIP_ENTRIES:
        raise _bomb(f"it has {len(infos):,} entries (at most {MAX_ZIP_ENTRIES:,})")
    declared = sum(i.file_size for i in infos)
    if declared > limits.max_unpacked_bytes:
        raise _bomb(f"it would unpack to {declared:,} bytes")
    for info in infos:
        if info.file_size > 1024 * 1024 and info.file_size > MAX_ZIP_RATIO * max(
            info.compress_size, 1
        ):
            ratio = info.file_size // max(info.compress_size, 1)
            raise _bomb(f"{info.filename} is compressed {ratio:,}:1")


class _Unpacked:
    """Counts every byte decompressed, across all entries, against the limit."""

    def __init__(self, limits: Limits) -> None:
        self.limit = limits.max_unpacked_bytes
        self.total = 0

    def blocks(self, fh: IO[bytes], name: str, *, entities: bool = True) -> Iterator[bytes]:
        """The entry in blocks; refused at the first sign of a bomb. ``entities``: look
        for entity declarations in an XML part here (else its reader does)."""
        xml = entities and name.endswith((".xml", ".rels", ".vml"))
        tail = b""
        while block := fh.read(BLOCK):
            self.total += len(block)
            if self.total > self.limit:
                raise _bomb(f"it unpacks to more than {self.limit:,} bytes")
            if xml and (_DTD.search(block) or _DTD.search(tail + block[:16])):
                raise _entities(name)
            tail = block[-16:]
            yield block


def _entities(name: str) -> InvalidInput:
    return InvalidInput(
        f"the workbook is refused: {name} declares a DTD or XML entities, "
        "which spreadsheet programs never write (an entity bomb?)",
        errors=[{"field": "file", "message": "XML entity declarations"}],
    )


def check_zip(path: Path, limits: Limits, quick: Quick | None = None) -> Guarded:
    """Refuse bombs and oversized sheets of a zipped workbook; each sheet's used range.

    Declared sizes can lie, so every entry is decompressed (bounded, streaming) and
    counted; the sheets are scanned for their used range on the same pass. ``quick``:
    an xlsx part read last, by what cuts it into parts as it is unpacked, finding its
    range on the way, in place of the scan; where that declines, the part is scanned as
    any other.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            check_sizes(infos, limits)
            names = {i.filename for i in infos}
            kind = zip_kind(names, zf)
            unpacked = _Unpacked(limits)
            parts: dict[str, UsedRange] = {}
            scan = {"xlsx": _scan_xlsx_sheet, "xlsb": _scan_xlsb_sheet, "ods": _scan_ods}[kind]
            cut = quick if kind == "xlsx" and quick is not None and quick.part in names else None
            by_name = xlsx_sheet_parts(zf) if kind == "xlsx" else {}
            if cut is not None:
                infos = [i for i in infos if i.filename != cut.part] + [zf.getinfo(cut.part)]
            quick_sheet = None
            rechecked: set[str] = set()
            for info in infos:
                if cut is not None and info.filename == cut.part:
                    quick_sheet = _cut(zf, info, cut, unpacked, parts, limits, by_name, rechecked)
                    if quick_sheet is not None:
                        continue
                with zf.open(info) as fh:
                    blocks = unpacked.blocks(fh, info.filename)
                    if is_sheet_part(kind, info.filename):
                        parts[info.filename] = scan(blocks, parts)
                    else:
                        for _ in blocks:
                            pass
            if kind != "xlsx":
                return Guarded(kind, _by_sheet_name(kind, zf, parts))
            _recheck(zf, parts, limits, rechecked)
            ranges = {name: parts[part] for name, part in by_name.items() if part in parts}
            return Guarded(kind, ranges, quick_sheet)
    except zipfile.BadZipFile as exc:
        raise not_tabular(f"the file looks like a workbook but is not a valid zip: {exc}") from None
    except (zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
        raise not_tabular(f"the workbook cannot be read: {exc}") from None


def _cut(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    quick: Quick,
    unpacked: _Unpacked,
    parts: dict[str, UsedRange],
    limits: Limits,
    by_name: dict[str, str],
    rechecked: set[str],
) -> str | None:
    """Read the ``quick`` part, the others read: its sheet's name, or None if declined."""
    name = next((n for n, part in by_name.items() if part == quick.part), None)
    if name is None:
        return None
    if quick.before is not None:
        _recheck(zf, parts, limits, rechecked)
        others = {n: parts[part] for n, part in by_name.items() if part in parts}
        quick.before(Guarded("xlsx", others, name))
    before = unpacked.total
    with zf.open(info) as fh:
        used = quick.cut(unpacked.blocks(fh, info.filename, entities=False))
    if used is None:
        unpacked.total = before  # scanned again, from its start
        return None
    parts[info.filename] = used
    return name


_SHEET_FOLDERS = frozenset({"xl/worksheets", "xl/macrosheets", "xl/dialogsheets", "xl/chartsheets"})


def _recheck(
    zf: zipfile.ZipFile, parts: dict[str, UsedRange], limits: Limits, rechecked: set[str]
) -> None:
    """Scan again, carefully, a sheet the fast scan found over the budget (it counts
    empty cells): only what calamine would place is refused. ``rechecked``: the parts
    already scanned so, each once."""
    for name, used in parts.items():
        if name not in rechecked and over_budget(name, used, limits) is not None:
            rechecked.add(name)
            with zf.open(name) as fh:
                blocks = iter(lambda: fh.read(BLOCK), b"")
                again = _scan_xlsx_sheet(blocks, parts, careful_only=True)
            again.declared = used.declared
            parts[name] = again


def is_sheet_part(kind: str, name: str) -> bool:
    """Whether the zip entry ``name`` is a sheet of a workbook of this kind."""
    if kind == "ods":
        return name == "content.xml"
    if kind == "xlsb":
        return name.startswith("xl/worksheets/") and name.endswith(".bin")
    folder = name.rsplit("/", 1)[0]
    return folder in _SHEET_FOLDERS and name.endswith(".xml")


def _part_xml(zf: zipfile.ZipFile, name: str) -> ElementTree.Element | None:
    """A small XML part, parsed; None if absent. Its entity declarations are refused
    here too: the choice of a sheet to cut into parts (``readers.typed``) reads this
    before the scan."""
    try:
        with zf.open(name) as fh:
            data = fh.read(MAX_PART_BYTES + 1)
    except KeyError:
        return None
    if len(data) > MAX_PART_BYTES:
        raise not_tabular(f"the workbook's {name} is larger than {MAX_PART_BYTES:,} bytes")
    if _DTD.search(data):
        raise _entities(name)
    try:
        return ElementTree.fromstring(data)  # noqa: S314 - no DTD (checked), bounded size
    except ElementTree.ParseError as exc:
        raise not_tabular(f"the workbook cannot be read: {name}: {exc}") from None


def _relationships(zf: zipfile.ZipFile, name: str) -> dict[str, str]:
    """Relationship id → part name, from ``xl/_rels/workbook.*.rels``."""
    root = _part_xml(zf, name)
    targets: dict[str, str] = {}
    for rel in root.iter() if root is not None else ():
        if rel.tag.endswith("Relationship") and rel.get("Id") and rel.get("Target"):
            target = str(rel.get("Target"))
            targets[str(rel.get("Id"))] = (
                target.lstrip("/") if target.startswith("/") else f"xl/{target}"
            )
    return targets


def _by_sheet_name(
    kind: str, zf: zipfile.ZipFile, parts: dict[str, UsedRange]
) -> dict[str, UsedRange]:
    """The ranges of an ods or xlsb by sheet name (an xlsx's: ``xlsx_sheet_parts``)."""
    if kind == "ods":
        return {k.removeprefix("ods:"): v for k, v in parts.items() if k.startswith("ods:")}
    rels = _relationships(zf, "xl/_rels/workbook.bin.rels")
    with zf.open("xl/workbook.bin") as fh:
        sheets = _xlsb_sheets(fh.read(MAX_PART_BYTES))
    return {name: parts[rels[rid]] for name, rid in sheets if rels.get(rid) in parts}


def xlsx_sheet_parts(zf: zipfile.ZipFile) -> dict[str, str]:
    """Sheet name → the part that holds it (``xl/worksheets/sheet1.xml``), in an xlsx."""
    rels = _relationships(zf, "xl/_rels/workbook.xml.rels")
    root = _part_xml(zf, "xl/workbook.xml")
    sheets = [
        (str(s.get("name")), str(s.get(f"{{{_NS_REL}}}id")))
        for s in (root.iter() if root is not None else ())
        if s.tag.endswith("}sheet") and s.get("name") is not None
    ]
    return {name: rels[rid] for name, rid in sheets if rid in rels}


# --- xlsx: the sheet XML --------------------------------------------------------------------

# A cell in the form every spreadsheet program writes: ``r`` first. The fast scan counts
# empty (self-closing) cells too, which calamine leaves out of the range; a sheet it
# finds over the budget is scanned again carefully before it is refused.
_CELL_COLS = re.compile(rb'<c r="([A-Z]{1,3})')
_CELL_ROWS = re.compile(rb'<c r="[A-Z]{1,3}(\d{1,7})')
# Every cell and row tag, any prefix and attribute order (the careful scan).
_TAG = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?(c|row)(?=[\s>/])([^>]*)>")
_ATTR_R = re.compile(rb'\sr="([A-Z]*)(\d*)"')
_PREFIXED_ROOT = re.compile(rb"<[A-Za-z_][\w.-]*:worksheet[\s>]")
_DIMENSION = re.compile(rb'<(?:\w+:)?dimension\s+ref="([A-Z]*\d*)(?::([A-Z]*\d*))?"')


class _CarefulXlsx:
    """Cell positions as calamine finds them: ``r`` when given, else next to the last."""

    def __init__(self) -> None:
        self.row = -1
        self.col = -1

    def feed(self, chunk: bytes, used: UsedRange) -> None:
        for tag, attrs in _TAG.findall(chunk):
            found = _ATTR_R.search(attrs)
            letters, digits = found.groups() if found else (b"", b"")
            if tag == b"row":
                self.row = int(digits) - 1 if digits else self.row + 1
                self.col = -1
                continue
            self.col = column_index(letters) if letters else self.col + 1
            if digits:
                self.row = int(digits) - 1
            if not attrs.endswith(b"/"):
                used.add(max(self.row, 0), self.col)


def _canonical(chunk: bytes) -> bool:
    """Every cell tag of the chunk starts ``<c r="`` (no prefix, ``r`` first)."""
    return b"<c>" not in chunk and chunk.count(b"<c ") == chunk.count(b'<c r="')


def _scan_xlsx_sheet(
    blocks: Iterator[bytes], parts: dict[str, UsedRange], *, careful_only: bool = False
) -> UsedRange:
    """The used range of one sheet's XML, streaming; whole tags only per step.

    Where every cell is written ``<c r="…">`` (all programs do), two regular expressions
    find the columns and rows at C speed; otherwise each tag is looked at in order.
    """
    used = UsedRange()
    careful: _CarefulXlsx | None = _CarefulXlsx() if careful_only else None
    rest = b""
    for block in blocks:
        data = rest + block
        cut = data.rfind(b">") + 1
        chunk, rest = data[:cut], data[cut:]
        if used.declared is None:
            used.declared = declared_range(chunk)
        if careful is None and (_PREFIXED_ROOT.search(chunk[:4096]) or not _canonical(chunk)):
            careful = _CarefulXlsx()
        if careful is None:
            _fast_cells(chunk, used)
        else:
            careful.feed(chunk, used)
    return used


def declared_range(xml: bytes) -> str | None:
    """What a sheet's XML declares its range to be (``<dimension ref>``), if it does."""
    found = _DIMENSION.search(xml)
    return b":".join(g for g in found.groups() if g).decode() if found else None


def _fast_cells(chunk: bytes, used: UsedRange) -> None:
    letters = set(_CELL_COLS.findall(chunk))
    if not letters:
        return
    rows = list(map(int, set(_CELL_ROWS.findall(chunk))))
    cols = list(map(column_index, letters))
    used.add_span((min(rows) - 1, max(rows) - 1), (min(cols), max(cols)))


# --- xlsb: binary records -----------------------------------------------------------------

BRT_ROW_HDR = 0x0000
BRT_CELLS = frozenset(range(0x02, 0x0C))  # real, rk, error, bool, string, isst, formulas
BRT_WS_DIM = 0x0094
BRT_BUNDLE_SH = 0x009C


def _records(blocks: Iterator[bytes]) -> Iterator[tuple[int, bytes]]:
    """(type, body) of each BIFF12 record of a streamed part."""
    data = b""
    pos = 0
    for block in blocks:
        data = data[pos:] + block
        pos = 0
        while True:
            parsed = _record_at(data, pos)
            if parsed is None:
                break
            kind, start, end = parsed
            yield kind, data[start:end]
            pos = end
    if pos < len(data) and data[pos:].strip(b"\0"):
        raise not_tabular("the workbook cannot be read: a sheet ends in the middle of a record")


def _varint(data: bytes, pos: int, width: int) -> tuple[int, int] | None:
    value = 0
    for i in range(width):
        if pos + i >= len(data):
            return None
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    return value, pos + width


def _record_at(data: bytes, pos: int) -> tuple[int, int, int] | None:
    kind = _varint(data, pos, 2)
    if kind is None:
        return None
    size = _varint(data, kind[1], 4)
    if size is None or size[1] + size[0] > len(data):
        return None
    return kind[0], size[1], size[1] + size[0]


def _scan_xlsb_sheet(blocks: Iterator[bytes], parts: dict[str, UsedRange]) -> UsedRange:
    used = UsedRange()
    row = 0
    for kind, body in _records(blocks):
        if kind in BRT_CELLS and len(body) >= 4:
            used.add(row, struct.unpack_from("<I", body)[0])
        elif kind == BRT_ROW_HDR and len(body) >= 4:
            row = struct.unpack_from("<I", body)[0]
        elif kind == BRT_WS_DIM and len(body) >= 16:
            r1, r2, c1, c2 = struct.unpack_from("<4I", body)
            used.declared = f"{column_name(c1)}{r1 + 1}:{column_name(c2)}{r2 + 1}"
    return used


def _wide(body: bytes, pos: int) -> tuple[str, int]:
    (count,) = struct.unpack_from("<I", body, pos)
    if count == 0xFFFFFFFF:
        return "", pos + 4
    end = pos + 4 + 2 * count
    return body[pos + 4 : end].decode("utf-16-le", "replace"), end


def _xlsb_sheets(data: bytes) -> list[tuple[str, str]]:
    """(name, relationship id) of each sheet in ``xl/workbook.bin``."""
    sheets = []
    for kind, body in _records(iter([data])):
        if kind == BRT_BUNDLE_SH and len(body) >= 12:
            rid, pos = _wide(body, 8)
            name, _ = _wide(body, pos)
            sheets.append((name, rid))
    return sheets


# --- ods: content.xml ------------------------------------------------------------------------

_ODS_TAG = re.compile(
    rb"<(/?)table:(table|table-row|table-cell|covered-table-cell)(?=[\s>/])([^>]*)>"
)
_ODS_NAME = re.compile(rb'table:name="([^"]*)"')
_ODS_ROWS = re.compile(rb'table:number-rows-repeated="(\d+)"')
_ODS_COLS = re.compile(rb'table:number-columns-repeated="(\d+)"')


class _OdsScan:
    """Every table's used range: repeated rows and cells counted, empty ones not."""

    def __init__(self, parts: dict[str, UsedRange]) -> None:
        self.parts = parts
        self.used: UsedRange | None = None
        self.row = self.col = 0
        self.repeat = 1

    def feed(self, chunk: bytes) -> None:
        for close, tag, attrs in _ODS_TAG.findall(chunk):
            if tag == b"table" and not close:
                name = _ODS_NAME.search(attrs)
                key = "ods:" + (name.group(1).decode("utf-8", "replace") if name else "")
                self.used = self.parts.setdefault(key, UsedRange())
                self.row = 0
            elif tag == b"table-row" and not close:
                self.col = 0
                rows = _ODS_ROWS.search(attrs)
                self.repeat = int(rows.group(1)) if rows else 1
            elif tag == b"table-row":
                self.row += self.repeat
            elif not close:
                self._cell(attrs)

    def _cell(self, attrs: bytes) -> None:
        cols = _ODS_COLS.search(attrs)
        span = int(cols.group(1)) if cols else 1
        # A cell with a value type, or with content (not self-closing), is filled.
        if self.used is not None and (b"value-type" in attrs or not attrs.endswith(b"/")):
            self.used.add_span(
                (self.row, self.row + self.repeat - 1), (self.col, self.col + span - 1)
            )
        self.col += span


def _scan_ods(blocks: Iterator[bytes], parts: dict[str, UsedRange]) -> UsedRange:
    scan = _OdsScan(parts)
    rest = b""
    for block in blocks:
        data = rest + block
        cut = data.rfind(b">") + 1
        scan.feed(data[:cut])
        rest = data[cut:]
    return UsedRange()  # the tables were recorded in ``parts`` by name


# --- the whole file --------------------------------------------------------------------------


def check_workbook(path: Path, kind: str, limits: Limits, quick: Quick | None = None) -> Guarded:
    """The guard of every workbook kind: zips checked and scanned, an .xls bounded by size.

    ``quick``: an xlsx part and what cuts it into parts (see ``check_zip``)."""
    if kind == "xls":
        return Guarded("xls", {})
    return check_zip(path, limits, quick)


def exact_range(path: Path, part: str, limits: Limits) -> UsedRange:
    """The used range of one xlsx part, cell by cell: where its cutting found it roughly."""
    with zipfile.ZipFile(path) as zf, zf.open(part) as fh:
        used = _scan_xlsx_sheet(iter(lambda: fh.read(BLOCK), b""), {})
        ranges = {part: used}
        _recheck(zf, ranges, limits, set())
        return ranges[part]
