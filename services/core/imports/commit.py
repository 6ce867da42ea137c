"""Commit a staged import as one batch, in one of three modes, and roll a batch back.

Commit: one transaction inserts the ``import_batches`` row — ``job_id`` is UNIQUE, so
a retried or duplicated commit of the same import stops right there — then the
records. Either all land or none does. The mode decides what a row whose natural key
(``Dataset.natural_key``) names a live record of the account does:

- ``insert`` (the default): it is an error (validation said "already exists");
- ``upsert``: it updates that record — the columns the file maps, the others keep
  their values — after the record's *image* (every column, as it was) is kept in
  ``import_batch_images`` for the rollback;
- ``skip_existing``: it is left out, counted as ``skipped_existing``.

Rollback: the batch row is locked, then every record the batch touched (``SELECT …
FOR UPDATE``): the live records it inserted and the records it updated. Any edited
since the commit (``updated_at`` later than the batch) needs ``confirm``. Then, in
chunks with progress, each updated record gets its image back (``updated_at``
included) and each inserted one is soft-deleted. An edit racing the rollback either
happened before (and is reported) or waits and then finds the record rolled back.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Literal

import asyncpg

from services.core.datasets import Dataset
from services.core.datasets.sql import ident, table
from services.core.db.pool import Connection, Pool
from services.core.db.queries import Q
from services.core.errors import Conflict
from services.core.imports import staging
from services.core.jobs import Job

Mode = Literal["insert", "upsert", "skip_existing"]
MODES: tuple[Mode, ...] = ("insert", "upsert", "skip_existing")
EDITED_SHOWN = 100
ROLLBACK_CHUNK = 10_000
# A commit's COPY: how long to wait for a second connection, and blocks held between.
READER_WAIT = 1.0
COPY_BUFFER = 8 * 1024 * 1024  # bytes: most of one part of a 1M-row commit (see _parts)
# (records done, records in all) as a rollback goes.
RollbackProgress = Callable[[int, int], Awaitable[None]]


def batch_document(row: Any) -> dict[str, Any]:
    updated = row["updated_count"]
    return {
        "id": str(row["id"]),
        "mode": row["mode"],
        "rows": row["row_count"],
        "inserted": row["row_count"] - updated,
        "updated": updated,
        "skipped_existing": row["skipped_existing_count"],
        "skipped": row["skipped_count"],
        "created_at": row["created_at"].isoformat(),
        "rollback_until": row["rollback_until"].isoformat(),
        "rolled_back_at": row["rolled_back_at"].isoformat() if row["rolled_back_at"] else None,
    }


def mode_totals(result: dict[str, Any], mode: str) -> dict[str, int]:
    """``valid`` and ``invalid`` rows of a validated import under a commit mode: in
    ``upsert`` and ``skip_existing`` a row whose only fault is an existing key is valid."""
    totals = result.get("totals") or {}
    existing = result.get("existing", 0) if mode != "insert" else 0
    return {
        "rows": totals.get("rows", 0),
        "valid": totals.get("valid", 0) + existing,
        "invalid": totals.get("invalid", 0) - existing,
    }


def check_committable(
    job: Job, *, on_error: str, mode: str = "insert", report: str | None = None
) -> None:
    """Refuse (409) to commit a validated import that is not ready: the api answers
    with it, and the worker checks again before it writes anything."""
    result = job.result or {}
    totals = result.get("totals") or {}
    counts = mode_totals(result, mode)
    if result.get("unmapped_required"):
        missing = ", ".join(result["unmapped_required"])
        raise Conflict(
            f"required fields are not mapped: {missing}; map a column to each with "
            f"PUT /v1/imports/{job.id}/mapping",
            unmapped_required=result["unmapped_required"],
        )
    if not counts["valid"]:
        raise Conflict(
            "no row of this file is valid; fix the file and upload it again",
            totals=totals,
            error_report=report,
        )
    if counts["invalid"] and on_error != "skip":
        raise Conflict(
            f"{counts['invalid']} of {counts['rows']} rows are invalid, so nothing was "
            'committed; fix them (see error_report) or send {"on_error": "skip"} to commit '
            f"the {counts['valid']} valid rows only",
            totals=totals,
            error_report=report,
        )


async def find_batch(conn: Any, job_id: uuid.UUID) -> Any:
    return await conn.fetchrow(Q.find_batch, job_id)


def time_ordered_id() -> uuid.UUID:
    """A UUIDv7 (RFC 9562): milliseconds since the epoch, then random bits. Batches
    made one after the other sort one after the other, as their records lie on disk
    (the BRIN index of migration 0055 finds a batch's records by that)."""
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # the RFC's variant
    return uuid.UUID(int=value)


async def insert_batch(
    conn: Connection,
    ds: Dataset,
    job: Job,
    *,
    window: timedelta,
    skipped: int,
    mode: Mode = "insert",
) -> Any | None:
    """The batch row of this import, or None when the import was committed already."""
    try:
        return await conn.fetchrow(
            Q.insert_batch,
            time_ordered_id(),
            job.id,
            job.org_id,
            job.params["account_id"],
            job.user_id,
            ds.name,
            job.params.get("filename", ""),
            skipped,
            window,
            mode,
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "import_batches_job_id_key":
            return None
        raise


def _added_meanwhile(exc: asyncpg.UniqueViolationError) -> Conflict:
    return Conflict(
        "a record with the same key was added to this account after the file was "
        f"validated ({exc.detail or exc}); nothing was imported — upload the file again",
    )


class _Sql:
    """The SQL of one commit: the dataset's table, the import's staging table, the key."""

    def __init__(self, ds: Dataset, job: Job) -> None:
        self.ds = ds
        self.table = table(ds)
        self.stage = staging.staging_name(job.id)
        self.columns = staging.staged_columns(ds)
        self.target_columns = [ds.org_column, ds.scope_column, ds.batch_column, *self.columns]
        self.target = ", ".join(ident(c) for c in self.target_columns)
        self.values = ", ".join(ident(c) for c in self.columns)
        # In the dataset's export order: the export index then grows at its right edge
        # instead of taking random inserts (about 10% faster), and the rows lie in it.
        self.order_columns = [c for c in ds.order_by if c in self.columns]
        self.order = ", ".join([ident(c) for c in self.order_columns] or ["line"])
        key = ident(ds.field(ds.natural_key).column) if ds.natural_key else ""
        self.match = (
            f"r.{ident(ds.org_column)} = $1 AND r.{ident(ds.scope_column)} = $2 "
            f"AND r.{key} = s.{key} AND r.{ident(ds.soft_delete_column)} IS NULL"
        )

    def usable(self, message: int) -> str:
        """Rows that commit: valid, or whose only fault is their existing key (the
        message in parameter ``$message``)."""
        return f"(s.errors IS NULL OR (s.existing_id IS NOT NULL AND s.errors = ${message}))"


async def insert_records(
    conn: Connection, ds: Dataset, job: Job, batch_id: uuid.UUID, pool: Pool | None = None
) -> int:
    """Every valid staged row of ``job`` into the dataset's table, tagged with the batch.

    With a ``pool`` that has a connection free, the rows go by COPY (see ``_copy_records``).
    """
    sql = _Sql(ds, job)
    if pool is not None:
        try:
            copied = await _copy_records(conn, pool, sql, job, batch_id)
        except asyncpg.UniqueViolationError as exc:
            raise _added_meanwhile(exc) from None
        if copied is not None:
            return copied
    await conn.execute("SET LOCAL work_mem = '256MB'")
    try:
        status = await conn.execute(
            f"INSERT INTO {sql.table} ({sql.target}) SELECT $1, $2, $3, {sql.values} "
            f"FROM {sql.stage} WHERE errors IS NULL ORDER BY {sql.order}",
            job.org_id,
            job.params["account_id"],
            batch_id,
        )
    except asyncpg.UniqueViolationError as exc:
        raise _added_meanwhile(exc) from None
    return int(status.split()[-1])


async def _copy_records(
    conn: Connection, pool: Pool, sql: _Sql, job: Job, batch_id: uuid.UUID
) -> int | None:
    """The valid staged rows by COPY: read (binary, sorted) on a second connection and
    written by ``COPY … FROM STDIN`` in the commit's transaction; None when no second
    connection is free at once (the caller inserts with INSERT … SELECT then).

    PostgreSQL writes a COPY's rows a page at a time (one WAL record a page, not one a
    row as INSERT … SELECT does): about 8% less time for a 1M-row commit. The staging
    table is not written after validation, so reading it outside the transaction
    sees what the transaction would. At most ``COPY_BUFFER`` bytes wait in between.
    """
    try:
        reader = await pool.acquire(timeout=READER_WAIT)
    except TimeoutError:
        return None
    try:
        blocks = _Buffer(COPY_BUFFER)

        async def read() -> None:
            async with reader.transaction(readonly=True):
                await reader.execute("SET LOCAL work_mem = '256MB'")
                parts = await _parts(reader, sql)
                for index, where in enumerate(parts):
                    stitch = _Stitch(blocks, first=index == 0, last=index == len(parts) - 1)
                    await reader.copy_from_query(
                        f"SELECT $1::text, $2::text, $3::uuid, {sql.values} FROM {sql.stage} "
                        f"WHERE errors IS NULL {where} ORDER BY {sql.order}",
                        job.org_id,
                        job.params["account_id"],
                        batch_id,
                        output=stitch.put,
                        format="binary",
                    )
                    stitch.end()
            await blocks.put(None)

        reading = asyncio.ensure_future(read())
        try:
            status = await conn.copy_to_table(
                sql.ds.table,
                source=_blocks(blocks, reading),
                columns=sql.target_columns,
                format="binary",
            )
            await reading
        finally:
            if not reading.done():
                reading.cancel()
                with contextlib.suppress(BaseException):
                    await reading
        return int(status.split()[-1])
    finally:
        await pool.release(reader)


COPY_PARTS = 8
_BINARY_HEADER = 19  # PGCOPY signature, flags, header extension length (0)
_BINARY_TRAILER = b"\xff\xff"


async def _parts(reader: Connection, sql: _Sql) -> list[str]:
    """The staged rows in ``COPY_PARTS`` ranges of the first order column, when it is a
    date: PostgreSQL sorts a range while the rows of the one before are written, not
    all of them before the first is (about 1.3 s for 1M rows). One part otherwise."""
    column = sql.order_columns[0] if sql.order_columns else None
    fields = {f.column: f for f in sql.ds.importable}
    if column is None or column not in fields or fields[column].type != "date":
        return [""]
    span = await reader.fetchrow(
        f"SELECT min({ident(column)}), max({ident(column)}) FROM {sql.stage} WHERE errors IS NULL"
    )
    assert span is not None
    low, high = span[0], span[1]
    if low is None:
        return [""]
    step = max(1, -(-((high - low).days + 1) // COPY_PARTS))
    bounds = [low + timedelta(days=step * i) for i in range(1, COPY_PARTS)]
    bounds = [b for b in bounds if b <= high]
    name = ident(column)
    edges = [None, *(f"'{b.isoformat()}'" for b in bounds), None]
    parts = [
        " ".join(
            ["AND", f"{name} >= {a}" if a else f"{name} IS NOT NULL"]
            + ([f"AND {name} < {b}"] if b else [])
        )
        for a, b in itertools.pairwise(edges)
    ]
    if not fields[column].required:
        parts.append(f"AND {name} IS NULL")  # ascending order puts them last
    return parts


class _Stitch:
    """One query's binary COPY stream as a part of one: the header only in the first
    part, the trailer only in the last."""

    def __init__(self, blocks: _Buffer, *, first: bool, last: bool) -> None:
        self.blocks = blocks
        self.skip = 0 if first else _BINARY_HEADER
        self.last = last
        self.held = b""

    async def put(self, data: bytes) -> None:
        data = bytes(data)
        if self.skip:
            cut = min(self.skip, len(data))
            data, self.skip = data[cut:], self.skip - cut
        if not self.last:  # hold back what may be the trailer
            data = self.held + data
            data, self.held = data[: len(data) - 2], data[len(data) - 2 :]
        if data:
            await self.blocks.put(data)

    def end(self) -> None:
        if not self.last and self.held != _BINARY_TRAILER:
            raise RuntimeError("a binary COPY part did not end with its trailer")


class _Buffer:
    """Blocks between the reading and the writing connection, up to ``limit`` bytes: the
    reader runs ahead (sorting the next part) while the writer works."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.room = asyncio.Event()

    async def put(self, data: bytes | None) -> None:
        while data is not None and self.size >= self.limit:
            self.room.clear()
            await self.room.wait()
        self.size += len(data or b"")
        self.queue.put_nowait(data)

    async def get(self) -> bytes | None:
        data = await self.queue.get()
        self.size -= len(data or b"")
        self.room.set()
        return data


async def _blocks(blocks: _Buffer, reading: asyncio.Future[None]) -> AsyncIterator[bytes]:
    """The blocks the reader queues, until its end; its error, if it fails."""
    while True:
        getting = asyncio.ensure_future(blocks.get())
        either: set[asyncio.Future[Any]] = {getting, reading}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not getting.done() and reading.done() and reading.exception() is not None:
            getting.cancel()
            reading.result()  # raises the reader's error
        block = await getting
        if block is None:
            return
        yield block


async def write_records(
    conn: Connection,
    ds: Dataset,
    job: Job,
    batch_id: uuid.UUID,
    *,
    mode: Mode,
    fields: list[str],
    pool: Pool | None = None,
) -> tuple[int, int, int]:
    """The records of a commit in ``mode``: ``(inserted, updated, skipped_existing)``.

    ``fields`` are the fields the file maps: what an upsert updates. ``pool``: where an
    insert may take a second connection to copy the rows (``_copy_records``).
    """
    if mode == "insert":
        return await insert_records(conn, ds, job, batch_id, pool), 0, 0
    sql = _Sql(ds, job)
    org, account, message = job.org_id, job.params["account_id"], [staging.exists_message(ds)]
    await conn.execute("SET LOCAL work_mem = '256MB'")
    updated = usable = 0
    if mode == "upsert":
        updated = await _update_existing(conn, sql, (org, account, message, batch_id), fields)
    else:
        found = await conn.fetchval(
            f"SELECT count(*) FROM {sql.stage} s WHERE {sql.usable(1)}", message
        )
        usable = int(found)
    try:
        status = await conn.execute(
            f"INSERT INTO {sql.table} ({sql.target}) SELECT $1, $2, $3, {sql.values} "
            f"FROM {sql.stage} s WHERE {sql.usable(4)} AND NOT EXISTS "
            f"(SELECT 1 FROM {sql.table} r WHERE {sql.match}) ORDER BY {sql.order}",
            org,
            account,
            batch_id,
            message,
        )
    except asyncpg.UniqueViolationError as exc:
        raise _added_meanwhile(exc) from None
    inserted = int(status.split()[-1])
    skipped = usable - inserted if mode == "skip_existing" else 0
    return inserted, updated, skipped


async def _update_existing(
    conn: Connection, sql: _Sql, args: tuple[str, str, list[str], uuid.UUID], fields: list[str]
) -> int:
    """Keep the image of each live record the file names, locked; then update it."""
    ds = sql.ds
    org, account, message, batch_id = args
    await conn.execute(
        f"INSERT INTO import_batch_images (batch_id, record_key, image) "
        f"SELECT $4, r.{ident(ds.primary_key)}::text, to_jsonb(r) "
        f"FROM {sql.table} r JOIN {sql.stage} s ON {sql.match} WHERE {sql.usable(3)} "
        f"FOR UPDATE OF r",
        org,
        account,
        message,
        batch_id,
    )
    columns = [ds.field(name).column for name in fields if name != ds.natural_key]
    if not columns:
        return int(await conn.fetchval(Q.count_images, batch_id))
    assignments = ", ".join(f"{ident(c)} = s.{ident(c)}" for c in columns)
    status = await conn.execute(
        f"UPDATE {sql.table} r SET {assignments} FROM {sql.stage} s "
        f"WHERE {sql.match} AND {sql.usable(3)}",
        org,
        account,
        message,
    )
    return int(status.split()[-1])


# --- rollback -----------------------------------------------------------------------------


class _Touched:
    """The SQL naming the records a batch touched: inserted (live) and updated (imaged)."""

    def __init__(self, ds: Dataset) -> None:
        self.table = table(ds)
        self.key = ident(ds.primary_key)
        self.deleted = ident(ds.soft_delete_column)
        self.inserted = f"{ident(ds.batch_column)} = $1 AND {self.deleted} IS NULL"
        self.image_keys = (
            f"SELECT (jsonb_populate_record(NULL::{self.table}, image)).{self.key} "
            "FROM import_batch_images WHERE batch_id = $1"
        )
        self.sources = (self.inserted, f"{self.key} IN ({self.image_keys})")


def _window_closed(batch: Any) -> Conflict:
    until: datetime = batch["rollback_until"]
    return Conflict(
        f"the rollback window of this import closed at {until.isoformat()}; "
        "its records can only be changed one by one now",
        rollback_until=until.isoformat(),
    )


async def check_rollback(
    conn: Connection, ds: Dataset, job: Job, *, confirm: bool, lock: bool = False
) -> tuple[Any, int]:
    """The batch and how many records its rollback touches; Conflict when there is no
    batch, its window closed, or records were edited since the commit and ``confirm`` is
    false. With ``lock`` (inside the rollback's transaction) the batch and every record
    it touched are locked, so the answer holds until the rollback is done.
    """
    batch = await conn.fetchrow(Q.lock_batch if lock else Q.batch_state, job.id)
    if batch is None:
        raise Conflict("this import has no committed batch to roll back")
    if batch["rolled_back_at"] is not None:
        return batch, 0
    if batch["closed"]:
        raise _window_closed(batch)
    sql = _Touched(ds)
    touched, edited, ids = 0, 0, list[Any]()
    for where in sql.sources:  # two statements: FOR UPDATE takes no OR of two indexes
        found = await conn.fetchrow(
            f"SELECT count(*) AS touched, count(*) FILTER (WHERE edited) AS edited, "
            f"(array_agg(id ORDER BY id) FILTER (WHERE edited))[1:{EDITED_SHOWN}] AS ids "
            f"FROM (SELECT {sql.key} AS id, updated_at > $2 AS edited FROM {sql.table} "
            f"WHERE {where} {'FOR UPDATE' if lock else ''}) touched",
            batch["id"],
            batch["created_at"],
        )
        assert found is not None
        touched += found["touched"]
        edited += found["edited"]
        ids += found["ids"] or []
    if edited and not confirm:
        raise Conflict(
            f"{edited} record(s) of this import were edited since it was committed; "
            'send {"confirm": true} to roll back anyway (the edits are lost)',
            edited_count=edited,
            records=sorted(ids)[:EDITED_SHOWN],
            requires_confirmation=True,
        )
    return batch, touched


async def rollback(
    conn: Connection,
    ds: Dataset,
    job: Job,
    *,
    confirm: bool,
    progress: RollbackProgress | None = None,
) -> tuple[Any, int, bool]:
    """Undo the batch: images back, inserted records soft-deleted; ``(batch, rows,
    already_rolled_back)``. Runs inside the caller's transaction (see the module doc)."""
    batch, total = await check_rollback(conn, ds, job, confirm=confirm, lock=True)
    if batch["rolled_back_at"] is not None:
        return batch, 0, True
    sql = _Touched(ds)
    columns = [
        r["column_name"]
        for r in await conn.fetch(Q.table_columns, ds.table)
        if r["column_name"] != ds.primary_key
    ]
    restore = ", ".join(f"{ident(c)} = i.{ident(c)}" for c in columns)
    steps = (
        # An updated record gets every column back, updated_at included (see 0031).
        (
            "SELECT record_key FROM import_batch_images WHERE batch_id = $1 ORDER BY record_key",
            f"UPDATE {sql.table} r SET {restore} FROM ("
            f"SELECT (jsonb_populate_record(NULL::{sql.table}, image)).* "
            f"FROM import_batch_images WHERE batch_id = $1 AND record_key = ANY($2::text[])) i "
            f"WHERE r.{sql.key} = i.{sql.key}",
        ),
        (
            f"SELECT {sql.key} FROM {sql.table} WHERE {sql.inserted} ORDER BY {sql.key}",
            f"UPDATE {sql.table} SET {sql.deleted} = now() "
            f"WHERE {sql.key} = ANY($2) AND {ident(ds.batch_column)} = $1",
        ),
    )
    done = 0
    for select, update in steps:
        cursor = await conn.cursor(select, batch["id"])
        while keys := [r[0] for r in await cursor.fetch(ROLLBACK_CHUNK)]:
            await conn.execute(update, batch["id"], keys)
            done += len(keys)
            if progress is not None:
                await progress(done, total)
    batch = await conn.fetchrow(Q.mark_batch_rolled_back, batch["id"])
    return batch, done, False
