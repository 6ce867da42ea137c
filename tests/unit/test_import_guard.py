"""The workbook guard: each sheet's used range, found by scanning the file, and the budget.

No spreadsheet library runs here: these are the numbers Ferry knows *before* one does.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.core.errors import InvalidInput
from services.core.imports.readers import Limits, check_workbook, guard, typed
from tests import workbooks
from tests.workbooks import HOSTILE, ORDERS


def ranges(tmp_path: Path, content: bytes, kind: str = "xlsx") -> dict[str, str]:
    path = tmp_path / f"book.{kind}"
    path.write_bytes(content)
    return {name: used.ref for name, used in check_workbook(path, kind, Limits()).ranges.items()}


@pytest.mark.parametrize("shape", list(HOSTILE))
def test_the_used_range_is_what_the_cells_name_not_what_the_file_declares(
    tmp_path: Path, shape: str
) -> None:
    content = workbooks.hostile_xlsx(shape)
    assert len(content) < 5000  # a few KB, like the file that killed the workers
    path = tmp_path / "hostile.xlsx"
    path.write_bytes(content)
    used = check_workbook(path, "xlsx", Limits()).ranges["Orders"]
    expected = HOSTILE[shape][1]
    assert used.ref == (expected or "A1:D4")
    refusal = guard.over_budget("Orders", used, Limits())
    if expected is None:
        assert refusal is None
        assert used.declared == "A1:XFD1048576"
    else:
        assert refusal is not None
        assert f"the sheet 'Orders' uses the range {expected} (it declares A1:D4)" in refusal.detail


def test_the_budget_follows_the_limits() -> None:
    used = guard.UsedRange()
    used.add_span((0, 999_999), (0, 19))  # 1M rows x 20 columns
    assert guard.over_budget("S", used, Limits(max_cells=20_000_000)) is None
    refused = guard.over_budget("S", used, Limits(max_cells=10_000_000))
    assert refused is not None
    assert "20,000,000 cells; Ferry reads at most 10,000,000 cells of a sheet" in refused.detail
    narrow = guard.over_budget("S", used, Limits(max_columns=10, max_cells=10**9))
    assert narrow is not None
    assert "20 columns; Ferry reads at most 10" in narrow.detail


def test_cells_without_a_reference_or_with_a_prefix_are_placed_as_calamine_places_them(
    tmp_path: Path,
) -> None:
    # No r on cells (each one right of the last), prefixed tags, self-closing empty cells.
    sheet = (
        '<?xml version="1.0"?><x:worksheet xmlns:x="http://schemas.openxmlformats.org/'
        'spreadsheetml/2006/main"><x:sheetData>'
        '<x:row r="3"><x:c t="inlineStr"><x:is><x:t>a</x:t></x:is></x:c><x:c><x:v>1</x:v></x:c>'
        '<x:c s="1"/></x:row><x:row><x:c r="E9"><x:v>2</x:v></x:c><x:c><x:v>3</x:v></x:c>'
        '<x:c r="Z99" s="4"/></x:row></x:sheetData></x:worksheet>'
    )
    content = replace_part(workbooks.xlsx({"Odd": [["x"]]}), "xl/worksheets/sheet1.xml", sheet)
    assert ranges(tmp_path, content) == {"Odd": "A3:F9"}


def test_xlsb_and_ods_sheets_are_scanned_too(tmp_path: Path) -> None:
    sheets = {"Summary": [["Total", 3]], "Orders": ORDERS}
    assert ranges(tmp_path, workbooks.xlsb(sheets), "xlsb") == {
        "Summary": "A1:B1",
        "Orders": "A1:D4",
    }
    # LibreOffice's million empty rows after the data are not part of the range.
    ods = workbooks.ods({"Orders": ORDERS}, trailing_empty_rows=1_048_000)
    assert ranges(tmp_path, ods, "ods") == {"Orders": "A1:D4"}


def test_repeated_ods_rows_with_values_count_every_repeat(tmp_path: Path) -> None:
    original = workbooks.ods({"Orders": ORDERS})
    with zipfile.ZipFile(io.BytesIO(original)) as zf:
        text = zf.read("content.xml").decode()
    text = text.replace(
        '<table:table-row><table:table-cell office:value-type="string"><text:p>11-3',
        '<table:table-row table:number-rows-repeated="2000000"><table:table-cell '
        'office:value-type="string"><text:p>11-3',
    )
    content = replace_part(original, "content.xml", text)
    path = tmp_path / "repeated.ods"
    path.write_bytes(content)
    used = check_workbook(path, "ods", Limits()).ranges["Orders"]
    assert used.ref == "A1:D2000003"
    assert guard.over_budget("Orders", used, Limits(max_cells=1_000_000)) is not None


def test_a_zip_that_is_no_spreadsheet_is_named(tmp_path: Path) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("photo.jpg", b"\xff\xd8\xff")
    path = tmp_path / "photos.zip"
    path.write_bytes(out.getvalue())
    with pytest.raises(InvalidInput, match="this zip archive is not a spreadsheet"):
        check_workbook(path, "xlsx", Limits())


def replace_part(content: bytes, name: str, text: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(content)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, text if info.filename == name else src.read(info))
    return out.getvalue()


# --- a sheet cut into parts as it is unpacked (``readers.typed``) ----------------------------

SHEET1 = "xl/worksheets/sheet1.xml"
ODD_ROWS = (  # row tags without their number first, or none; cells with theirs
    '<?xml version="1.0"?><worksheet xmlns="http://schemas.openxmlformats.org/'
    'spreadsheetml/2006/main"><sheetData><row spans="1:2" r="2"><c r="B2"><v>1</v></c></row>'
    '<row><c r="C7"><v>2</v></c></row><row r="9"/><row r="12"></row></sheetData></worksheet>'
)


def quick_shapes() -> dict[str, bytes]:
    shapes = {f"hostile {name}": workbooks.hostile_xlsx(name) for name in HOSTILE}
    long = [["Order", "Amount", "Note"], *([f"A-{i}", i * 1.5, None] for i in range(300))]
    long[120] = [None, None, "a note right of the records"]
    shapes["long, with gaps"] = workbooks.xlsx({"Orders": [[], *long, [], ["Total", 3.0]]})
    shapes["far cells"] = workbooks.xlsx({"Orders": long}, far={"Q2": "x", "B999": 1})
    shapes["odd row tags"] = replace_part(workbooks.xlsx({"S": [["x"]]}), SHEET1, ODD_ROWS)
    return shapes


def declines(blocks: Iterator[bytes]) -> guard.UsedRange | None:
    next(blocks, None)  # a block read, then given up
    return None


@pytest.mark.parametrize("block", [guard.BLOCK, 23, 500])
@pytest.mark.parametrize("shape", list(quick_shapes()))
def test_a_part_not_cut_after_all_is_scanned_as_any_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shape: str, block: int
) -> None:
    monkeypatch.setattr(guard, "BLOCK", block)
    path = tmp_path / "book.xlsx"
    path.write_bytes(quick_shapes()[shape])
    full = check_workbook(path, "xlsx", Limits())
    declined = check_workbook(path, "xlsx", Limits(), quick=guard.Quick(SHEET1, declines))
    assert (full.quick, declined.quick) == (None, None)
    assert {n: (u.ref, u.declared) for n, u in declined.ranges.items()} == {
        n: (u.ref, u.declared) for n, u in full.ranges.items()
    }


def test_the_range_a_cut_finds_is_the_sheets(tmp_path: Path) -> None:
    path = tmp_path / "book.xlsx"
    path.write_bytes(quick_shapes()["long, with gaps"])
    found = guard.UsedRange()
    found.add_span((1, 304), (0, 2))

    def cut(blocks: Iterator[bytes]) -> guard.UsedRange:
        for _ in blocks:
            pass
        return found

    guarded = check_workbook(path, "xlsx", Limits(), quick=guard.Quick(SHEET1, cut))
    assert (guarded.quick, guarded.ranges["Orders"].ref) == ("Orders", "A2:C305")


def test_an_entity_declaration_in_a_part_cut_is_refused(tmp_path: Path) -> None:
    sheet = (
        '<?xml version="1.0"?><!DOCTYPE worksheet [<!ENTITY big "x">]><worksheet '
        'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
        '<row r="1"><c r="A1"><v>1</v></c></row></sheetData></worksheet>'
    )
    path = tmp_path / "book.xlsx"
    path.write_bytes(replace_part(workbooks.xlsx({"S": [["x"]]}), SHEET1, sheet))
    parts = typed.Parts(path, ("S", SHEET1), Limits(), tmp_path)
    for quick in (None, guard.Quick(SHEET1, parts.cut)):
        with pytest.raises(InvalidInput) as refused:
            check_workbook(path, "xlsx", Limits(), quick=quick)
        assert f"{SHEET1} declares a DTD or XML entities" in refused.value.detail
