"""Checks of a chunk, column by column, driven by the dataset's field declarations.

Each check takes one source column of a chunk (an Arrow string array) and returns the
staged values plus the indices and messages of the bad ones — whole columns at a
time: Arrow kernels read the plainly good values (``Check.fast``), and the rest go
through numpy/pandas and Python (``Check.run``), which say what is wrong. Messages
name the problem as a person would fix it: ``"not a whole number"``, ``"not one of
paid, shipped, …"``; the caller prefixes the field name.

Some columns need to know the whole column to read one value (is 03/04/2026 the
3rd of April or the 4th of March?). Their checks keep state across chunks; when a
later chunk proves an earlier assumption wrong they raise ``Reread`` and the caller
reads the file again with the order fixed.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from services.core.datasets import Dataset, Field
from services.core.imports import amounts
from services.core.imports.mapping import Mapping
from services.core.imports.readers import Chunk
from services.core.imports.staging import RAW_SEPARATOR

NOT_AMOUNT = "not an amount"
MAX_INT = 2**31 - 1
MAX_CENTS = 2**53  # beyond this a float no longer holds every cent
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_NAMES = {"\x00": "NUL", "\x7f": "DEL"}
_DOT_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d*\.\d+|\d+\.?")
_SLASH_DATE = r"^(\d{1,2})([/.-])(\d{1,2})\2(\d{4}|\d{2})$"
_ISO_PREFIX = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]")
# A timestamp's zone: Z, an offset, or the abbreviations marketplace reports write.
_ZONE_SUFFIX = re.compile(r"(?:Z|[+-]\d{2}(?::?\d{2})?)$")
ZONE_OFFSETS = {
    "UTC": "+00:00",
    "GMT": "+00:00",
    "BST": "+01:00",
    "CET": "+01:00",
    "CEST": "+02:00",
    "EST": "-05:00",
    "EDT": "-04:00",
    "CST": "-06:00",
    "CDT": "-05:00",
    "MST": "-07:00",
    "MDT": "-06:00",
    "PST": "-08:00",
    "PDT": "-07:00",
}
_ZONE_NAMES = re.compile(r"\s*\b(" + "|".join(ZONE_OFFSETS) + r")$")
# Named formats seen in marketplace and spreadsheet exports, tried in order.
DATE_FORMATS: tuple[tuple[str, str], ...] = (
    ("%b-%d-%y", "Mon-DD-YY"),
    ("%b-%d-%Y", "Mon-DD-YYYY"),
    ("%d-%b-%Y", "DD-Mon-YYYY"),
    ("%d-%b-%y", "DD-Mon-YY"),
    ("%d %b %Y", "DD Mon YYYY"),
    ("%b %d, %Y", "Mon DD, YYYY"),
    ("%B %d, %Y", "Month DD, YYYY"),
    ("%d %B %Y", "DD Month YYYY"),
    ("%Y/%m/%d", "YYYY/MM/DD"),
)
# Excel day numbers 1000-99999 are the years 1902-2173; 1899-12-30 is Excel's day zero.
EXCEL_SERIALS = (1000, 100_000)
EXCEL_EPOCH = np.datetime64("1899-12-30", "D")
_NO_POINT = operator.methodcaller("replace", ".", "", 1)
TRUE = frozenset({"true", "yes", "y", "1", "t", "x"})
FALSE = frozenset({"false", "no", "n", "0", "f", ""})

Indices = npt.NDArray[np.intp]


class Reread(Exception):
    """A later chunk showed a column must be read differently; read the file again."""

    def __init__(self, field: str, order: str, reason: str) -> None:
        super().__init__(f"{field}: dates are {order}-first")
        self.field = field
        self.order = order
        self.reason = reason


@dataclass
class Checked:
    """One column of a chunk after its check."""

    values: list[Any]
    bad: list[int] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def fail(self, indices: Sequence[int] | Indices, message: str) -> None:
        for i in indices:
            self.bad.append(int(i))
            self.messages.append(message)
            self.values[int(i)] = None


def _floats(values: npt.NDArray[np.object_], parse: Any = float) -> npt.NDArray[np.float64]:
    """Numbers of a column; NaN where a value is not one. float() is the fast path.

    When a chunk holds a bad value, only the values that are not plain digits (with at
    most one point) go through the slower, forgiving ``parse``.
    """
    n = len(values)
    try:
        return np.fromiter(map(parse, values), dtype=np.float64, count=n)
    except (ValueError, TypeError, OverflowError):
        pass
    plain = np.fromiter(map(str.isdecimal, map(_NO_POINT, values)), dtype=bool, count=n)
    out = np.empty(n, dtype=np.float64)
    simple, other = np.flatnonzero(plain), np.flatnonzero(~plain)
    out[simple] = np.fromiter(map(float, values[simple]), dtype=np.float64, count=len(simple))
    out[other] = np.fromiter(map(_safe(parse), values[other]), dtype=np.float64, count=len(other))
    return out


def _safe(parse: Any) -> Any:
    def convert(value: str) -> float:
        try:
            return float(parse(value))
        except (ValueError, TypeError, OverflowError):
            return math.nan

    return convert


def _grouped_number(value: str) -> float:
    """``1,234`` or ``1234.5`` (thousands with commas), for whole numbers too."""
    value = value.strip()
    if not _DOT_NUMBER.fullmatch(value.lstrip("+-")):
        raise ValueError(value)
    return float(value.replace(",", ""))


class Check:
    """The check of one field; subclasses per type. ``state`` documents what was inferred."""

    # Numbers parse with surrounding whitespace as they are; stripping them first would
    # cost a fifth of a numeric column's time for nothing.
    strips = True

    def __init__(self, f: Field) -> None:
        self.field = f
        self.default: Any = None
        if f.default is not None:
            checked = self.check(np.array([f.default], dtype=object))
            if checked.bad:
                raise ValueError(f"default {f.default!r} of field {f.name} is not valid")
            self.default = checked.values[0]

    def state(self) -> dict[str, Any] | None:
        return None

    def run(self, raw: Sequence[str]) -> Checked:
        items = list(map(str.strip, raw)) if self.strips else raw
        values = np.empty(len(items), dtype=object)
        values[:] = items
        # ``in`` scans in C and stops early; most columns have no empty value at all.
        blanks = values == "" if "" in items else None
        empty = np.flatnonzero(blanks) if blanks is not None else np.empty(0, dtype=np.intp)
        if len(empty) == len(values):
            checked = Checked([None] * len(values))
        elif len(empty):
            assert blanks is not None
            full = np.flatnonzero(~blanks)
            inner = self.check(values[full])
            out: list[Any] = [None] * len(values)
            for i, v in zip(full.tolist(), inner.values, strict=True):
                out[i] = v
            checked = Checked(out, [int(full[i]) for i in inner.bad], inner.messages)
        else:
            checked = self.check(values)
        if not self.strips and checked.bad:
            # A value of spaces only is empty, not a bad number.
            blank = {i for i in checked.bad if not str(values[i]).strip()}
            empty = np.asarray(empty, dtype=np.intp)
            if blank:
                pairs = zip(checked.bad, checked.messages, strict=True)
                keep = [(i, m) for i, m in pairs if i not in blank]
                checked.bad, checked.messages = [i for i, _ in keep], [m for _, m in keep]
                empty = np.sort(np.concatenate([empty, np.asarray(sorted(blank), dtype=np.intp)]))
        if len(empty):
            if self.field.required:
                checked.fail(empty, "required")
            elif self.default is not None:
                for i in empty.tolist():
                    checked.values[i] = self.default
        return checked

    def check(self, values: npt.NDArray[np.object_]) -> Checked:
        """Read non-empty, stripped values."""
        raise NotImplementedError

    # --- the column-wise fast path --------------------------------------------------------

    arrow_type: pa.DataType = pa.string()

    def fast(self, column: pa.StringArray) -> tuple[pa.Array, pa.BooleanArray] | None:
        """The values of a column that are plainly good, read by Arrow kernels.

        ``(values, handled)``: where ``handled`` is true the value is exactly what
        ``run`` would make of it; the other values go through ``run``. None: no fast
        path (every value goes through ``run``).
        """
        return None

    def before(self, column: pa.StringArray) -> None:
        """Decide what the whole column decides (``run`` would, on its first values)."""

    def run_column(self, column: pa.StringArray) -> tuple[pa.Array, list[int], list[str]]:
        """``run`` on a whole column: ``(typed values, bad indices, messages)``."""
        self.before(column)
        found = self.fast(column) if len(column) else None
        if found is None:
            checked = self.run(column.to_pylist())
            return pa.array(checked.values, type=self.arrow_type), checked.bad, checked.messages
        values, handled = found
        if handled.false_count == 0 and handled.null_count == 0:
            return values, [], []
        rest = np.flatnonzero(~handled.to_numpy(zero_copy_only=False))
        checked = self.run(column.take(pa.array(rest)).to_pylist())
        replaced = pc.invert(handled)
        values = pc.replace_with_mask(
            values, replaced, pa.array(checked.values, type=self.arrow_type)
        )
        return values, rest[checked.bad].tolist(), checked.messages


# What str.strip() removes (str.isspace), and the control characters TextCheck refuses;
# a value that starts or ends with the one, or holds the other, is left to ``run``.
_SPACE_CLASS = (
    r"[\t\n\x0b\x0c\r\x1c-\x1f \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}"
    r"\x{202f}\x{205f}\x{3000}]"
)
_NOT_PLAIN_TEXT = rf"^(?:$|{_SPACE_CLASS})|{_SPACE_CLASS}$|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
_PLAIN_AMOUNT = r"^-?[0-9]{1,13}(?:\.[0-9]{1,2})?$"
_PLAIN_DATE = r"^(?:19|20|21)[0-9]{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])$"


def _matching(column: pa.StringArray, pattern: str) -> pa.BooleanArray:
    """True where the value matches; false for nulls."""
    return pc.fill_null(pc.match_substring_regex(column, pattern), False)


class TextCheck(Check):
    def fast(self, column: pa.StringArray) -> tuple[pa.Array, pa.BooleanArray] | None:
        # Printable ASCII is plain unless a space starts or ends it; only other values
        # need the regular expression, a kernel several times slower.
        filled = pc.greater(pc.binary_length(column), 0)  # Arrow finds "" printable
        printable = pc.fill_null(pc.and_(pc.ascii_is_printable(column), filled), False)
        padded = pc.or_(pc.starts_with(column, " "), pc.ends_with(column, " "))
        plain = pc.and_not(printable, pc.fill_null(padded, False))
        if printable.false_count == 0:
            return column, plain
        rest = np.flatnonzero(~printable.to_numpy(zero_copy_only=False))
        found = pc.match_substring_regex(column.take(pa.array(rest)), _NOT_PLAIN_TEXT)
        return column, pc.replace_with_mask(
            plain, pc.invert(printable), pc.invert(pc.fill_null(found, True))
        )

    def check(self, values: npt.NDArray[np.object_]) -> Checked:
        checked = Checked(values.tolist())
        joined = " ".join(checked.values)
        # isprintable() is one C pass; only text with tabs, newlines or odd characters
        # needs the regular expression.
        if not joined.isprintable() and _CONTROL.search(joined):
            for i, value in enumerate(checked.values):
                if found := _CONTROL.search(value):
                    char = found.group()
                    name = _CONTROL_NAMES.get(char, f"U+{ord(char):04X}")
                    checked.fail([i], f"contains a control character ({name})")
        return checked


class IntCheck(Check):
    message = "not a whole number"
    strips = False
    arrow_type = pa.int64()

    def fast(self, column: pa.StringArray) -> tuple[pa.Array, pa.BooleanArray] | None:
        # ^[0-9]{1,9}$ without a regular expression: ASCII digits only, nine at most.
        digits = pc.and_(pc.ascii_is_decimal(column), pc.less_equal(pc.binary_length(column), 9))
        plain = pc.fill_null(digits, False)
        numbers = pc.cast(pc.if_else(plain, column, "0"), pa.int64())
        if self.field.min is not None:
            plain = pc.and_(plain, pc.greater_equal(numbers, self.field.min))
        plain = pc.and_(plain, pc.less_equal(numbers, int(self.limit)))
        return numbers, plain

    def __init__(self, f: Field, *, limit: float = MAX_INT) -> None:
        self.limit = limit
        super().__init__(f)

    def numbers(self, values: npt.NDArray[np.object_]) -> npt.NDArray[np.float64]:
        numbers = _floats(values)
        if np.isnan(numbers).any():
            slow = np.flatnonzero(np.isnan(numbers))
            numbers[slow] = _floats(values[slow], _grouped_number)
        return numbers

    def check(self, values: npt.NDArray[np.object_]) -> Checked:
        numbers = self.numbers(values)
        whole = np.isfinite(numbers) & (numbers == np.floor(numbers))
        large = whole & (np.abs(numbers) > self.limit)
        # Only numbers in range are cast: a larger one would not fit an int64.
        ints = np.where(whole & ~large, numbers, 0).astype(np.int64)
        checked = Checked(ints.tolist())
        checked.fail(np.flatnonzero(~whole), self.message)
        if self.field.min is not None:
            checked.fail(
                np.flatnonzero(whole & (numbers < self.field.min)),
                f"must be at least {self.field.min}",
            )
        checked.fail(np.flatnonzero(large), "too large")
        return checked


class CentsCheck(IntCheck):
    """Money given in whole cents (a column named ``… cents``)."""

    message = "not a whole number of cents"

    def __init__(self, f: Field) -> None:
        super().__init__(f, limit=MAX_CENTS)


class MoneyCheck(Check):
    """Decimal currency → integer cents; the decimal mark is inferred per column.

    Plain numbers go through ``float`` at C speed; the rest (``US $1,234.56``, ``(5.00)``)
    through ``amounts.parse_amount``, and a currency marker that rules out the account's
    currency (``currency``) is an error. So is every value of a column whose header
    names another currency (``column_currency``).
    """

    strips = False
    arrow_type = pa.int64()

    def __init__(
        self,
        f: Field,
        *,
        decimal_comma: bool = False,
        currency: str = "USD",
        column_currency: str | None = None,
    ) -> None:
        self.decimal: str | None = None
        self.hinted = decimal_comma
        self.currency = currency
        self.column_currency: str | None = None
        super().__init__(f)
        self.decimal = None  # reading the default must not decide the column
        self.column_currency = column_currency  # the default is in the account's currency

    def state(self) -> dict[str, Any] | None:
        if self.decimal is None:
            return None
        return {"decimal_mark": "comma" if self.decimal == "," else "point"}

    def _infer(self, values: npt.NDArray[np.object_]) -> str:
        sample = [amounts.core(str(v).strip()) for v in values[:2000].tolist()]
        comma = sum(1 for v in sample if amounts.COMMA_DECIMAL.match(v))
        dot = sum(1 for v in sample if amounts.DOT_DECIMAL.match(v))
        if comma > dot or (self.hinted and comma == dot == 0):
            return ","
        return "."

    def _numbers(
        self, values: npt.NDArray[np.object_]
    ) -> tuple[npt.NDArray[np.float64], dict[int, str]]:
        """The amounts (NaN where none), and why each contradicting one contradicts."""
        decimal = self.decimal or "."
        numbers = _floats(values) if decimal == "." else np.full(len(values), np.nan)
        contradicted: dict[int, str] = {}
        for i in np.flatnonzero(np.isnan(numbers)).tolist():
            try:
                number, marker = amounts.parse_amount(values[i], decimal)
            except ValueError:
                continue
            if why := amounts.contradiction(marker, self.currency):
                contradicted[i] = why
            else:
                numbers[i] = number
        if self.column_currency and self.column_currency != self.currency:
            why = (
                f"in {self.column_currency} (the column's header says so), but this account's "
                f"currency is {self.currency}"
            )
            contradicted = dict.fromkeys(range(len(values)), why)
            numbers[:] = np.nan
        return numbers, contradicted

    def before(self, column: pa.StringArray) -> None:
        """The decimal mark from the column's first non-empty values, as ``check`` would."""
        if self.decimal is not None:
            return
        sample: list[str] = []
        start = 0
        while len(sample) < 2000 and start < len(column):
            part = column.slice(start, 4000).to_pylist()
            sample += [v for v in part if v != ""][: 2000 - len(sample)]
            start += 4000
        if sample:
            self.decimal = self._infer(np.array(sample, dtype=object))

    def fast(self, column: pa.StringArray) -> tuple[pa.Array, pa.BooleanArray] | None:
        if self.decimal != "." or (self.column_currency and self.column_currency != self.currency):
            return None
        plain = _matching(column, _PLAIN_AMOUNT)
        numbers = pc.cast(pc.if_else(plain, column, "0"), pa.float64())
        # As ``check`` does: the float times 100, rounded (exact for two decimals).
        cents = pc.cast(pc.round(pc.multiply(numbers, 100.0)), pa.int64())
        return cents, plain

    def check(self, values: npt.NDArray[np.object_]) -> Checked:
        if self.decimal is None:
            self.decimal = self._infer(values)
        numbers, contradicted = self._numbers(values)
        cents = np.rint(numbers * 100)
        finite = np.isfinite(cents)
        exact = finite & (np.abs(numbers * 100 - cents) <= 1e-6 * np.maximum(1, np.abs(cents)))
        large = finite & (np.abs(cents) > MAX_CENTS)
        # Only amounts in range are cast: a larger one would not fit an int64.
        checked = Checked(np.where(finite & ~large, cents, 0).astype(np.int64).tolist())
        unread = np.flatnonzero(~finite).tolist()
        checked.fail([i for i in unread if i not in contradicted], NOT_AMOUNT)
        for i, why in contradicted.items():
            checked.fail([i], why)
        checked.fail(np.flatnonzero(finite & ~exact), "more than two decimals")
        checked.fail(np.flatnonzero(large), "too large")
        return checked


def _may_match(fmt: str, texts: str) -> bool:
    """Whether any of the values (joined) could be in ``fmt``: a month name needs a
    letter, a slash a slash. Saves a parse per format where none could match."""
    if ("%b" in fmt or "%B" in fmt) and not any(map(str.isalpha, texts)):
        return False
    return "/" not in fmt or "/" in texts


class DateCheck(Check):
    """ISO, MM/DD/YYYY or DD/MM/YYYY (order inferred per column), Mon-DD-YY, Excel serials.

    A timestamp counts on its date: in the account's ``time_zone`` when it carries a zone
    (``2026-03-01T02:30:00Z`` is 28 February in Los Angeles), as written when it does not.
    """

    def __init__(
        self,
        f: Field,
        *,
        day_first: bool = False,
        order: tuple[str, str] | None = None,
        time_zone: str = "UTC",
    ) -> None:
        # ``order`` is fixed when the file is read again after a later chunk decided it.
        self.time_zone = time_zone
        self.zoned = False
        self.order: str | None = order[0] if order else None
        self.assumed = False
        self.reason = order[1] if order else ""
        self.day_first_hint = day_first
        self.seen: dict[str, int] = {}
        super().__init__(f)
        self.seen.clear()

    arrow_type = pa.date32()

    def fast(self, column: pa.StringArray) -> tuple[pa.Array, pa.BooleanArray] | None:
        plain = _matching(column, _PLAIN_DATE)
        stamps = pc.strptime(
            pc.if_else(plain, column, "2000-01-01"), format="%Y-%m-%d", unit="s", error_is_null=True
        )
        days = pc.cast(stamps, pa.date32())
        # strptime rolls 2026-02-30 over to March; only a date that reads back is one.
        plain = pc.and_(plain, pc.fill_null(pc.equal(pc.cast(days, pa.string()), column), False))
        self._count("YYYY-MM-DD", plain.true_count)
        return days, plain

    def state(self) -> dict[str, Any] | None:
        if not self.seen:
            return None
        doc: dict[str, Any] = {"formats": dict(self.seen)}
        if self.order:
            doc["order"] = f"{self.order}-first"
            doc["order_reason"] = self.reason
        if self.zoned:
            doc["time_zone"] = self.time_zone
        return doc

    def _count(self, name: str, n: int) -> None:
        if n:
            self.seen[name] = self.seen.get(name, 0) + n

    def check(self, values: npt.NDArray[np.object_]) -> Checked:
        n = len(values)
        days = np.full(n, np.datetime64("NaT"), dtype="datetime64[D]")
        series = pd.Series(values, dtype=object)
        iso = pd.to_datetime(series, format="%Y-%m-%d", errors="coerce").to_numpy("datetime64[D]")
        days[:] = iso
        self._count("YYYY-MM-DD", int((~np.isnat(iso)).sum()))
        rest = np.flatnonzero(np.isnat(days))
        if len(rest):
            self._rest(values, days, rest)
        bad = np.flatnonzero(np.isnat(days))
        checked = Checked(days.astype(object).tolist())
        checked.fail(bad, "not a date")
        return checked

    def _rest(
        self, values: npt.NDArray[np.object_], days: npt.NDArray[np.datetime64], rest: Indices
    ) -> None:
        sub = pd.Series(values[rest], dtype=object)
        timed = sub.str.match(_ISO_PREFIX).to_numpy(bool)
        if timed.any():
            self._timestamps(sub[timed], days, rest[timed])
        rest = rest[np.isnat(days[rest])]
        if len(rest):
            self._slashed(values, days, rest)
        texts = " ".join(map(str, values[rest].tolist()))
        for fmt, name in DATE_FORMATS:
            rest = rest[np.isnat(days[rest])]
            if not len(rest):
                return
            if not _may_match(fmt, texts):
                continue
            parsed = pd.to_datetime(
                pd.Series(values[rest], dtype=object), format=fmt, errors="coerce"
            ).to_numpy("datetime64[D]")
            days[rest] = parsed
            self._count(name, int((~np.isnat(parsed)).sum()))
        rest = rest[np.isnat(days[rest])]
        if len(rest):
            numbers = _floats(values[rest])
            serial = (numbers >= EXCEL_SERIALS[0]) & (numbers < EXCEL_SERIALS[1])
            whole = np.where(serial, np.floor(numbers), 0).astype(np.int64)
            days[rest[serial]] = EXCEL_EPOCH + whole[serial].astype("timedelta64[D]")
            self._count("Excel serial number", int(serial.sum()))

    def _timestamps(
        self, texts: pd.Series[Any], days: npt.NDArray[np.datetime64], at: Indices
    ) -> None:
        """ISO with a time: with a zone, its date in the account's zone; else the date part."""
        texts = texts.str.replace(_ZONE_NAMES, lambda m: ZONE_OFFSETS[m.group(1)], regex=True)
        zoned = texts.str.contains(_ZONE_SUFFIX).to_numpy(bool)
        if zoned.any():
            stamps = pd.to_datetime(texts[zoned], format="ISO8601", utc=True, errors="coerce")
            local = stamps.dt.tz_convert(self.time_zone).dt.tz_localize(None)
            parsed = local.to_numpy("datetime64[D]")
            days[at[zoned]] = parsed
            found = int((~np.isnat(parsed)).sum())
            self._count("YYYY-MM-DD hh:mm with a zone", found)
            self.zoned = self.zoned or found > 0
        if (~zoned).any():
            parsed = pd.to_datetime(
                texts[~zoned].str.slice(0, 10), format="%Y-%m-%d", errors="coerce"
            ).to_numpy("datetime64[D]")
            days[at[~zoned]] = parsed
            self._count("YYYY-MM-DD hh:mm", int((~np.isnat(parsed)).sum()))

    def _slashed(
        self, values: npt.NDArray[np.object_], days: npt.NDArray[np.datetime64], rest: Indices
    ) -> None:
        parts = pd.Series(values[rest], dtype=object).str.extract(_SLASH_DATE)
        found = parts[0].notna().to_numpy(bool)
        if not found.any():
            return
        first = parts[0][found].astype(np.int64).to_numpy(np.int64)
        second = parts[2][found].astype(np.int64).to_numpy(np.int64)
        year = parts[3][found].astype(int).to_numpy()
        year = np.where(year < 100, np.where(year < 70, 2000 + year, 1900 + year), year)
        self._decide(first, second, values[rest][found])
        day, month = (first, second) if self.order == "day" else (second, first)
        frame = pd.DataFrame({"year": year, "month": month, "day": day})
        parsed = pd.to_datetime(frame, errors="coerce").to_numpy("datetime64[D]")
        days[rest[found]] = parsed
        sep = str(parts[1][found].iloc[0])
        name = f"DD{sep}MM{sep}YYYY" if self.order == "day" else f"MM{sep}DD{sep}YYYY"
        self._count(name, int((~np.isnat(parsed)).sum()))

    def _decide(
        self,
        first: npt.NDArray[np.integer[Any]],
        second: npt.NDArray[np.integer[Any]],
        texts: npt.NDArray[np.object_],
    ) -> None:
        day_evidence = np.flatnonzero((first > 12) & (second <= 12))
        month_evidence = np.flatnonzero((second > 12) & (first <= 12))
        if self.order and not self.assumed:
            return
        if len(day_evidence) and len(day_evidence) >= len(month_evidence):
            decided, example = "day", texts[day_evidence[0]]
        elif len(month_evidence):
            decided, example = "month", texts[month_evidence[0]]
        else:
            if self.order is None:
                self.order = "day" if self.day_first_hint else "month"
                self.assumed = True
                self.reason = "assumed: no value has a day above 12" + (
                    " (day-first, as usual in files with ; separators)"
                    if self.day_first_hint
                    else ""
                )
            return
        part = "first" if decided == "day" else "second"
        reason = f"{example} has a day above 12 in the {part} place"
        if self.assumed and decided != self.order:
            raise Reread(self.field.name, decided, reason)
        self.order, self.assumed, self.reason = decided, False, reason


class EnumCheck(Check):
    def __init__(self, f: Field) -> None:
        self.lookup: dict[str, str] = {}
        for v in f.values:
            for variant in (v, v.lower(), v.upper(), v.title(), v.capitalize()):
                self.lookup[variant] = v
        self.message = "not one of " + ", ".join(f.values)
        self.folded = {v.casefold(): v for v in f.values}
        self.exact = pa.array(list(f.values), type=pa.string())
        super().__init__(f)

    def fast(self, column: pa.StringArray) -> tuple[pa.Array, pa.BooleanArray] | None:
        return column, pc.is_in(column, value_set=self.exact)

    def check(self, values: npt.NDArray[np.object_]) -> Checked:
        found = list(map(self.lookup.get, values.tolist()))
        checked = Checked(found)
        misses = [i for i, v in enumerate(found) if v is None]
        bad = []
        for i in misses:
            value = self.folded.get(str(values[i]).casefold())
            if value is None:
                bad.append(i)
            else:
                checked.values[i] = value
        checked.fail(bad, self.message)
        return checked


class BoolCheck(Check):
    arrow_type = pa.bool_()

    def check(self, values: npt.NDArray[np.object_]) -> Checked:
        folded = [str(v).casefold() for v in values.tolist()]
        out: list[Any] = [True if v in TRUE else False if v in FALSE else None for v in folded]
        checked = Checked(out)
        checked.fail([i for i, v in enumerate(out) if v is None], "not yes or no")
        return checked


class DatetimeCheck(Check):
    arrow_type = pa.timestamp("us", tz="UTC")

    def check(self, values: npt.NDArray[np.object_]) -> Checked:
        parsed = pd.to_datetime(
            pd.Series(values, dtype=object), format="ISO8601", utc=True, errors="coerce"
        )
        out = [None if pd.isna(v) else v.to_pydatetime() for v in parsed]
        checked = Checked(out)
        checked.fail([i for i, v in enumerate(out) if v is None], "not a date and time")
        return checked


def make_check(
    f: Field,
    *,
    unit: str | None,
    decimal_comma: bool,
    date_order: tuple[str, str] | None,
    currency: str = "USD",
    time_zone: str = "UTC",
) -> Check:
    if f.type == "money":
        if unit == "cents":
            return CentsCheck(f)
        return MoneyCheck(f, decimal_comma=decimal_comma, currency=currency, column_currency=unit)
    if f.type == "int":
        return IntCheck(f)
    if f.type == "date":
        return DateCheck(f, day_first=decimal_comma, order=date_order, time_zone=time_zone)
    if f.type == "enum":
        return EnumCheck(f)
    if f.type == "bool":
        return BoolCheck(f)
    if f.type == "datetime":
        return DatetimeCheck(f)
    return TextCheck(f)


def pg_array(messages: list[str]) -> str:
    """A PostgreSQL text[] literal."""
    quoted = ('"' + m.replace("\\", "\\\\").replace('"', '\\"') + '"' for m in messages)
    return "{" + ",".join(quoted) + "}"


_CSV = pa_csv.WriteOptions(include_header=False, batch_size=4096)


@dataclass
class Rows:
    """A checked chunk, ready for the staging table: Arrow columns, errors where any."""

    lines: list[int]
    arrays: list[pa.Array]  # one per importable field, in ``Validator.fields`` order
    problems: dict[int, list[str]]  # row index → its messages (rows with none are absent)
    raw_values: pa.Array  # every row's original values, joined by U+001F
    invalid: int

    @property
    def columns(self) -> list[list[Any]]:
        return [a.to_pylist() for a in self.arrays]

    @property
    def errors(self) -> list[list[str] | None]:
        out: list[list[str] | None] = [None] * len(self.lines)
        for i, messages in self.problems.items():
            out[i] = messages
        return out

    @property
    def raw(self) -> list[str]:
        return self.raw_values.to_pylist()  # type: ignore[no-any-return]

    def payload(self, names: list[str]) -> bytes:
        """The rows as COPY … (FORMAT csv) text: ``line``, the fields, ``errors``, ``raw``."""
        n = len(self.lines)
        errors = pa.nulls(n, pa.string())
        if self.problems:
            at = sorted(self.problems)
            mask = np.zeros(n, dtype=bool)
            mask[at] = True
            literals = pa.array([pg_array(self.problems[i]) for i in at], type=pa.string())
            errors = pc.replace_with_mask(errors, pa.array(mask), literals)
        table = pa.Table.from_arrays(
            [pa.array(self.lines, type=pa.int32()), *self.arrays, errors, self.raw_values],
            names=["line", *names, "errors", "raw"],
        )
        sink = pa.BufferOutputStream()
        pa_csv.write_csv(table, sink, _CSV)
        data: bytes = sink.getvalue().to_pybytes()
        return data


# Bits of the key filter: 4 MiB, whatever the file's size. Two bits a key: a million
# keys make 0.3% of rows keep their text for nothing, the limit of 2 million 1.3%.
KEY_BITS = 1 << 25


class KeyHashes:
    """The natural keys read so far, as a Bloom filter: which rows may repeat one.

    A row whose key may be an earlier row's keeps its original text in staging; the
    duplicate check in SQL then looks at those keys only (a false positive costs a
    kept text, nothing else). Its memory is the same for every file.
    """

    def __init__(self) -> None:
        self.bits = np.zeros(KEY_BITS // 8, dtype=np.uint8)

    def repeated(self, keys: pa.Array) -> npt.NDArray[np.bool_]:
        """Per value: whether an earlier value (in this chunk or before) may be alike."""
        out = np.zeros(len(keys), dtype=bool)
        present = np.flatnonzero(keys.is_valid().to_numpy(zero_copy_only=False))
        if not len(present):
            return out
        values = keys.take(pa.array(present)).to_numpy(zero_copy_only=False)
        hashes = pd.util.hash_array(values, categorize=False)
        again = pd.Series(hashes).duplicated().to_numpy()  # as an earlier row of the chunk
        seen = np.ones(len(hashes), dtype=bool)
        places = []
        for bit in (hashes % KEY_BITS, (hashes >> np.uint64(32)) % KEY_BITS):
            byte, mask = bit >> np.uint64(3), np.left_shift(1, bit & np.uint64(7)).astype(np.uint8)
            seen &= (self.bits[byte] & mask) != 0
            places.append((byte, mask))
        for byte, mask in places:
            np.bitwise_or.at(self.bits, byte, mask)
        out[present] = seen | again
        return out


def _strings(column: Sequence[str] | pa.Array) -> pa.StringArray:
    if isinstance(column, pa.Array):
        return column if column.type == pa.string() else pc.cast(column, pa.string())
    return pa.array(column, type=pa.string())


class Validator:
    """Checks chunks of one file under one mapping; keeps per-column inference across chunks."""

    def __init__(
        self,
        ds: Dataset,
        mapping: Mapping,
        headers: list[str],
        *,
        european: bool = False,
        date_orders: dict[str, tuple[str, str]] | None = None,
        keep_raw: bool = True,
    ) -> None:
        """``keep_raw``: keep every row's original text. Without it only the rows that
        failed, or whose natural key may repeat an earlier row's, keep it: the account
        has no records for a key to exist already (see ``staging.check_keys``)."""
        self.ds = ds
        self.fields = ds.importable
        by_field = {m.field: (headers.index(h), m) for h, m in mapping.items() if m is not None}
        self.plans: list[tuple[Field, int | None, Check]] = []
        for f in self.fields:
            source, match = by_field.get(f.name, (None, None))
            check = make_check(
                f,
                unit=match.unit if match else None,
                decimal_comma=european,
                date_order=(date_orders or {}).get(f.name),
                currency=ds.currency,
                time_zone=ds.time_zone,
            )
            self.plans.append((f, source, check))
        key = [i for i, (f, source, _) in enumerate(self.plans) if f.name == ds.natural_key]
        self.key = key[0] if key and not keep_raw and self.plans[key[0]][1] is not None else None
        self.keys = KeyHashes()

    def formats(self) -> dict[str, Any]:
        """What was inferred per column (date order, decimal mark, formats seen)."""
        out = {}
        for f, source, check in self.plans:
            if source is not None and (state := check.state()):
                out[f.name] = state
        return out

    def check(self, chunk: Chunk) -> Rows:
        n = len(chunk)
        problems: dict[int, list[str]] = {i: [m] for i, m in chunk.row_errors.items()}
        sources = [_strings(column) for column in chunk.columns]
        arrays: list[pa.Array] = []
        for f, source, check in self.plans:
            if source is None:
                arrays.append(pa.array([check.default] * n, type=check.arrow_type))
                continue
            values, bad, messages = check.run_column(sources[source])
            for i, message in zip(bad, messages, strict=True):
                if i not in chunk.unreadable:
                    problems.setdefault(i, []).append(f"{f.name}: {message}")
            arrays.append(values)
        keep: npt.NDArray[np.bool_] | None = None
        if self.key is not None and n:
            keep = self.keys.repeated(arrays[self.key])
            keep[np.fromiter(problems, dtype=np.intp, count=len(problems))] = True
        ordered = dict(sorted(problems.items()))
        return Rows(list(chunk.lines), arrays, ordered, _raw(sources, n, keep), len(problems))


def _raw(sources: list[pa.StringArray], n: int, keep: npt.NDArray[np.bool_] | None) -> pa.Array:
    """Each row's original values joined by U+001F (only where ``keep``, if given)."""
    count = n
    if keep is not None:
        at = np.flatnonzero(keep)
        sources, count = [column.take(pa.array(at)) for column in sources], len(at)
    if len(sources) == 1:
        raw = sources[0]
    elif sources:
        raw = pc.binary_join_element_wise(*sources, RAW_SEPARATOR)
    else:
        raw = pa.array([""] * count, type=pa.string())
    # PostgreSQL text holds no NUL; show it as U+FFFD.
    if len(raw) and pc.any(pc.match_substring(raw, "\x00")).as_py():
        raw = pc.replace_substring(raw, "\x00", "\ufffd")
    if keep is None:
        return raw
    return pc.replace_with_mask(pa.nulls(n, pa.string()), pa.array(keep), raw)
