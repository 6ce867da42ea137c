"""What Ferry stores for a file's amounts, dates and other values, and what it says when it can't.

Complements test_import_checks.py (the common formats) with the edges users meet.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from services.core.datasets import Field, load_registry
from services.core.imports import mapping
from services.core.imports.readers import Chunk
from services.core.imports.validate import (
    BoolCheck,
    Check,
    DateCheck,
    DatetimeCheck,
    IntCheck,
    MoneyCheck,
    TextCheck,
    Validator,
    make_check,
)
from services.core.settings import Settings

DS = load_registry(Settings().datasets_dir).get("bookkeeping_records")


def checked(check: Check, values: list[str]) -> tuple[list[Any], dict[int, str]]:
    result = check.run(values)
    return result.values, dict(zip(result.bad, result.messages, strict=True))


# --- amounts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cents", "currency"),
    [
        ("5.00-", -500, "USD"),  # trailing minus (accounting exports)
        ("12.34-", -1234, "USD"),
        ("\u22125.00", -500, "USD"),  # the Unicode minus sign
        ("(12.34)", -1234, "USD"),  # accounting brackets
        ("($1,234.56)", -123456, "USD"),
        ("USD 12.00", 1200, "USD"),
        ("US $1,234.56", 123456, "USD"),  # as a marketplace shows it
        ("US$ 7.50", 750, "USD"),
        ("$ -3.00", -300, "USD"),
        ("C $12.00", 1200, "CAD"),
        ("CA$12.00", 1200, "CAD"),
        ("$12.00", 1200, "CAD"),  # a bare $ may be any dollar
        ("AU $1,000.00", 100000, "AUD"),
        ("12.00 EUR", 1200, "EUR"),
        ("€ 7", 700, "EUR"),
        ("£1,000", 100000, "GBP"),
        ("¥500", 50000, "JPY"),
        ("CHF 12.00", 1200, "CHF"),
        ("1'234.50", 123450, "CHF"),  # Swiss thousands
        ("+4", 400, "USD"),
        ("1,234", 123400, "USD"),  # a thousands comma, not a decimal one, in a point column
    ],
)
def test_amounts_in_a_point_column(text: str, cents: int, currency: str) -> None:
    values, bad = checked(MoneyCheck(DS.field("fees"), currency=currency), [text, "1.50"])
    assert bad == {}
    assert values[0] == cents


@pytest.mark.parametrize(
    ("text", "cents"),
    [("1.234,56 €", 123456), ("1 234,56 €", 123456), ("-1.234,56 €", -123456), ("12,34-", -1234)],
)
def test_amounts_in_a_comma_column_with_the_euro_behind(text: str, cents: int) -> None:
    check = MoneyCheck(DS.field("fees"), currency="EUR")
    values, bad = checked(check, [text, "3,50 €"])
    assert bad == {}
    assert values[0] == cents
    assert check.state() == {"decimal_mark": "comma"}


@pytest.mark.parametrize(
    ("text", "currency", "message"),
    [
        ("C $12.00", "USD", "in CAD (C$), but this account's currency is USD"),
        ("US $12.00", "CAD", "in USD (US$), but this account's currency is CAD"),
        ("£12.00", "USD", "in GBP (£), but this account's currency is USD"),
        ("$12.00", "EUR", "in dollars ($), but this account's currency is EUR"),
        ("12.00 EUR", "GBP", "in EUR (EUR), but this account's currency is GBP"),
    ],
)
def test_a_currency_that_contradicts_the_accounts_is_refused(
    text: str, currency: str, message: str
) -> None:
    values, bad = checked(MoneyCheck(DS.field("fees"), currency=currency), [text, "1.50"])
    assert bad == {0: message}
    assert values == [None, 150]


def test_a_column_whose_header_names_another_currency_is_refused() -> None:
    m = mapping.suggest(["sale_price_eur"], DS)["sale_price_eur"]
    assert m is not None
    assert m.unit == "EUR"
    check = make_check(
        DS.field("sale_price"), unit=m.unit, decimal_comma=False, date_order=None, currency="USD"
    )
    _, bad = checked(check, ["12.00", ""])
    assert bad == {
        0: "in EUR (the column's header says so), but this account's currency is USD",
        1: "required",
    }
    same = make_check(
        DS.field("sale_price"), unit="USD", decimal_comma=False, date_order=None, currency="USD"
    )
    assert checked(same, ["12.00"]) == ([1200], {})


def test_a_decimal_comma_is_inferred_from_the_column_alone() -> None:
    check = MoneyCheck(DS.field("fees"))  # no hint from a ; delimiter
    values, bad = checked(check, ["12,50", "3,99", "7"])
    assert bad == {}
    assert values == [1250, 399, 700]
    assert check.state() == {"decimal_mark": "comma"}


def test_amounts_in_a_comma_column() -> None:
    check = MoneyCheck(DS.field("fees"), decimal_comma=True)
    values, bad = checked(check, ["1 234,50", "1\u00a0234,50", "(5,00)", "-3", "1.234"])
    assert bad == {}
    assert values == [123450, 123450, -500, -300, 123400]


def test_the_decimal_mark_is_decided_once_per_column() -> None:
    check = MoneyCheck(DS.field("fees"))
    checked(check, ["1.50", "2.25"])
    # A later chunk of the same column is read with the mark the first one showed:
    # "3,50" there is neither 3.50 nor 350.00 but a mistake to fix.
    values, bad = checked(check, ["3,50", "1,250"])
    assert check.state() == {"decimal_mark": "point"}
    assert bad == {0: "not an amount"}
    assert values == [None, 125000]


def test_amounts_too_large_or_missing() -> None:
    values, bad = checked(MoneyCheck(DS.field("sale_price")), ["1e17", "", "10.00"])
    assert bad == {0: "too large", 1: "required"}
    assert values == [None, None, 1000]


def test_a_column_named_in_cents_holds_whole_cents() -> None:
    match = mapping.suggest(["fees_cents"], DS)["fees_cents"]
    assert match is not None
    check = make_check(DS.field("fees"), unit=match.unit, decimal_comma=False, date_order=None)
    values, bad = checked(check, ["1234", "12.5", "-3", "", "1e20"])
    assert bad == {1: "not a whole number of cents", 4: "too large"}
    assert values == [1234, None, -3, 0, None]  # empty takes the default, 0


# --- whole numbers, text, yes/no, timestamps ---------------------------------------------


def test_whole_numbers_out_of_range() -> None:
    values, bad = checked(IntCheck(DS.field("qty")), ["3000000000", "1e30", "-1", "+2", "0x10"])
    assert bad == {
        0: "too large",
        1: "too large",
        2: "must be at least 1",
        4: "not a whole number",
    }
    assert values[3] == 2


def test_text_keeps_tabs_and_line_breaks_but_not_control_characters() -> None:
    values, bad = checked(
        TextCheck(DS.field("item_name")), ["a\tb", "two\nlines", "nul\x00x", "vt\x0bx", "  pad  "]
    )
    assert bad == {
        2: "contains a control character (NUL)",
        3: "contains a control character (U+000B)",
    }
    assert values[:2] == ["a\tb", "two\nlines"]
    assert values[4] == "pad"


def test_yes_and_no_in_the_ways_spreadsheets_write_them() -> None:
    gift = Field(name="gift", label="Gift", type="bool")
    values, bad = checked(BoolCheck(gift), ["Yes", "no", "X", "TRUE", "0", "", "maybe"])
    assert bad == {6: "not yes or no"}
    assert values[:6] == [True, False, True, True, False, None]


def test_timestamps_are_stored_in_utc() -> None:
    at = Field(name="at", label="At", type="datetime", required=True)
    values, bad = checked(
        DatetimeCheck(at), ["2026-01-02T10:00:00+02:00", "2026-01-02 10:00", "yesterday", ""]
    )
    assert values[:2] == [datetime(2026, 1, 2, 8, tzinfo=UTC), datetime(2026, 1, 2, 10, tzinfo=UTC)]
    assert bad == {2: "not a date and time", 3: "required"}


# --- dates ------------------------------------------------------------------------------


def test_month_first_is_proven_by_a_day_above_12_in_second_place() -> None:
    check = DateCheck(DS.field("sale_date"))
    values, bad = checked(check, ["04/03/2026", "04/25/2026"])
    assert bad == {}
    assert values == [date(2026, 4, 3), date(2026, 4, 25)]
    assert check.state() == {
        "formats": {"MM/DD/YYYY": 2},
        "order": "month-first",
        "order_reason": "04/25/2026 has a day above 12 in the second place",
    }


def test_files_with_semicolons_assume_day_first() -> None:
    check = DateCheck(DS.field("sale_date"), day_first=True)
    values, _ = checked(check, ["03/04/2026"])
    assert values == [date(2026, 4, 3)]
    state = check.state()
    assert state is not None
    assert state["order"] == "day-first"
    assert state["order_reason"].endswith("(day-first, as usual in files with ; separators)")


def test_dotted_dates_and_two_digit_years() -> None:
    check = DateCheck(DS.field("sale_date"))
    values, bad = checked(check, ["25.12.2026", "01.02.26", "01.02.69", "01.02.70"])
    assert bad == {}
    assert values == [date(2026, 12, 25), date(2026, 2, 1), date(2069, 2, 1), date(1970, 2, 1)]
    assert check.state()["formats"] == {"DD.MM.YYYY": 4}  # type: ignore[index]


def test_impossible_days_are_not_dates() -> None:
    _, bad = checked(DateCheck(DS.field("sale_date")), ["13/13/2026", "31/02/2026", ""])
    assert bad == {0: "not a date", 1: "not a date", 2: "required"}


@pytest.mark.parametrize(
    ("text", "day"),
    [
        ("12 Mar 2026", date(2026, 3, 12)),
        ("12-Mar-2026", date(2026, 3, 12)),
        ("Mar 12, 2026", date(2026, 3, 12)),
        ("March 12, 2026", date(2026, 3, 12)),
        ("2026/03/12", date(2026, 3, 12)),
        ("46000.5", date(2025, 12, 9)),  # an Excel serial with a time of day
        ("1000", date(1902, 9, 26)),  # the smallest serial read as a date
        ("99999", date(2173, 10, 13)),  # the largest
    ],
)
def test_named_formats_and_excel_serials(text: str, day: date) -> None:
    values, bad = checked(DateCheck(DS.field("sale_date")), [text])
    assert bad == {}
    assert values == [day]


@pytest.mark.parametrize("text", ["999", "100000", "-46000"])
def test_numbers_outside_excel_serial_dates_are_not_dates(text: str) -> None:
    _, bad = checked(DateCheck(DS.field("sale_date")), [text])
    assert bad == {0: "not a date"}


@pytest.mark.parametrize(
    ("text", "zone", "day"),
    [
        ("2026-03-01T02:30:00Z", "UTC", date(2026, 3, 1)),
        ("2026-03-01T02:30:00Z", "America/Los_Angeles", date(2026, 2, 28)),
        ("2026-03-01T02:30:00+05:00", "UTC", date(2026, 2, 28)),
        ("2026-02-28 23:30:00-0800", "Europe/Berlin", date(2026, 3, 1)),
        ("2026-02-28 23:30:00 PST", "UTC", date(2026, 3, 1)),
        ("2026-02-28T23:30:00.123456+00:00", "Asia/Tokyo", date(2026, 3, 1)),
        ("2026-02-28 23:30", "Asia/Tokyo", date(2026, 2, 28)),  # no zone: as written
    ],
)
def test_a_timestamp_fills_a_date_with_its_day_in_the_accounts_zone(
    text: str, zone: str, day: date
) -> None:
    check = DateCheck(DS.field("sale_date"), time_zone=zone)
    values, bad = checked(check, [text])
    assert bad == {}
    assert values == [day]
    state = check.state()
    assert state is not None
    zoned = text[-1] == "Z" or text[-5:-4] in "+-" or text.endswith("PST") or "+" in text[-6:]
    assert (state.get("time_zone") == zone) is zoned


def test_the_formats_seen_are_counted_for_the_import_document() -> None:
    check = DateCheck(DS.field("sale_date"))
    checked(check, ["2026-01-05", "2026-01-06", "46000", "2026-01-07T09:30"])
    assert check.state() == {
        "formats": {"YYYY-MM-DD": 2, "YYYY-MM-DD hh:mm": 1, "Excel serial number": 1}
    }


# --- a whole chunk ----------------------------------------------------------------------


def test_a_chunk_is_checked_into_rows_with_field_named_errors() -> None:
    headers = ["Order", "Date", "Title", "Price", "Notes"]
    m = mapping.suggest(headers, DS)
    validator = Validator(DS, m, headers)
    rows = [
        ["1-1", "2026-01-05", "Lamp", "10.00", "ok"],
        ["1-2", "someday", "Desk", "free", "n\x00ul"],
        ["", "", "", "", ""],  # the reader could not read this row
        ["1-4", "2026-01-08", "Chair", "5", ""],
    ]
    chunk = Chunk(
        lines=[2, 3, 4, 6],
        columns=list(zip(*rows, strict=True)),
        row_errors={2: "a value is longer than 65,536 characters (the limit)"},
        unreadable={2},
    )
    result = validator.check(chunk)
    assert result.lines == [2, 3, 4, 6]
    assert result.errors == [
        None,
        ["sale_date: not a date", "sale_price: not an amount"],
        ["a value is longer than 65,536 characters (the limit)"],
        None,
    ]
    assert result.invalid == 2
    by_field = dict(zip([f.name for f in validator.fields], result.columns, strict=True))
    assert by_field["sale_price"] == [1000, None, None, 500]
    assert by_field["qty"] == [1, 1, 1, 1]  # not in the file: the default
    assert by_field["status"] == ["paid"] * 4
    # The original values are kept for the error report; NUL, which PostgreSQL text
    # cannot hold, shows as U+FFFD.
    assert result.raw[1].split("\x1f") == ["1-2", "someday", "Desk", "free", "n\ufffdul"]


def test_without_records_in_the_account_only_failed_or_repeating_rows_keep_their_text() -> None:
    headers = ["Order", "Date", "Title", "Price"]
    validator = Validator(DS, mapping.suggest(headers, DS), headers, keep_raw=False)
    first = [["1-1", "2026-01-05", "Lamp", "10.00"], ["1-2", "someday", "Desk", "5"]]
    second = [["1-3", "2026-01-06", "Chair", "4"], ["1-1", "2026-01-07", "Lamp", "9"]]
    second += [["1-3", "2026-01-08", "Chair", "4"]]
    rows = [
        validator.check(Chunk(lines=lines, columns=list(zip(*chunk, strict=True))))
        for lines, chunk in (([2, 3], first), ([4, 5, 6], second))
    ]
    assert rows[0].raw == [None, "1-2\x1fsomeday\x1fDesk\x1f5"]
    # A key seen in an earlier chunk or earlier in this one: SQL decides if it repeats.
    assert rows[1].raw == [
        None,
        "1-1\x1f2026-01-07\x1fLamp\x1f9",
        "1-3\x1f2026-01-08\x1fChair\x1f4",
    ]


def test_the_column_fast_paths_agree_with_the_rules_they_shortcut() -> None:
    """Text without a regular expression where it is printable ASCII, whole numbers by
    ASCII digits: the same verdicts as the patterns, on values made to trip them."""
    import random

    import pyarrow as pa
    import pyarrow.compute as pc

    from services.core.imports import validate

    rng = random.Random(5)
    alphabet = [" ", "a", "9", "~", "-", "\t", "\n", "\r", "\x00", "\x1c", "\x1f", "\x7f"]
    alphabet += ["ü", "\xa0", "\x85", "\u2003", "\u3000", "٣"]
    values = ["".join(rng.choices(alphabet, k=rng.randrange(6))) for _ in range(20_000)]
    column = pa.array([*values, None], type=pa.string())
    text = validate.TextCheck(DS.field("item_name")).fast(column)
    assert text is not None
    rule = pc.match_substring_regex(column, validate._NOT_PLAIN_TEXT)
    assert text[1].to_pylist() == pc.invert(pc.fill_null(rule, True)).to_pylist()

    digits = [*(rng.choice(["", "0", "007", "123456789", "1234567890"]) for _ in range(50))]
    digits += ["".join(rng.choices("0123456789 -+.e٣a", k=rng.randrange(12))) for _ in range(5_000)]
    numbers = pa.array(digits, type=pa.string())
    ints = validate.IntCheck(DS.field("qty")).fast(numbers)
    assert ints is not None
    plain = pc.fill_null(pc.match_substring_regex(numbers, r"^[0-9]{1,9}$"), False)
    at_least_one = pc.greater_equal(ints[0], 1)
    assert ints[1].to_pylist() == pc.and_(plain, at_least_one).to_pylist()
