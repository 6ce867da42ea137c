"""Column checks, mapping and file sniffing: no I/O but small files in tmp_path."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from services.core.datasets import Field, load_registry
from services.core.errors import InvalidInput
from services.core.imports import mapping, readers
from services.core.imports.amounts import parse_money
from services.core.imports.validate import (
    DateCheck,
    EnumCheck,
    IntCheck,
    MoneyCheck,
    Reread,
    TextCheck,
)
from services.core.settings import Settings

DS = load_registry(Settings().datasets_dir).get("bookkeeping_records")


def field(name: str) -> Field:
    return DS.field(name)


def checked(check: object, values: list[str]) -> tuple[list[object], dict[int, str]]:
    result = check.run(values)  # type: ignore[attr-defined]
    return result.values, dict(zip(result.bad, result.messages, strict=True))


@pytest.mark.parametrize(
    ("text", "cents"),
    [
        ("12.34", 1234),
        ("$1,234.56", 123456),
        ("1234", 123400),
        ("(12.00)", -1200),
        ("-$5.10", -510),
        ("$-5.10", -510),
        ("0.29", 29),
        (" 3.5 ", 350),
    ],
)
def test_money_formats(text: str, cents: int) -> None:
    values, bad = checked(MoneyCheck(field("sale_price")), [text, "1.00"])
    assert bad == {}
    assert values[0] == cents


def test_money_rejects_text_and_fractions_of_cents() -> None:
    _, bad = checked(MoneyCheck(field("sale_price")), ["free", "1.005", "1,2,3", "12.50"])
    assert bad == {0: "not an amount", 1: "more than two decimals", 2: "not an amount"}


def test_a_decimal_comma_column_is_read_as_such() -> None:
    check = MoneyCheck(field("fees"), decimal_comma=True)
    values, bad = checked(check, ["39,05", "1.234,50", "5"])
    assert bad == {}
    assert values == [3905, 123450, 500]
    assert check.state() == {"decimal_mark": "comma"}
    assert parse_money("39,05", ",") == pytest.approx(39.05)


def test_empty_optional_money_takes_the_default() -> None:
    values, bad = checked(MoneyCheck(field("fees")), ["", "1.00"])
    assert bad == {}
    assert values == [0, 100]


def test_whole_numbers_and_their_minimum() -> None:
    values, bad = checked(IntCheck(field("qty")), ["2", "two", "2.5", "0", "3.0", "", "1,000"])
    assert bad == {1: "not a whole number", 2: "not a whole number", 3: "must be at least 1"}
    assert values[0] == 2
    assert values[4] == 3
    assert values[5] == 1  # the default
    assert values[6] == 1000


def test_dates_in_every_accepted_form() -> None:
    check = DateCheck(field("sale_date"))
    values, bad = checked(
        check,
        [
            "2026-01-05",
            "Sep-11-26",
            "12/31/2026",
            "46000",
            "2026-02-30",
            "soon",
            "2026-03-01T10:00",
        ],
    )
    assert bad == {4: "not a date", 5: "not a date"}
    assert values[0] == date(2026, 1, 5)
    assert values[1] == date(2026, 9, 11)
    assert values[2] == date(2026, 12, 31)
    assert values[3] == date(2025, 12, 9)  # Excel serial 46000
    assert values[6] == date(2026, 3, 1)
    assert check.state()["order"] == "month-first"  # type: ignore[index]


def test_the_day_month_order_is_inferred_per_column() -> None:
    check = DateCheck(field("sale_date"))
    values, bad = checked(check, ["03/04/2026", "25/04/2026"])
    assert bad == {}
    assert values == [date(2026, 4, 3), date(2026, 4, 25)]
    state = check.state()
    assert state is not None
    assert state["order"] == "day-first"
    assert "25/04/2026" in state["order_reason"]


def test_an_assumed_order_proven_wrong_later_asks_for_a_reread() -> None:
    check = DateCheck(field("sale_date"))
    checked(check, ["03/04/2026"])  # ambiguous: month-first assumed
    assert check.state()["order_reason"].startswith("assumed")  # type: ignore[index]
    with pytest.raises(Reread) as again:
        checked(check, ["25/04/2026"])
    assert (again.value.field, again.value.order) == ("sale_date", "day")
    fixed = DateCheck(field("sale_date"), order=(again.value.order, again.value.reason))
    values, _ = checked(fixed, ["03/04/2026"])
    assert values == [date(2026, 4, 3)]


def test_excel_serials_are_dates_only_in_date_fields() -> None:
    values, bad = checked(TextCheck(field("item_name")), ["46000", "0042 Filter"])
    assert bad == {}
    assert values == ["46000", "0042 Filter"]  # text keeps leading zeros and digits


def test_enums_are_case_insensitive() -> None:
    values, bad = checked(EnumCheck(field("status")), ["Shipped", "PAID", "delivered", "lost", ""])
    assert values[:3] == ["shipped", "paid", "delivered"]
    assert bad == {3: "not one of paid, shipped, delivered, cancelled, refunded"}
    assert values[4] == "paid"  # the default


def test_formulas_are_kept_as_text() -> None:
    values, bad = checked(TextCheck(field("item_name")), ['=HYPERLINK("x")', "+1", "@SUM(A1)"])
    assert bad == {}
    assert values == ['=HYPERLINK("x")', "+1", "@SUM(A1)"]


def test_mapping_takes_the_best_evidence_first() -> None:
    headers = ["Sales Record Number", "Order Number", "Item Title", "Sold For", "Total Price"]
    m = mapping.suggest(headers, DS)
    assert m["Sales Record Number"] is None
    assert m["Order Number"] == mapping.Match("ebay_order_id", 1.0, "alias")
    assert m["Total Price"] is None
    fuzzy = mapping.suggest(["Sale_Date (UTC)", "Itm Name", "qty sold"], DS)
    assert fuzzy["Sale_Date (UTC)"] == mapping.Match("sale_date", 0.9, "normalised name")
    item = fuzzy["Itm Name"]
    assert item is not None
    assert item.field == "item_name"
    assert item.reason.startswith("fuzzy match")
    assert 0.56 <= item.confidence < 0.8
    cents = mapping.suggest(["sale_price_cents"], DS)["sale_price_cents"]
    assert cents == mapping.Match("sale_price", 1.0, "field name", "cents")


def test_header_keys_ignore_order_and_case() -> None:
    a = mapping.header_key("d", ["Order", "Price", "_row"])
    assert a == mapping.header_key("d", ["price", "order"])
    assert a != mapping.header_key("d", ["price", "order", "qty"])


def test_encoding_detection(tmp_path: Path) -> None:
    cases = {
        "bom.csv": ("\ufeffa,b\nCafé,1\n".encode(), "utf-8-sig"),
        "utf8.csv": ("a,b\nCafé,1\n".encode(), "utf-8"),
        "w1252.csv": ("a;b\nCrème Brûlée \u2013 Café;1\n".encode("cp1252"), "windows-1252"),
    }
    for name, (content, label) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        assert readers.detect_encoding(path)[1] == label


@pytest.mark.parametrize(
    ("text", "delimiter"),
    [
        ("a,b,c\n1,2,3\n4,5,6\n", ","),
        ("a;b;c\n1,5;2,5;3\n4;5;6\n", ";"),
        ("a\tb\tc\n1\t2\t3\n", "\t"),
        ("a|b|c\n1|2|3\n", "|"),
    ],
)
def test_delimiter_detection(text: str, delimiter: str) -> None:
    assert readers.detect_delimiter(text) == delimiter


def test_the_header_is_found_below_a_preamble(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("Orders report\n\nOrder,Date,Price\n1,2026-01-01,3\n2,2026-01-02,4\n")
    layout = readers.csv_layout(path, readers.Limits())
    assert layout.header_line == 3
    assert layout.headers == ["Order", "Date", "Price"]
    skips = readers.Skips()
    chunks = list(readers.read_csv(path, layout, readers.Limits(), skips, chunk_rows=10))
    assert chunks[0].lines == [4, 5]
    assert [e["reason"] for e in skips.lines] == [
        "text before the header",
        "blank line before the header",
    ]


def test_sniffing_tells_csv_from_each_kind_of_workbook() -> None:
    assert readers.sniff_kind(b"PK\x03\x04rest") == "xlsx"
    assert readers.sniff_kind(b"PK\x03\x04" + b"\0" * 26 + b"xl/workbook.bin") == "xlsb"
    ods = b"PK\x03\x04" + b"\0" * 26 + b"mimetypeapplication/vnd.oasis.opendocument.spreadsheet"
    assert readers.sniff_kind(ods) == "ods"
    assert readers.sniff_kind(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100) == "xls"
    assert readers.sniff_kind(b"a,b\n1,2\n") == "csv"
    with pytest.raises(InvalidInput, match="not a CSV file or a spreadsheet"):
        readers.sniff_kind(b"Rar!\x1a\x07\x00")


def test_cells_read_as_a_person_sees_them() -> None:
    from datetime import datetime

    assert readers.cell_text(2.0) == "2"
    assert readers.cell_text(410.21) == "410.21"
    # Workbook cells carry no time zone.
    assert readers.cell_text(datetime(2026, 1, 2)) == "2026-01-02"  # noqa: DTZ001
    assert readers.cell_text(datetime(2026, 1, 2, 10, 30)) == "2026-01-02 10:30:00"  # noqa: DTZ001
    assert readers.cell_text(None) == ""
    assert readers.cell_text(True) == "TRUE"


def test_a_column_of_numbers_or_dates_reads_as_its_cells_do() -> None:
    from datetime import date, datetime

    from services.core.imports.readers.sheets import column_text

    numbers = (1.0, -0.0, 12.34, 1e15, 999999999999999.0, -999999999999999.0, 1e16, 2.5e-7)
    columns = [
        (*numbers, float("nan"), float("inf"), "", "n/a"),
        (date(2026, 1, 5), "", date(1900, 1, 1)),
        (datetime(2026, 1, 5), datetime(2026, 1, 5, 3, 4), 1.0, True, 7, None),  # noqa: DTZ001
    ]
    for column in columns:
        assert column_text(column) == tuple(map(readers.cell_text, column))


def test_numbers_with_spaces_and_blank_numbers() -> None:
    values, bad = checked(IntCheck(field("qty")), [" 2 ", "   ", "\t3"])
    assert bad == {}
    assert values == [2, 1, 3]  # blank takes the default
    values, bad = checked(MoneyCheck(field("sale_price")), [" 1,234.50 ", "  ", " $5 "])
    assert values[0] == 123450
    assert values[2] == 500
    assert bad == {1: "required"}


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 7, 100])
def test_the_fast_and_the_careful_csv_readers_agree(tmp_path: Path, chunk_rows: int) -> None:
    text = (
        "Report\r\n\r\n"
        "a,b,c\r\n"
        "1,2,3\r\n"
        '4,"two\r\nlines",6\r\n'
        '7,"lone\rreturn and\nnewline",9\r\n'
        "\r\n"
        "10,11\r\n"  # short, mid-file
        "12,13,14,,\r\n"  # trailing delimiters
        "15,16,17,18\r\n"  # long
        '19,"x,y",21\r\n'
        "22,23,24\r\n"
        "\r\n"
        "footer one\r\n"
        "footer,two\r\n"
    )
    path = tmp_path / "odd.csv"
    path.write_bytes(text.encode())
    layout = readers.csv_layout(path, readers.Limits())
    assert layout.header_line == 3

    def read(careful: bool) -> tuple[list[object], list[object]]:
        skips = readers.Skips()
        chunks = readers.read_csv(
            path, layout, readers.Limits(), skips, chunk_rows=chunk_rows, careful=careful
        )
        flat = []
        for chunk in chunks:
            for i, line in enumerate(chunk.lines):
                flat.append((line, chunk.row(i), chunk.row_errors.get(i)))
        return flat, skips.lines

    fast, careful = read(False), read(True)
    assert fast == careful
    records, skipped = fast
    assert [r[0] for r in records] == [4, 5, 7, 11, 12, 13, 14, 15]  # type: ignore[index]
    assert records[3][2] == "has 2 values; the header has 3"  # type: ignore[index]
    assert records[5][2] == "has 4 values; the header has 3"  # type: ignore[index]
    assert [s["line"] for s in skipped] == [1, 2, 10, 16, 17, 18]  # type: ignore[index]


@pytest.fixture
def field_limit_100() -> Iterator[None]:
    """The csv module's process-wide value limit at 100 (tune_process sets it in a worker)."""
    before = csv.field_size_limit(100)
    yield
    csv.field_size_limit(before)


@pytest.mark.usefixtures("field_limit_100")
def test_a_value_over_the_limit_makes_the_fast_reader_hand_over(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text("a,b\n1,2\n" + "x" * 200 + ",3\n4,5\n")
    limits = readers.Limits()
    layout = readers.csv_layout(path, limits)
    with pytest.raises(readers.ReadAgain):
        list(readers.read_csv(path, layout, limits, readers.Skips(), chunk_rows=10))
    chunks = list(
        readers.read_csv(path, layout, limits, readers.Skips(), chunk_rows=10, careful=True)
    )
    assert chunks[0].lines == [2, 3, 4]
    assert chunks[0].row_errors == {
        1: "a value is longer than 100 characters (the limit); the row was not read"
    }


def test_excel_unicode_text_utf16_with_tabs(tmp_path: Path) -> None:
    path = tmp_path / "unicode.txt"
    path.write_bytes("Order ID\tTitle\tPrice\r\n1-1\tCafé\t3,50\r\n".encode("utf-16"))
    assert readers.sniff_kind(path.read_bytes()[:100]) == "csv"
    layout = readers.csv_layout(path, readers.Limits())
    assert (layout.encoding_label, layout.delimiter) == ("utf-16", "\t")
    [chunk] = readers.read_csv(path, layout, readers.Limits(), readers.Skips(), chunk_rows=10)
    assert chunk.lines == [2]
    assert chunk.row(0) == ["1-1", "Café", "3,50"]


def _records(chunks: Iterator[readers.Chunk]) -> list[tuple[int, list[str]]]:
    return [(line, chunk.row(i)) for chunk in chunks for i, line in enumerate(chunk.lines)]


@pytest.mark.parametrize("chunk_rows", [1, 2, 5, 100])
@pytest.mark.parametrize(
    "text",
    [
        'a,b,c\n1,"x,y",3\n4,"say ""hi""",6\n7,Café,9\n10,,\n',
        "\ufeffa;b;c\r\n1;2;3\r\n4;5;6",  # BOM, CRLF, no line end at the end
        'a,b,c\r1,x"y,3\r4,"q"r,6\r',  # CR alone; quotes inside values
        "a\tb\tc\n 1 \t 2\t3\n",
    ],
)
def test_the_arrow_reader_reads_plain_files_as_the_csv_module(
    tmp_path: Path, text: str, chunk_rows: int
) -> None:
    path = tmp_path / "plain.csv"
    path.write_bytes(text.encode())
    layout = readers.csv_layout(path, readers.Limits())
    assert readers.arrow_fits(layout)
    arrow = readers.read_csv_arrow(
        path, layout, readers.Limits(), readers.Skips(), chunk_rows=chunk_rows
    )
    csv_module = readers.read_csv(
        path, layout, readers.Limits(), readers.Skips(), chunk_rows=chunk_rows
    )
    assert _records(arrow) == _records(csv_module)


@pytest.mark.parametrize(
    "data",
    [
        b'a,b,c\n1,"two\nlines",3\n',  # a record over two lines
        b"a,b,c\n1,2,3\n4,5\n",  # short
        b"a,b,c\n1,2,3,4\n",  # long
        b"a,b,c\n1,2,3\n" + b"x" * 200 + b",2,3\n",  # over the value limit (100 here)
        b'a,b,c\n1,2,"3\n',  # a quote never closed
        b"a,b,c\r\n1,2,3\r\n\r\n4,5,6\r\n",  # a blank line (skipped, not a record)
        b"a,b,c\n1,2,3\n\n",  # a blank line at the end
        b"a,b,c\n1,2,3\n,,\n",  # a record of empty values: Arrow reads it as a blank line
    ],
)
@pytest.mark.usefixtures("field_limit_100")
def test_the_arrow_reader_hands_over_what_is_not_plain(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "odd.csv"
    path.write_bytes(data)
    layout = readers.csv_layout(path, readers.Limits())
    chunks = readers.read_csv_arrow(path, layout, readers.Limits(), readers.Skips(), chunk_rows=1)
    with pytest.raises(readers.NotPlain):
        list(chunks)


def test_a_preamble_keeps_a_file_from_the_arrow_reader(tmp_path: Path) -> None:
    path = tmp_path / "report.csv"
    path.write_bytes(b"Orders report\na,b,c\n1,2,3\n")
    layout = readers.csv_layout(path, readers.Limits())
    assert layout.header_line == 2
    assert not readers.arrow_fits(layout)
