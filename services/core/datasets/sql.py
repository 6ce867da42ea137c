"""Dataset SQL, built in one place from the registry: quoted identifiers, bound parameters.

Nothing here interpolates a value a caller sent; identifiers come from the dataset
files (checked against the live schema at start-up) and are quoted anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from services.core.datasets.registry import Dataset, Field


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def table(ds: Dataset) -> str:
    return ident(ds.table)


# --- exports ------------------------------------------------------------------------

# Text cells a spreadsheet would run as a formula (or that hide one behind a
# control character) get a leading apostrophe, in every export format.
_FORMULA_STARTS = "'=', '+', '-', '@', E'\\t', E'\\r'"


def _text(expr: str, *, escape: bool) -> str:
    if not escape:
        return expr
    return f"CASE WHEN left({expr}, 1) IN ({_FORMULA_STARTS}) THEN '''' || {expr} ELSE {expr} END"


def export_expression(f: Field, *, mode: Literal["text", "typed"], escape: bool) -> str:
    """One exported column as SQL.

    ``text`` (CSV through COPY): money becomes a decimal with two places (``12.34``).
    ``typed`` (JSON, XLSX): money becomes a float8 of currency units, which prints as
    ``12.34`` and is a real number in a spreadsheet. Text is neutralised in both.
    """
    expr = f"({f.sql})"
    if f.type == "money":
        return f"{expr} * 0.01" if mode == "text" else f"{expr}::float8 / 100"
    if f.type == "text":
        return _text(expr, escape=escape)
    return expr


def export_where(ds: Dataset, org_id: str, filters: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """The WHERE clause of an export (org, live rows, filters) and its bound arguments.

    ``filters`` must come from ``services.core.exports.spec.parse_filters``: names are
    checked against the dataset there, values typed here.
    """
    args: list[Any] = [org_id]
    clauses = [f"{ident(ds.org_column)} = $1"]
    if ds.soft_delete_column:
        clauses.append(f"{ident(ds.soft_delete_column)} IS NULL")

    def bind(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    for name, value in filters.items():
        if name == ds.scope_column:
            clauses.append(f"{ident(ds.scope_column)} = {bind(value)}")
            continue
        f, op = filter_field(ds, name)
        expr = f"({f.sql})"
        if op in ("from", "to"):
            clauses.append(f"{expr} {'>=' if op == 'from' else '<='} {bind(typed(f, value))}")
        elif op in ("min", "max"):
            clauses.append(f"{expr} {'>=' if op == 'min' else '<='} {bind(typed(f, value))}")
        elif op == "contains":
            pattern = "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            clauses.append(f"{expr} ILIKE {bind(pattern + '%')}")
        elif f.type == "enum":
            clauses.append(f"{expr} = ANY({bind(list(value))}::text[])")
        else:
            clauses.append(f"{expr} = {bind(typed(f, value))}")
    return " AND ".join(clauses), args


def filter_field(ds: Dataset, name: str) -> tuple[Field, str]:
    """The field and operator a filter name stands for: ``sale_date_from`` → (sale_date, from)."""
    for f in ds.fields:
        if name == f.name:
            return f, "eq"
        stem, _, op = name.rpartition("_")
        if stem == f.name and op in FILTER_OPS.get(f.type, ()):
            return f, op
    raise KeyError(name)


# Filters each field type offers besides equality: `<field>_<op>`.
FILTER_OPS: dict[str, tuple[str, ...]] = {
    "date": ("from", "to"),
    "datetime": ("from", "to"),
    "money": ("min", "max"),
    "int": ("min", "max"),
    "text": ("contains",),
}


def typed(f: Field, value: Any) -> Any:
    """A normalised filter value as the database compares it (money in cents)."""
    if f.type == "date":
        return date.fromisoformat(value)
    if f.type == "datetime":
        return datetime.fromisoformat(value)
    if f.type == "money":
        return int((Decimal(value) * 100).to_integral_value())
    return value


def export_order(ds: Dataset) -> str:
    keys = list(dict.fromkeys([*ds.order_by, ds.primary_key]))
    return ", ".join(ident(k) for k in keys)


def export_query(
    ds: Dataset,
    fields: list[Field],
    org_id: str,
    filters: Mapping[str, Any],
    *,
    mode: Literal["text", "typed"],
    escape: bool = True,
) -> tuple[str, list[Any]]:
    """``SELECT`` of an export: labelled columns, filters, keyset order; and its arguments."""
    columns = ", ".join(
        f"{export_expression(f, mode=mode, escape=escape)} AS {ident(f.label)}" for f in fields
    )
    return export_select(ds, org_id, filters, columns)


def export_select(
    ds: Dataset, org_id: str, filters: Mapping[str, Any], columns: str
) -> tuple[str, list[Any]]:
    """``SELECT columns`` over an export's rows in keyset order (XLSX passes one XML column)."""
    where, args = export_where(ds, org_id, filters)
    sql = f"SELECT {columns} FROM {table(ds)} WHERE {where} ORDER BY {export_order(ds)}"
    return sql, args


def export_sample(
    ds: Dataset, fields: list[Field], org_id: str, filters: Mapping[str, Any], *, rows: int
) -> tuple[str, list[Any]]:
    """The longest text of each column among some ``rows`` of an export, in any order.

    Without ORDER BY the scan stops after ``rows`` rows whatever the plan.
    """
    where, args = export_where(ds, org_id, filters)
    columns = ", ".join(
        f"({export_expression(f, mode='text', escape=True)})::text AS c{i}"
        for i, f in enumerate(fields)
    )
    lengths = ", ".join(f"coalesce(max(length(c{i})), 0)" for i in range(len(fields)))
    sample = f"SELECT {columns} FROM {table(ds)} WHERE {where} LIMIT {int(rows)}"
    return f"SELECT {lengths} FROM ({sample}) AS sample", args


def export_count(
    ds: Dataset, org_id: str, filters: Mapping[str, Any], *, limit: int
) -> tuple[str, list[Any]]:
    """How many rows an export will have, counted up to ``limit`` (enough to say "more than").

    Reading at most ``limit`` rows keeps a refused direct export cheap, and an
    allowed one still gets its exact count.
    """
    where, args = export_where(ds, org_id, filters)
    args.append(limit)
    probe = f"SELECT 1 FROM {table(ds)} WHERE {where} LIMIT ${len(args)}"
    return f"SELECT count(*) FROM ({probe}) AS probe", args


def export_estimate(ds: Dataset, org_id: str, filters: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """The planner's guess of an export's rows: ``EXPLAIN`` only, no row is read."""
    where, args = export_where(ds, org_id, filters)
    return f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {table(ds)} WHERE {where}", args
