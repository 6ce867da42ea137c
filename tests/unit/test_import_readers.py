"""Reading uploads: kind, encoding, delimiter, header row, and which lines become records.

Complements test_import_checks.py; no I/O beyond small files in tmp_path.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from services.core.errors import InvalidInput
from services.core.imports import readers
from services.core.imports.readers.chunks import MAX_PENDING, ChunkBuilder


def records(path: Path) -> tuple[readers.Layout, list[list[str]]]:
    """The layout Ferry finds and the values of every record, as a user would see them."""
    layout = readers.csv_layout(path, readers.Limits())
    rows: list[list[str]] = []
    for chunk in readers.read_csv(path, layout, readers.Limits(), readers.Skips(), chunk_rows=50):
        rows += [chunk.row(i) for i in range(len(chunk))]
    return layout, rows


# --- what kind of file ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"", "the file is empty"),
        (
            b"%PDF-1.4\n",
            "this is a PDF document, not a CSV file or a spreadsheet (xlsx, xls, xlsb, ods)",
        ),
        (
            b"\x1f\x8b\x08\x00",
            "this is a gzip archive, not a CSV file or a spreadsheet (xlsx, xls, xlsb, ods)",
        ),
        (
            b"\x00\x01\x02\x03" * 100,
            "this is binary data, not a CSV file or a spreadsheet (xlsx, xls, xlsb, ods)",
        ),
    ],
)
def test_files_that_are_not_tables_are_named(head: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        readers.sniff_kind(head)
    assert str(refused.value) == message
    assert refused.value.errors == [{"field": "file", "message": message}]


def test_utf16_text_is_a_csv_despite_its_nul_bytes() -> None:
    assert readers.sniff_kind("Order\tPrice\r\n1\t2\r\n".encode("utf-16")) == "csv"


# --- encoding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "codec", "label"),
    [
        (
            "Order;Title;Price\n1;“Crème brûlée” — dessert;5 €\n2;Café au lait;2,10 €\n",
            "cp1252",
            "windows-1252",
        ),
        (
            "Commande;Article;Prix\n1;Crème brûlée à la française;3,50\n"
            "2;Café très élégant;2,10\n3;Pâté de campagne, où êtes-vous;4,00\n",
            "mac_roman",
            "mac-roman",
        ),
        (
            "Zamówienie;Artykuł;Cena\n1;Zażółć gęślą jaźń;3,50\n"
            "2;Łódź świętokrzyskie źdźbło;2,10\n",
            "cp1250",
            "windows-1250",
        ),
        ("Artikel;Größe\nSocken;M\n", "mac_roman", "mac-roman"),
        (
            "Artikel;Größe;Preis\nWeiße Socken;M;3,50\nMüsli für Bären;L;2\n",
            "mac_roman",
            "mac-roman",
        ),
        ("Artículo;Tamaño\nCamiseta niño;M\nCañón pequeño;L\n", "mac_roman", "mac-roman"),
        ("Artikel;Größe\nSocken;M\n", "cp1252", "windows-1252"),
        ("Vare;Pris\nSmørrebrød æble;3,50\nBlåbær øl;2,10\n", "cp1252", "windows-1252"),
        ("Objednávka;Zboží\n1;Příliš žluťoučký kůň\n", "cp1250", "windows-1250"),
        ("Prix;Article\n12,50 €;Lampe\n", "iso8859_15", "iso-8859-15"),
    ],
    ids=[
        "windows-1252",
        "mac-roman-french",
        "windows-1250-polish",
        "mac-roman-german-short",
        "mac-roman-german",
        "mac-roman-spanish",
        "windows-1252-german-short",
        "windows-1252-danish",
        "windows-1250-czech",
        "iso-8859-15-euro",
    ],
)
def test_legacy_encodings_are_read_as_written(
    tmp_path: Path, text: str, codec: str, label: str
) -> None:
    path = tmp_path / "legacy.csv"
    path.write_bytes(text.encode(codec))
    layout, rows = records(path)
    assert (layout.encoding_label, layout.encoding_reason) == (
        label,
        f"not UTF-8; reads best as {label}",
    )
    lines = text.splitlines()
    assert layout.headers == lines[0].split(";")
    assert rows == [line.split(";") for line in lines[1:]]


def test_a_stray_legacy_byte_on_the_last_line_is_caught_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "late.csv"
    # Over a megabyte of ASCII (beyond the sample), then one Windows-1252 é.
    path.write_bytes(b"Order,Title\n" + b"1,Lamp\n" * 200_000 + "2,Café\n".encode("cp1252"))
    layout, rows = records(path)
    assert layout.encoding_reason is not None
    assert layout.encoding_reason.startswith("not UTF-8")
    assert rows[-1] == ["2", "Café"]
    assert len(rows) == 200_001


@pytest.mark.parametrize(
    ("late", "codec", "label"),
    [("Smørrebrød æble", "cp1252", "windows-1252"), ("Größe für Bären", "mac_roman", "mac-roman")],
)
def test_a_file_ascii_for_its_first_megabytes_is_decoded_by_its_later_text(
    tmp_path: Path, late: str, codec: str, label: str
) -> None:
    path = tmp_path / "late.csv"
    # German umlauts read the same in Windows-1252 and 1250; the æ after them does not.
    head = "Order,Title\n" + "1,Lamp\n" * 300_000 + "2,Müsli\n"
    path.write_bytes(head.encode(codec) + f"3,{late}\n".encode(codec))
    layout, rows = records(path)
    assert layout.encoding_label == label
    assert rows[-2:] == [["2", "Müsli"], ["3", late]]


@pytest.mark.parametrize(
    "ending",
    ["\r", "\n", "\r\n", "mixed"],
    ids=["cr-excel-for-mac", "lf", "crlf", "mixed"],
)
def test_every_kind_of_line_end_is_a_line_end(tmp_path: Path, ending: str) -> None:
    lines = ["Order,Title,Price", "1,Lamp,1.50", '2,"Desk\nwith drawer",2.50', "3,Chair,3.00"]
    ends = ["\r", "\n", "\r\n", "\r"] if ending == "mixed" else [ending] * 4
    path = tmp_path / "ends.csv"
    path.write_bytes("".join(line + end for line, end in zip(lines, ends, strict=True)).encode())
    layout, rows = records(path)
    assert layout.headers == ["Order", "Title", "Price"]
    assert [row[0] for row in rows] == ["1", "2", "3"]
    assert rows[1][1] == "Desk\nwith drawer"
    chunk = next(readers.read_csv(path, layout, readers.Limits(), readers.Skips(), chunk_rows=9))
    assert chunk.lines == [2, 3, 5]  # the quoted line break counts as a line


def test_a_byte_order_mark_is_not_part_of_the_first_header(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffOrder,Title\n1,Café\n".encode())
    layout, rows = records(path)
    assert (layout.encoding_label, layout.encoding_reason) == ("utf-8-sig", "byte order mark")
    assert layout.headers == ["Order", "Title"]
    assert rows == [["1", "Café"]]


# --- delimiter and header row -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "delimiter"),
    [
        ("Name,Note\nAnn,hi; there\nBob,ok; fine\n", ","),  # semicolons inside values
        ("Name;Note\nAnn;1,5\nBob;2,25\n", ";"),  # commas inside values
        ("just one column\nmore\n", ","),
    ],
)
def test_the_delimiter_is_the_one_giving_regular_columns(text: str, delimiter: str) -> None:
    assert readers.detect_delimiter(text) == delimiter


def test_the_header_is_the_first_wide_textual_row() -> None:
    rows = [
        (1, ["Sales report"]),
        (2, ["Generated", "2026-01-01"]),
        (3, ["Order", "Date", "Price"]),
        (4, ["1", "2026-01-01", "3"]),
        (5, ["2", "2026-01-02", "4"]),
    ]
    assert readers.find_header(rows) == 2


def test_without_a_textual_row_the_first_filled_row_is_the_header() -> None:
    assert readers.find_header([(1, ["", ""]), (2, ["1", "2"]), (3, ["3", "4"])]) == 1
    assert readers.find_header([(1, ["", ""]), (2, [])]) == -1


def test_header_names_are_tidied_and_blank_ones_named() -> None:
    cells = ["  Sale\n Date ", "", "Pri\x00ce", "", ""]
    assert readers.clean_headers(cells, readers.Limits()) == ["Sale Date", "(column 2)", "Price"]


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        (
            ["Price", "Qty", "price"],
            "the header 'price' appears twice (columns 1 and 3); rename one and upload again",
        ),
        (["a", "b", "c", "d"], "the file has 4 columns; Ferry reads at most 3"),
    ],
)
def test_headers_that_cannot_be_mapped_are_refused(cells: list[str], message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        readers.clean_headers(cells, readers.Limits(max_columns=3))
    assert str(refused.value) == message


# --- which lines become records ---------------------------------------------------------


def build(
    rows: list[tuple[int, list[str]]], *, noun: str = "line", max_rows: int = 10_000
) -> tuple[list[tuple[int, list[str], str | None]], readers.Skips]:
    """Rows through a three-column builder: (line, values, row error) and what was skipped."""
    skips = readers.Skips()
    builder = ChunkBuilder(3, readers.Limits(max_rows=max_rows), skips, chunk_rows=2, noun=noun)
    chunks = [builder.add_row(line, row) for line, row in rows]
    chunks.append(builder.finish())
    out = []
    for chunk in chunks:
        if chunk is not None:
            for i, line in enumerate(chunk.lines):
                out.append((line, chunk.row(i), chunk.row_errors.get(i)))
    return out, skips


def test_short_rows_at_the_end_are_a_report_footer() -> None:
    got, skips = build([(2, ["1", "a", "b"]), (3, ["Total", "9"]), (4, [""]), (5, ["Printed"])])
    assert got == [(2, ["1", "a", "b"], None)]
    assert skips.lines == [
        {"line": 3, "reason": "report footer after the data, not a record", "text": "Total 9"},
        {"line": 4, "reason": "blank line"},
        {"line": 5, "reason": "report footer after the data, not a record", "text": "Printed"},
    ]


def test_short_rows_followed_by_data_are_records_with_values_missing() -> None:
    got, skips = build([(2, ["1", "a"]), (3, [""]), (4, ["2", "b", "c"])])
    assert got == [
        (2, ["1", "a", ""], "has 2 values; the header has 3"),
        (4, ["2", "b", "c"], None),
    ]
    assert skips.lines == [{"line": 3, "reason": "blank line"}]


def test_many_short_rows_are_data_errors_not_a_footer() -> None:
    short = [(line, ["x"]) for line in range(2, MAX_PENDING + 3)]
    got, skips = build(short)
    assert len(got) == MAX_PENDING + 1
    assert got[0] == (2, ["x", "", ""], "has 1 values; the header has 3")
    assert skips.count == 0


def test_long_rows_lose_trailing_blanks_silently_and_extra_values_with_an_error() -> None:
    got, _ = build([(2, ["1", "a", "b", "", " "]), (3, ["2", "c", "d", "e"])])
    assert got == [
        (2, ["1", "a", "b"], None),
        (3, ["2", "c", "d"], "has 4 values; the header has 3"),
    ]


def test_a_sheet_skips_rows_not_lines() -> None:
    _, skips = build([(2, ["1", "a", "b"]), (3, [])], noun="row")
    assert skips.lines == [{"line": 3, "reason": "blank row"}]


def test_a_file_over_the_record_limit_is_refused() -> None:
    with pytest.raises(InvalidInput, match="the file has more than 3 records; split it"):
        build([(line, ["1", "a", "b"]) for line in range(2, 7)], max_rows=3)


def test_skipped_lines_are_all_counted_but_only_the_first_listed() -> None:
    skips = readers.Skips(limit=2)
    for line in range(1, 6):
        skips.add(line, "blank line")
    assert skips.document() == {
        "count": 5,
        "reasons": {"blank line": 2},
        "lines": [{"line": 1, "reason": "blank line"}, {"line": 2, "reason": "blank line"}],
    }


def test_numbers_from_a_sheet_read_as_the_cell_shows_them() -> None:
    """A column of numbers crosses from the reader process as float64 bytes; the worker
    writes each as ``cell_text`` does (whole numbers without ``.0``, repr's digits)."""
    from array import array

    from services.core.imports.readers.workbook import number_texts

    rng = random.Random(12)
    values = [
        *(rng.uniform(-1e6, 1e6) for _ in range(2000)),
        *(round(rng.uniform(0, 1e5), 2) for _ in range(2000)),
        *(10 ** rng.uniform(-8, 18) for _ in range(2000)),
        *(float(rng.randrange(10**16)) for _ in range(500)),
        *(0.0, -0.0, 1e15, 1e15 - 1, -(1e15 - 1), 1e-4, 9.9e-5, 1e16, 0.1 + 0.2, 2.675),
        *(99999999999999.99, 123456789012345.0, 1.5e-7, float("inf"), float("-inf")),
    ]
    texts = number_texts(array("d", values).tobytes()).to_pylist()
    assert texts == [readers.cell_text(v) for v in values]
    assert number_texts(array("d", [3.0, 12.0]).tobytes()).to_pylist() == ["3", "12"]
