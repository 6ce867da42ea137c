"""The staging table of one import: every record of the file, typed, with its errors.

``import_staging."<job id>"`` is an UNLOGGED copy of the dataset's importable columns
plus ``line`` (as the user sees it), ``errors`` (``"field: message"``) and ``raw`` (the
row's original values joined by U+001F, for the error report: a row found invalid in
SQL — a duplicate, a key already imported — needs them as much as one found invalid
while reading, and keeping them costs far less than reading the file again). Where
the account has no records yet, only the rows that failed or whose key may repeat an
earlier one keep ``raw`` (``validate.KeyHashes``).

Validation fills it with COPY (CSV that Arrow writes column by column); set-wide
checks (duplicates inside the file, keys already in the table) run on it in SQL; the
error report and the preview are read from it; the commit copies its valid rows
into the dataset's table (``commit``). Unlogged, because it can be
rebuilt from the stored upload: a commit that finds it gone (or its row count not
matching the validation) refuses and asks for the file to be validated again.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from datetime import date
from typing import Any

from services.core.datasets import Dataset
from services.core.datasets.sql import ident, table
from services.core.db.pool import Connection, Pool

SCHEMA = "import_staging"
PREVIEW_ROWS = 100
RAW_SEPARATOR = "\x1f"
FIRST_ERRORS = 100

# The error report: failed rows as CSV, to fix and upload again.
REPORT_TYPE = "text/csv; charset=utf-8"


def staging_name(job_id: uuid.UUID | str) -> str:
    return f"{ident(SCHEMA)}.{ident(str(job_id))}"


def staged_columns(ds: Dataset) -> list[str]:
    return [f.column for f in ds.importable]


async def create(conn: Connection | Pool, ds: Dataset, job_id: uuid.UUID) -> None:
    """A fresh staging table (an older one of this import is dropped)."""
    columns = ", ".join(ident(c) for c in staged_columns(ds))
    name = staging_name(job_id)
    await conn.execute(f"DROP TABLE IF EXISTS {name}")
    # existing_id: the live record with the row's natural key, if any (an upsert updates it).
    await conn.execute(
        f"CREATE UNLOGGED TABLE {name} AS SELECT 0::integer AS line, {columns}, "
        f"NULL::text[] AS errors, NULL::text AS raw, {ident(ds.primary_key)} AS existing_id "
        f"FROM {table(ds)} WITH NO DATA"
    )


def exists_message(ds: Dataset) -> str:
    """The error of a row whose natural key names a live record of the account."""
    return f"{ds.natural_key}: already exists for this account"


async def drop(conn: Connection | Pool, job_id: uuid.UUID | str) -> None:
    await conn.execute(f"DROP TABLE IF EXISTS {staging_name(job_id)}")


async def exists(conn: Connection | Pool, job_id: uuid.UUID | str) -> bool:
    found = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", staging_name(job_id))
    return bool(found)


async def copy_rows(
    conn: Connection, ds: Dataset, job_id: uuid.UUID, records: Iterable[tuple[Any, ...]]
) -> None:
    """Binary COPY of checked rows: ``(line, *field values, errors, raw)``."""
    await conn.copy_records_to_table(
        str(job_id),
        schema_name=SCHEMA,
        records=records,
        columns=["line", *staged_columns(ds), "errors", "raw"],
    )


async def copy_csv(conn: Connection, ds: Dataset, job_id: uuid.UUID, payload: bytes) -> None:
    """COPY of checked rows already written as CSV (``validate.Rows.payload``)."""

    async def source() -> AsyncIterator[bytes]:
        yield payload

    await conn.copy_to_table(
        str(job_id),
        schema_name=SCHEMA,
        source=source(),
        columns=["line", *staged_columns(ds), "errors", "raw"],
        format="csv",
    )


async def account_has_records(
    conn: Connection | Pool, ds: Dataset, org_id: str, scope: str
) -> bool:
    """Whether the account has a live record (then a row's key may exist already)."""
    live = f"AND {ident(ds.soft_delete_column)} IS NULL" if ds.soft_delete_column else ""
    found = await conn.fetchval(
        f"SELECT EXISTS (SELECT 1 FROM {table(ds)} WHERE {ident(ds.org_column)} = $1 "
        f"AND {ident(ds.scope_column)} = $2 {live})",
        org_id,
        scope,
    )
    return bool(found)


async def check_keys(
    conn: Connection,
    ds: Dataset,
    job_id: uuid.UUID,
    *,
    org_id: str,
    scope: str,
    kept_only: bool = False,
) -> int:
    """Mark rows whose natural key repeats an earlier line, or exists already; returns how
    many of them kept no original text (``kept_only``: then the file is read again).

    The first occurrence of a repeated key stays valid; each later one names it
    (``ebay_order_id: duplicate of line 25``). A row whose key exists gets the record's
    id in ``existing_id`` and an error only an insert commit minds (``exists_message``).
    One statement, hash aggregates only. ``kept_only``: a key can repeat only where a
    row kept its original text (``validate.KeyHashes``), so only those keys are counted.
    """
    if not ds.natural_key:
        return 0
    key_field = ds.field(ds.natural_key)
    key = ident(key_field.column)
    name = staging_name(job_id)
    kept = f"AND {key} IN (SELECT {key} FROM {name} WHERE raw IS NOT NULL)" if kept_only else ""
    live = f"AND r.{ident(ds.soft_delete_column)} IS NULL" if ds.soft_delete_column else ""
    existing_sql = (
        f"SELECT s.line, $3::text, r.{ident(ds.primary_key)} FROM {name} s "
        f"JOIN {table(ds)} r ON r.{ident(ds.org_column)} = $1 "
        f"AND r.{ident(ds.scope_column)} = $2 AND r.{key} = s.{key} {live}"
    )
    # A fresh staging table has no statistics; without sorting off the planner sorts a
    # million text keys (collation-aware, slow) instead of hashing them.
    await conn.execute("SET LOCAL work_mem = '256MB'")
    await conn.execute("SET LOCAL enable_sort = off")
    textless = await conn.fetchval(
        f"""
        WITH marked AS (
        UPDATE {name} s SET errors = coalesce(s.errors, '{{}}') || m.messages,
            existing_id = m.existing_id
        FROM (
            SELECT line, array_agg(message) AS messages, max(existing_id) AS existing_id FROM (
                SELECT later.line, $4::text || ': duplicate of line ' || repeated.first AS message,
                    NULL AS existing_id
                FROM (
                    SELECT {key} AS key, min(line) AS first FROM {name}
                    WHERE {key} IS NOT NULL {kept} GROUP BY {key} HAVING count(*) > 1
                ) repeated
                JOIN {name} later ON later.{key} = repeated.key AND later.line <> repeated.first
                UNION ALL
                {existing_sql}
            ) found GROUP BY line
        ) m
        WHERE s.line = m.line
        RETURNING s.raw IS NULL AS textless
        )
        SELECT count(*) FILTER (WHERE textless) FROM marked
        """,
        org_id,
        scope,
        exists_message(ds),
        key_field.name,
    )
    return int(textless)


async def totals(conn: Connection | Pool, job_id: uuid.UUID | str) -> tuple[int, int]:
    """``(rows, valid)`` of the staging table."""
    row = await conn.fetchrow(
        f"SELECT count(*) AS rows, count(*) FILTER (WHERE errors IS NULL) AS valid "
        f"FROM {staging_name(job_id)}"
    )
    assert row is not None
    return int(row["rows"]), int(row["valid"])


async def counts(
    conn: Connection | Pool, ds: Dataset, job_id: uuid.UUID | str
) -> tuple[int, int, int]:
    """``(rows, valid, existing)`` in one pass: existing rows are those whose only fault
    is a key that exists (an upsert updates them)."""
    row = await conn.fetchrow(
        f"SELECT count(*) AS rows, count(*) FILTER (WHERE errors IS NULL) AS valid, "
        f"count(*) FILTER (WHERE existing_id IS NOT NULL AND errors = $1) AS existing "
        f"FROM {staging_name(job_id)}",
        [exists_message(ds)],
    )
    assert row is not None
    return int(row["rows"]), int(row["valid"]), int(row["existing"])


async def write_report(
    conn: Connection,
    job_id: uuid.UUID,
    width: int,
    write: Callable[[bytes], Coroutine[Any, Any, None]],
) -> None:
    """The failed rows as CSV (original values, ``_row``, ``_errors``), ordered by line."""
    values = ", ".join(f"r[{i}]" for i in range(1, width + 1))
    await conn.copy_from_query(
        f"SELECT {values}, line, array_to_string(errors, '; ') FROM ("
        f"SELECT line, errors, string_to_array(raw, E'\\x1f') AS r "
        f"FROM {staging_name(job_id)} WHERE errors IS NOT NULL) failed ORDER BY line",
        output=write,
        format="csv",
    )


def _shown(value: Any, field_type: str) -> Any:
    if value is None:
        return None
    if field_type == "money":
        sign = "-" if value < 0 else ""
        cents = abs(int(value))
        return f"{sign}{cents // 100}.{cents % 100:02d}"
    if isinstance(value, date):
        return value.isoformat()
    return value


def split_error(message: str, fields: set[str]) -> tuple[str | None, str]:
    name, sep, rest = message.partition(": ")
    if sep and name in fields:
        return name, rest
    return None, message


async def preview(
    conn: Connection | Pool, ds: Dataset, job_id: uuid.UUID, source_of: dict[str, int]
) -> list[dict[str, Any]]:
    """The first records as mapped: typed values, or the original text where a value failed."""
    rows = await conn.fetch(
        f"SELECT * FROM {staging_name(job_id)} ORDER BY line LIMIT {PREVIEW_ROWS}"
    )
    names = {f.name for f in ds.importable}
    out = []
    for row in rows:
        errors: dict[str, str] = {}
        for message in row["errors"] or ():
            name, text = split_error(message, names)
            key = name or "row"
            errors[key] = f"{errors[key]}; {text}" if key in errors else text
        values: dict[str, Any] = {}
        raw = row["raw"].split(RAW_SEPARATOR) if row["raw"] is not None else None
        for f in ds.importable:
            if f.name in errors and raw is not None and f.name in source_of:
                values[f.name] = raw[source_of[f.name]]
            else:
                values[f.name] = _shown(row[f.column], f.type)
        out.append({"line": row["line"], "values": values, "errors": errors})
    return out


async def first_errors(
    conn: Connection | Pool, ds: Dataset, job_id: uuid.UUID
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT line, errors FROM {staging_name(job_id)} WHERE errors IS NOT NULL "
        f"ORDER BY line LIMIT {FIRST_ERRORS}"
    )
    names = {f.name for f in ds.importable}
    out: list[dict[str, Any]] = []
    for row in rows:
        for message in row["errors"]:
            name, text = split_error(message, names)
            out.append({"line": row["line"], "field": name, "message": text})
            if len(out) >= FIRST_ERRORS:
                return out
    return out
