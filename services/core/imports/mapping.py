"""Which source column feeds which field: remembered, alias, normalised name, fuzzy match.

Every (column, field) pair gets its best evidence — an exact alias, label or field
name (1.0), the same name once normalised (0.9: accents, case, punctuation,
snake_case and camelCase, units in brackets or a trailing currency code), or a fuzzy
match of at least 0.7 (confidence 0.8 times the similarity) — and pairs are then taken
best first, one column per field and one field per column. So "Sales Record Number"
never becomes the order id while "Order Number" is there; and a header about a date
("Sale Date") is never guessed to be a field of another type ("sale status").

A money column's header may name its unit: ``cents`` (``fees_cents``, ``Fees (cents)``)
or a currency (``sale_price_usd``, ``Price (€)``), which its values must then agree with.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

from services.core.datasets import Dataset
from services.core.db.queries import Q
from services.core.errors import InvalidInput
from services.core.imports import amounts

FUZZY_THRESHOLD = 0.7
# Columns of Ferry's own error report: a fixed file comes back with them.
REPORT_COLUMNS = frozenset({"_row", "_errors"})

# camelCase and acronyms: "createdAt" → "created At", "SKUNumber" → "SKU Number".
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_BRACKETS = re.compile(r"[(\[][^)\]]*[)\]]")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
# Words in a header that say what the column holds beyond its name.
CURRENCY_WORDS = {code.lower(): code for code in amounts.CODES}
CURRENCY_SIGNS = {"€": "EUR", "£": "GBP"}
_UNIT_TAIL = re.compile(r"(?: in)? (?:" + "|".join(["cents", *sorted(CURRENCY_WORDS)]) + r")$")
DATE_WORDS = frozenset({"date", "day", "time", "timestamp", "created", "updated", "when"})


@dataclass(frozen=True)
class Match:
    field: str
    confidence: float
    reason: str
    unit: str | None = None

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "field": self.field,
            "confidence": self.confidence,
            "reason": self.reason,
        }
        if self.unit:
            doc["unit"] = self.unit
        return doc


Mapping = dict[str, Match | None]


def words(name: str) -> str:
    """The words of a header, brackets kept: ``"createdAt (UTC)"`` → ``"created at utc"``."""
    text = unicodedata.normalize("NFKD", name)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = _CAMEL.sub(" ", text).replace("#", " number ").lower()
    return " ".join(_NON_ALNUM.sub(" ", text).split())


def normalise(name: str) -> str:
    """``"Sale_Price (USD)"``, ``"sale_price_usd"``, ``"fees_in_cents"`` → ``"sale price"``,
    ``"fees"`` (the unit is ``_unit``'s); ``"OrderNo."`` → ``"order no"``; ``"createdAt"`` →
    ``"created at"``."""
    return _UNIT_TAIL.sub("", words(_BRACKETS.sub(" ", name)))


def header_key(dataset: str, headers: list[str]) -> str:
    """The same set of headers (any order, any case) gives the same key."""
    names = sorted({h.strip().casefold() for h in headers} - REPORT_COLUMNS)
    return hashlib.sha256("\n".join([dataset, *names]).encode()).hexdigest()


def _unit(header: str, field_type: str) -> str | None:
    """``cents`` or a currency code, where a money column's header names one."""
    if field_type != "money":
        return None
    named = words(header).split()
    if "cents" in named[-2:] or "cent" in named[-2:]:
        return "cents"
    for sign, code in CURRENCY_SIGNS.items():
        if sign in header:
            return code
    tail = [CURRENCY_WORDS[w] for w in named[-2:] if w in CURRENCY_WORDS]
    return tail[-1] if tail else None


def _evidence(
    header: str, names: list[tuple[str, str]], *, fuzzy: bool = True
) -> tuple[float, str] | None:
    exact = header.strip().casefold()
    for name, kind in names:
        if exact == name.casefold():
            return 1.0, kind
    norm = normalise(header)
    if not norm:
        return None
    best = 0.0
    like = ""
    for name, _ in names:
        other = normalise(name)
        if norm == other:
            return 0.9, "normalised name"
        ratio = SequenceMatcher(None, norm, other).ratio() if fuzzy else 0.0
        if ratio > best:
            best, like = ratio, name
    if best >= FUZZY_THRESHOLD:
        return round(0.8 * best, 2), f"fuzzy match with {like!r}"
    return None


def suggest(headers: list[str], ds: Dataset, remembered: dict[str, Any] | None = None) -> Mapping:
    """The mapping Ferry proposes for these headers; a remembered one comes first."""
    fields = ds.importable
    mapping: Mapping = dict.fromkeys(headers)
    if remembered:
        known = {f.name: f for f in fields}
        taken: set[str] = set()
        for header in headers:
            name = remembered.get(header)
            if isinstance(name, str) and name in known and name not in taken:
                taken.add(name)
                mapping[header] = Match(name, 1.0, "remembered", _unit(header, known[name].type))
        return mapping
    pairs: list[tuple[float, int, str, str, str]] = []
    for index, header in enumerate(headers):
        if header.strip().casefold() in REPORT_COLUMNS:
            continue
        dated = not DATE_WORDS.isdisjoint(words(header).split())
        for f in fields:
            names = [(a, "alias") for a in f.aliases]
            names += [(f.label, "label"), (f.name, "field name"), (f.column, "field name")]
            # A header about a date is only guessed at for a date field.
            fuzzy = not dated or f.type in ("date", "datetime")
            found = _evidence(header, names, fuzzy=fuzzy)
            if found is not None:
                pairs.append((found[0], -index, header, f.name, found[1]))
    pairs.sort(reverse=True)
    used: set[str] = set()
    types = {f.name: f.type for f in fields}
    for confidence, _, header, name, reason in pairs:
        if mapping[header] is not None or name in used:
            continue
        used.add(name)
        mapping[header] = Match(name, confidence, reason, _unit(header, types[name]))
    return mapping


def apply_choices(mapping: Mapping, choices: dict[str, str | None], ds: Dataset) -> Mapping:
    """The suggestion with the caller's choices on top (a chosen field leaves other columns)."""
    types = {f.name: f.type for f in ds.importable}
    result = dict(mapping)
    for header, name in choices.items():
        if header not in result:
            continue
        if name is None:
            result[header] = None
            continue
        for other, match in result.items():
            if match is not None and match.field == name and other != header:
                result[other] = None
        result[header] = Match(name, 1.0, "chosen", _unit(header, types[name]))
    return result


def check_choices(choices: Any, headers: list[str], ds: Dataset) -> dict[str, str | None]:
    """A mapping body of ``PUT /mapping``: known columns, importable fields, no field twice."""
    if not isinstance(choices, dict) or not choices:
        raise InvalidInput(
            "send a JSON object of {source column: field or null}",
            errors=[{"field": "body", "message": "expected an object"}],
        )
    fields = {f.name for f in ds.importable}
    errors: list[dict[str, str]] = []
    seen: dict[str, str] = {}
    for header, name in choices.items():
        if header not in headers:
            errors.append({"field": header, "message": "no such column in the file"})
        if name is None:
            continue
        if not isinstance(name, str) or name not in fields:
            errors.append(
                {"field": header, "message": f"{name!r} is not an importable field of {ds.name}"}
            )
            continue
        if name in seen:
            errors.append(
                {"field": header, "message": f"{name} is already mapped from {seen[name]!r}"}
            )
        seen[name] = header
    if errors:
        raise InvalidInput(
            "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors
        )
    return dict(choices)


def header_score(headers: list[str], ds: Dataset) -> tuple[float, str]:
    """How well a header row fits the dataset (0-1: matched fields weighted by
    confidence), and why — what chooses among a workbook's sheets."""
    fields = ds.importable
    matched = {m.field: m.confidence for m in suggest(headers, ds).values() if m is not None}
    score = round(sum(matched.values()) / len(fields), 2) if fields else 0.0
    missing = [f.name for f in fields if f.required and f.name not in matched]
    reason = f"{len(matched)} of {len(fields)} fields matched"
    reason += f"; no {', '.join(missing)}" if missing else ", every required one"
    return score, reason


def unmapped_required(mapping: Mapping, ds: Dataset) -> list[str]:
    mapped = {m.field for m in mapping.values() if m is not None}
    return [f.name for f in ds.importable if f.required and f.name not in mapped]


def mapping_document(mapping: Mapping) -> dict[str, Any]:
    return {h: (m.document() if m is not None else None) for h, m in mapping.items()}


def mapping_choices(mapping: Mapping) -> dict[str, str | None]:
    """The plain ``{column: field or null}`` form (what is remembered)."""
    return {h: (m.field if m is not None else None) for h, m in mapping.items()}


def document_choices(document: dict[str, Any] | None) -> dict[str, str | None]:
    """``mapping_choices`` of a mapping as stored in an import's result."""
    return {h: (m["field"] if isinstance(m, dict) else None) for h, m in (document or {}).items()}


def from_document(document: dict[str, Any] | None) -> Mapping:
    """A mapping as stored in an import's result (``mapping_document``), read back."""
    return {
        h: Match(m["field"], m["confidence"], m["reason"], m.get("unit"))
        if isinstance(m, dict)
        else None
        for h, m in (document or {}).items()
    }


def in_file_order(document: dict[str, Any]) -> dict[str, Any]:
    """An import document with ``mapping`` and each preview row's ``values`` in the file's
    column order (fields no column feeds last): the document is kept as JSONB, which
    orders object keys its own way; ``source.headers``, a list, keeps the file's order."""
    mapping = document.get("mapping")
    if not isinstance(mapping, dict):
        return document
    headers = (document.get("source") or {}).get("headers") or []
    column = {h: i for i, h in enumerate(headers)}
    ordered = dict(sorted(mapping.items(), key=lambda item: column.get(item[0], len(column))))
    fields = [m["field"] for m in ordered.values() if isinstance(m, dict)]
    rank = {name: i for i, name in enumerate(fields)}

    def values(row: dict[str, Any]) -> dict[str, Any]:
        items = (row.get("values") or {}).items()
        return dict(sorted(items, key=lambda item: rank.get(item[0], len(rank))))

    preview = [{**row, "values": values(row)} for row in document.get("preview") or ()]
    return {**document, "mapping": ordered, "preview": preview or document.get("preview")}


# --- mappings remembered per org and header row -------------------------------------------


async def remembered(
    db: Any, org_id: str, dataset: str, headers: list[str]
) -> dict[str, Any] | None:
    """The mapping last accepted for these headers in this org, if any."""
    value = await db.fetchval(Q.remembered_mapping, org_id, header_key(dataset, headers))
    return value if isinstance(value, dict) else None


async def remember(
    conn: Any, org_id: str, dataset: str, headers: list[str], choices: dict[str, str | None]
) -> None:
    """Accepted mappings are suggested first next time the same headers come."""
    await conn.execute(
        Q.remember_mapping, org_id, header_key(dataset, headers), dataset, headers, choices
    )
