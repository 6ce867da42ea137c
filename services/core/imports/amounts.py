"""Amounts as people paste them: ``US $1,234.56``, ``1.234,56 €``, ``CHF 12.00``, ``(12.34)``.

``parse_amount`` splits a value into its number and its currency *marker* — whatever
symbol or code stands before or after the digits — and reads the sign however it is
written: a minus in front, behind (``12.34-``) or between symbol and digits
(``$-5.00``), or accounting brackets. ``currencies`` says which currencies a marker
can mean: ``C $`` is only CAD, a bare ``$`` any dollar, ``¥`` yen or yuan. A value
whose marker rules out the account's currency contradicts it (see ``MoneyCheck``);
one whose marker could be it, or has none, does not.
"""

from __future__ import annotations

import re

DOLLARS = frozenset({"USD", "CAD", "AUD", "NZD", "HKD", "SGD", "MXN"})
# ISO 4217 codes sellers meet; any of them is a marker of itself.
CODES = frozenset(
    {"EUR", "GBP", "CHF", "JPY", "CNY", "SEK", "NOK", "DKK", "PLN", "CZK", "HUF", "INR", "BRL"}
    | {"ZAR", "ILS", "KRW"}
    | DOLLARS
)
MARKERS: dict[str, frozenset[str]] = {
    "$": DOLLARS,
    "US$": frozenset({"USD"}),
    "C$": frozenset({"CAD"}),
    "CA$": frozenset({"CAD"}),
    "CAN$": frozenset({"CAD"}),
    "A$": frozenset({"AUD"}),
    "AU$": frozenset({"AUD"}),
    "NZ$": frozenset({"NZD"}),
    "HK$": frozenset({"HKD"}),
    "S$": frozenset({"SGD"}),
    "MX$": frozenset({"MXN"}),
    "£": frozenset({"GBP"}),
    "€": frozenset({"EUR"}),
    "¥": frozenset({"JPY", "CNY"}),
    "₹": frozenset({"INR"}),
    "FR.": frozenset({"CHF"}),
    "SFR.": frozenset({"CHF"}),
    "KR": frozenset({"SEK", "NOK", "DKK"}),
    "ZŁ": frozenset({"PLN"}),
    **{code: frozenset({code}) for code in CODES},
}
NAMES = {DOLLARS: "dollars", MARKERS["¥"]: "yen or yuan", MARKERS["KR"]: "kronor or kroner"}

# The digits of an amount with the separators between them (1,234.56 · 1.234,56 · 1 234 · 1'234).
_CORE = re.compile(r"\d(?:[\d.,'\u00a0\u202f ]*\d)?")
_SEPARATORS = str.maketrans("", "", " '\u00a0\u202f")
_DOT_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d*\.\d+|\d+\.?")
_COMMA_NUMBER = re.compile(r"\d{1,3}(?:\.\d{3})+(?:,\d+)?|\d*,\d+|\d+,?")
# What a column's decimal mark is inferred from: a value ending in one or two decimals.
COMMA_DECIMAL = re.compile(r"^[\d.' \u00a0]*\d,\d{1,2}$")
DOT_DECIMAL = re.compile(r"^[\d,' \u00a0]*\d\.\d{1,2}$")
_EDGES = re.compile(r"^\D+|\D+$")


def core(value: str) -> str:
    """The value without what surrounds its digits (for inferring the decimal mark)."""
    return _EDGES.sub("", value)


def _signs(text: str) -> tuple[str, bool]:
    """The text without its sign marks, and whether any made it negative."""
    negative = False
    for _ in range(3):
        if text.startswith("(") and text.endswith(")"):
            negative, text = True, text[1:-1].strip()
        elif text.endswith("-"):
            negative, text = True, text[:-1].rstrip()
        elif text[:1] in ("-", "+"):
            negative, text = negative or text[0] == "-", text[1:].lstrip()
        else:
            break
    return text, negative


def _number(digits: str, decimal: str) -> float:
    digits = digits.translate(_SEPARATORS)
    if decimal == ",":
        if not _COMMA_NUMBER.fullmatch(digits):
            raise ValueError(digits)
        return float(digits.replace(".", "").replace(",", "."))
    if not _DOT_NUMBER.fullmatch(digits):
        raise ValueError(digits)
    return float(digits.replace(",", ""))


def parse_amount(value: str, decimal: str = ".") -> tuple[float, str]:
    """``(number, marker)``; the marker as written, spaces out and upper-cased (``US$``).

    ValueError for anything that is not one amount with at most one marker.
    """
    text, negative = _signs(value.strip().replace("\u2212", "-"))
    found = _CORE.search(text)
    if found is None:
        raise ValueError(value)
    before, after = text[: found.start()].strip(), text[found.end() :].strip()
    if before.endswith(("-", "(")):  # "$-5.00", "$(5.00)"
        negative, before = True, before.rstrip("-( ")
        after = after.removeprefix(")").strip()
    if before and after:
        raise ValueError(value)
    marker = (before or after).replace(" ", "").upper()
    if marker and marker not in MARKERS:
        raise ValueError(value)
    number = _number(found.group(), decimal)
    return (-number if negative else number), marker


def parse_money(value: str, decimal: str = ".") -> float:
    """The number of an amount, whatever its marker."""
    return parse_amount(value, decimal)[0]


def contradiction(marker: str, account: str) -> str | None:
    """Why an amount marked ``marker`` cannot be in ``account``'s currency, if it cannot."""
    meant = MARKERS.get(marker)
    if not marker or meant is None or account in meant:
        return None
    what = next(iter(meant)) if len(meant) == 1 else NAMES.get(meant, "/".join(sorted(meant)))
    return f"in {what} ({marker}), but this account's currency is {account}"
