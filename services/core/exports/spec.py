"""What an export is asked to produce: format, columns, filters, compression.

Requests (query strings of direct downloads, bodies of ``POST /v1/exports``) are
checked here once and normalised, so a job's ``params`` hold only valid values and
the same request always gives the same ``params`` (idempotency compares them).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import msgspec

from services.core.datasets import Dataset
from services.core.datasets.registry import Field
from services.core.datasets.sql import FILTER_OPS, filter_field
from services.core.errors import InvalidInput

Format = Literal["csv", "json", "ndjson", "xlsx", "parquet"]
Compression = Literal["gzip"]

CONTENT_TYPES: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "parquet": "application/vnd.apache.parquet",
}
# Formats that compress their own content: a .gz around them gains nothing.
COMPRESSED = ("xlsx", "parquet")
GZIP_TYPE = "application/gzip"


class ExportSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A checked export request; ``to_params`` is what a job row keeps."""

    dataset: str
    format: Format
    columns: list[str]
    preset: str | None = None
    filters: dict[str, Any] = {}
    compression: Compression | None = None
    escape_formulas: bool = True

    @property
    def content_type(self) -> str:
        return GZIP_TYPE if self.compression else CONTENT_TYPES[self.format]

    def to_params(self) -> dict[str, Any]:
        params: dict[str, Any] = msgspec.to_builtins(self)
        params.pop("dataset")
        return params

    def request(self) -> dict[str, Any]:
        """The ``POST /v1/exports`` body asking for this export."""
        body = {"dataset": self.dataset, **self.to_params()}
        body.pop("columns" if self.preset else "preset")
        return body

    @classmethod
    def from_params(cls, dataset: str, params: Mapping[str, Any]) -> ExportSpec:
        return msgspec.convert({**params, "dataset": dataset}, cls)

    def filename(self, *, at: datetime) -> str:
        """``bookkeeping_records-main-20260126-101500.csv`` (``.gz`` when compressed)."""
        scope = self.filters.get("account_id")
        parts = [self.dataset, _slug(str(scope)) if scope else "", at.strftime("%Y%m%d-%H%M%S")]
        name = "-".join(p for p in parts if p) + "." + self.format
        return name + ".gz" if self.compression else name


def _slug(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("._")[:60]


def build_spec(
    ds: Dataset,
    *,
    format: str,
    columns: list[str] | None = None,
    preset: str | None = None,
    filters: Mapping[str, Any] | None = None,
    compression: str | None = None,
    escape_formulas: bool = True,
) -> ExportSpec:
    """Check an export request against the dataset; InvalidInput names every bad field."""
    if format not in CONTENT_TYPES:
        raise InvalidInput(
            f"unknown format {format!r}; one of {', '.join(CONTENT_TYPES)}",
            errors=[{"field": "format", "message": f"unknown format {format!r}"}],
        )
    if compression not in (None, "gzip"):
        raise InvalidInput(
            f"unknown compression {compression!r}; only gzip",
            errors=[{"field": "compression", "message": "only gzip is supported"}],
        )
    if compression and format in COMPRESSED:
        raise InvalidInput(
            f"{format} files are compressed already; leave compression out",
            errors=[{"field": "compression", "message": f"not available for {format}"}],
        )
    fields = ds.columns_for(columns=columns, preset=preset)
    return ExportSpec(
        dataset=ds.name,
        format=format,  # type: ignore[arg-type]  # checked above
        columns=[f.name for f in fields],
        preset=None if columns else (preset or "all"),
        filters=parse_filters(ds, filters or {}),
        compression="gzip" if compression else None,
        escape_formulas=escape_formulas,
    )


def filter_names(ds: Dataset) -> list[str]:
    """Every filter a dataset offers, for documentation and error messages."""
    names = [ds.scope_column]
    for f in ds.fields:
        names.append(f.name)
        names += [f"{f.name}_{op}" for op in FILTER_OPS.get(f.type, ())]
    return names


def parse_filters(ds: Dataset, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Normalised filters: dates ISO, money a decimal string, enums a list; sorted by name."""
    out: dict[str, Any] = {}
    errors: list[dict[str, str]] = []
    for name in sorted(raw):
        value = raw[name]
        if value is None or value == "":
            continue
        try:
            if "\x00" in str(value):  # PostgreSQL text cannot hold it
                raise ValueError("holds a NUL character")
            if name == ds.scope_column:
                if not isinstance(value, str):
                    raise ValueError("must be a string")
                out[name] = value
                continue
            try:
                f, op = filter_field(ds, name)
            except KeyError:
                raise ValueError("unknown filter; known: " + ", ".join(filter_names(ds))) from None
            out[name] = _value(f, op, value)
        except ValueError as exc:
            errors.append({"field": name, "message": str(exc)})
    if errors:
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise InvalidInput(f"invalid filter(s): {detail}", errors=errors)
    return out


def _value(f: Field, op: str, value: Any) -> Any:
    """A filter value checked and normalised for the field's type (ValueError says how)."""
    if f.type == "enum" and op == "eq":
        return _enum_values(f, value)
    parse: Callable[[Any], Any] = _PARSERS.get(f.type, _text)
    return parse(value)


def _enum_values(f: Field, value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise ValueError("a list of values (or a comma-separated string)")
    wanted = [v.strip().lower() for v in items if v.strip()]
    unknown = [v for v in wanted if v not in f.values]
    if unknown:
        raise ValueError(f"unknown value(s) {', '.join(unknown)}; one of {', '.join(f.values)}")
    return sorted(set(wanted))


def _date(value: Any) -> str:
    try:
        return date.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise ValueError("a date as YYYY-MM-DD") from None


def _datetime(value: Any) -> str:
    try:
        return datetime.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise ValueError("an ISO 8601 date-time") from None


def _money(value: Any) -> str:
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValueError("an amount such as 12.34") from None
    if not amount.is_finite():
        raise ValueError("an amount such as 12.34")
    return str(amount.quantize(Decimal("0.01")))


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("a whole number")
    try:
        return int(str(value))
    except ValueError:
        raise ValueError("a whole number") from None


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise ValueError("true or false")


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a string")
    return value


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "date": _date,
    "datetime": _datetime,
    "money": _money,
    "int": _int,
    "bool": _bool,
}
