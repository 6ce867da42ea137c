"""One validation run of an upload: read, map, check, stage, report — the import document.

Parsing and checking run in a thread, a chunk at a time, while the event loop COPYs
the previous chunks into the staging table (on two connections where a second is
free); memory stays at about three chunks. The
result is the import document of DESIGN.md (source, mapping, totals, preview,
errors, skipped lines, inferred formats) that the job keeps as its ``result``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.core.datasets import Dataset
from services.core.deps import Deps
from services.core.errors import InvalidInput
from services.core.imports import mapping as mappings
from services.core.imports import readers, staging
from services.core.imports.readers import Chunk, Layout, Limits, Skips, Workbook
from services.core.imports.validate import Reread, Validator
from services.core.jobs import Job
from services.core.settings import Settings
from services.core.storage import keys

log = logging.getLogger(__name__)

# Two chunks are in memory at once (one copied, one read); 15,000 rows keep a worker
# under 250 MiB at any file size (25,000 cost 265 MiB for a few percent of speed).
CHUNK_ROWS = 15_000
# Smaller for a workbook: its reader process converts the next chunk while this one is
# checked, and the first chunk waits for the whole sheet to be parsed.
WORKBOOK_CHUNK_ROWS = 10_000
# Chunks are copied on two connections at once where a second is free this soon (s):
# PostgreSQL's side of the COPY, on a core of its own each, kept pace with neither.
SECOND_WAIT = 0.2

# (done, total, records so far, unit of done/total: "bytes" of a CSV, "rows" of a sheet)
Progress = Callable[[int, int | None, int, str], Awaitable[None]]


def limits(settings: Settings) -> Limits:
    memory = settings.import_sheet_memory_bytes
    return Limits(
        max_columns=settings.import_max_columns,
        max_rows=settings.import_max_rows,
        max_unpacked_bytes=settings.import_max_unpacked_bytes,
        memory_bytes=memory,
        max_cells=readers.cell_budget(
            settings.import_max_rows, settings.import_max_columns, memory
        ),
    )


@dataclass
class Source:
    """The upload on local disk, its layout and a way to read its records again."""

    path: Path
    layout: Layout
    limits: Limits
    book: Workbook | None = None
    careful: bool = False  # set once the fast CSV reader met a row it could not read
    plain: bool = True  # cleared once the Arrow reader found the file not plain enough

    def chunks(self, skips: Skips) -> Iterator[Chunk]:
        if self.book is not None:
            return readers.read_workbook(
                self.book, self.layout, skips, chunk_rows=WORKBOOK_CHUNK_ROWS
            )
        if self.plain and not self.careful and readers.arrow_fits(self.layout):
            return readers.read_csv_arrow(
                self.path, self.layout, self.limits, skips, chunk_rows=CHUNK_ROWS
            )
        return readers.read_csv(
            self.path,
            self.layout,
            self.limits,
            skips,
            chunk_rows=CHUNK_ROWS,
            careful=self.careful,
        )

    def close(self) -> None:
        if self.book is not None:
            self.book.close()


def open_source(
    path: Path,
    limits: Limits,
    sheet: str | None,
    score: readers.Score,
    *,
    whole: bool = False,
    scratch: Path | None = None,
) -> Source:
    """Sniff, check and lay out the file (blocking; run in a thread). ``whole`` and
    ``scratch``: see ``readers.Workbook``."""
    with open(path, "rb") as fh:
        head = fh.read(8192)
    kind = readers.sniff_kind(head)
    if kind in readers.WORKBOOKS:
        book = Workbook(path, kind, limits, whole=whole, scratch=scratch)
        try:
            layout = readers.workbook_layout(book, limits, sheet, score)
        except BaseException:
            book.close()
            raise
        return Source(path, layout, limits, book)
    if sheet is not None:
        raise InvalidInput(
            "sheet= only applies to workbooks; this is a CSV file",
            errors=[{"field": "sheet", "message": "not a workbook"}],
        )
    return Source(path, readers.csv_layout(path, limits), limits)


async def local_file(deps: Deps, key: str, workdir: Path) -> tuple[Path, int]:
    """The stored upload as a file on this machine, and its size: read where the local
    folder keeps it (uploads are not changed once stored), else downloaded into
    ``workdir``."""
    stored = deps.storage.local_path(key)
    if stored is not None and stored.is_file():
        return stored, stored.stat().st_size
    path = workdir / "source"
    return path, await download(deps, key, path)


async def download(deps: Deps, key: str, path: Path) -> int:
    """Copy a stored upload to a local file in bounded chunks; returns its size."""
    size = 0
    with open(path, "wb") as fh:  # noqa: ASYNC230 - chunks are written in a thread
        try:
            async for block in deps.storage.read(key):
                size += len(block)
                await asyncio.to_thread(fh.write, block)
        except FileNotFoundError:
            raise InvalidInput(
                "the uploaded file is no longer stored (uploads of abandoned imports are "
                "deleted); upload it again",
                errors=[{"field": "file", "message": "gone"}],
            ) from None
    return size


def current_mapping(
    ds: Dataset, headers: list[str], remembered: dict[str, Any] | None, chosen: Any
) -> mappings.Mapping:
    suggested = mappings.suggest(headers, ds, remembered)
    if isinstance(chosen, dict) and chosen:
        return mappings.apply_choices(suggested, chosen, ds)
    return suggested


class _Checked:
    """The thread side: read chunks and check them, one ``next()`` at a time."""

    def __init__(self, source: Source, validator: Validator, skips: Skips) -> None:
        self._chunks = source.chunks(skips)
        self.validator = validator
        self.names = staging.staged_columns(validator.ds)
        self.position = 0

    def next(self) -> tuple[int, bytes] | None:
        """The next chunk checked: its number of rows and its COPY payload."""
        chunk = next(self._chunks, None)
        if chunk is None:
            return None
        self.position = chunk.position
        rows = self.validator.check(chunk)
        return len(rows.lines), rows.payload(self.names)


async def validate_upload(
    deps: Deps, job: Job, progress: Progress, *, workdir: Path | None = None
) -> dict[str, Any]:
    """Validate the stored upload of ``job`` into its staging table; the import document."""
    ds = deps.registry.get(job.dataset)
    bounds = limits(deps.settings)
    with tempfile.TemporaryDirectory(prefix="ferry-import-", dir=workdir) as tmp:
        path, size = await local_file(deps, keys.import_source(job.org_id, job.id), Path(tmp))
        whole = False
        while True:
            source = await asyncio.to_thread(
                open_source,
                path,
                bounds,
                job.params.get("sheet"),
                lambda headers: mappings.header_score(headers, ds),
                whole=whole,
                scratch=Path(tmp),
            )
            try:
                layout = source.layout
                headers = layout.headers
                remembered = await mappings.remembered(deps.db, job.org_id, job.dataset, headers)
                mapping = current_mapping(ds, headers, remembered, job.params.get("mapping"))
                # Without records in the account no key exists already: only rows that
                # fail or may repeat a key keep their text.
                async with deps.db.acquire() as conn:  # a lost connection fails the attempt
                    keep_raw = await staging.account_has_records(
                        conn, ds, job.org_id, job.params["account_id"]
                    )
                validator, skips = await _stage_all(
                    deps, job, ds, source, mapping, (size, keep_raw), progress
                )
                if not await _check_keys(deps, ds, job, validator):
                    # Another import committed records to the account meanwhile, and rows
                    # naming them kept no text for the error report: read again, keeping it.
                    validator, skips = await _stage_all(
                        deps, job, ds, source, mapping, (size, True), progress
                    )
                    await _check_keys(deps, ds, job, validator)
            except readers.ReadWhole:
                whole = True  # a sheet's parts disagreed with it: open it again, whole
                continue
            finally:
                source.close()
            break
    source_of = {m.field: headers.index(h) for h, m in mapping.items() if m is not None}
    # Three scans of the staged rows, each on a connection of its own.
    (rows, valid, existing), preview, errors = await asyncio.gather(
        staging.counts(deps.db, ds, job.id),
        staging.preview(deps.db, ds, job.id, source_of),
        staging.first_errors(deps.db, ds, job.id),
    )
    if rows == 0:
        raise InvalidInput(
            "the file has a header row but no records",
            errors=[{"field": "file", "message": "no records"}],
        )
    if rows > valid:
        await _write_report(deps, job, headers)
    else:
        await deps.storage.delete(keys.import_report(job.org_id, job.id))
    source_doc = {
        "filename": job.params.get("filename", ""),
        "bytes": size,
        **layout.document(),
    }
    return {
        "source": source_doc,
        # What the dataset says of every account (Ferry keeps no account records).
        "account": {
            "id": job.params["account_id"],
            "currency": ds.currency,
            "time_zone": ds.time_zone,
        },
        "mapping": mappings.mapping_document(mapping),
        "unmapped_required": mappings.unmapped_required(mapping, ds),
        "formats": validator.formats(),
        "totals": {
            "rows": rows,
            "valid": valid,
            "invalid": rows - valid,
            "skipped_lines": skips.count,
        },
        "skipped": skips.document(),
        # Rows whose key names a live record: errors for an insert, updated by an upsert.
        "existing": existing,
        "modes": {
            "insert": {"valid": valid, "invalid": rows - valid},
            "upsert": {"valid": valid + existing, "invalid": rows - valid - existing},
            "skip_existing": {"valid": valid + existing, "invalid": rows - valid - existing},
        },
        "preview": preview,
        "errors": errors,
        "error_report": rows > valid,
    }


async def _check_keys(deps: Deps, ds: Dataset, job: Job, validator: Validator) -> bool:
    """Mark repeated and existing keys; False when a row so marked has no original text."""
    async with deps.db.acquire() as conn, conn.transaction():
        textless = await staging.check_keys(
            conn,
            ds,
            job.id,
            org_id=job.org_id,
            scope=job.params["account_id"],
            kept_only=validator.key is not None,
        )
    return textless == 0


async def _stage_all(
    deps: Deps,
    job: Job,
    ds: Dataset,
    source: Source,
    mapping: mappings.Mapping,
    sizing: tuple[int, bool],
    progress: Progress,
) -> tuple[Validator, Skips]:
    """Read and stage every record, again while a later value changes how to read one.

    ``sizing``: the upload's bytes, and whether every row keeps its original text."""
    size, keep_raw = sizing
    layout = source.layout
    date_orders: dict[str, tuple[str, str]] = {}
    while True:
        skips = Skips()
        validator = Validator(
            ds,
            mapping,
            layout.headers,
            european=layout.delimiter == ";",
            date_orders=date_orders,
            keep_raw=keep_raw,
        )
        try:
            await _stage(deps, job, ds, source, validator, skips, size, progress)
        except Reread as again:
            # A later value decided a column's date order; read the file again with it.
            date_orders[again.field] = (again.order, again.reason)
            continue
        except readers.NotPlain:
            source.plain = False
            continue
        except readers.ReadAgain:
            source.careful = True
            continue
        return validator, skips


async def _stage(
    deps: Deps,
    job: Job,
    ds: Dataset,
    source: Source,
    validator: Validator,
    skips: Skips,
    size: int,
    progress: Progress,
) -> None:
    checked = _Checked(source, validator, skips)
    sheet = source.book is not None
    total = source.layout.rows_end if sheet else size
    done_rows = 0
    await staging.create(deps.db, ds, job.id)
    async with contextlib.AsyncExitStack() as stack:
        conns = [await stack.enter_async_context(deps.db.acquire())]
        with contextlib.suppress(TimeoutError):
            conns.append(await stack.enter_async_context(deps.db.acquire(timeout=SECOND_WAIT)))
        copying: list[asyncio.Future[None] | None] = [None] * len(conns)
        # One thread reads and checks every chunk: each thread the allocators see keeps
        # its own arena of freed memory, and a pool's threads took turns (+60 MiB).
        thread = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="import"))
        loop = asyncio.get_running_loop()
        pending = loop.run_in_executor(thread, checked.next)
        try:
            for turn in itertools.count():
                got = await pending
                if got is None:
                    break
                # Read and check the next chunk while this one is copied.
                pending = loop.run_in_executor(thread, checked.next)
                count, payload = got
                at = turn % len(conns)
                if (previous := copying[at]) is not None:
                    await previous
                copying[at] = asyncio.ensure_future(
                    staging.copy_csv(conns[at], ds, job.id, payload)
                )
                done_rows += count
                unit = "rows" if sheet else "bytes"
                await progress(min(checked.position, total), total, done_rows, unit)
            for task in copying:
                if task is not None:
                    await task
        finally:
            tasks: list[asyncio.Future[Any] | None] = [pending, *copying]
            for task in tasks:
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task


async def _write_report(deps: Deps, job: Job, headers: list[str]) -> None:
    """Failed rows as a CSV to fix and upload again: original columns, ``_row``, ``_errors``."""
    import csv
    import io

    head = io.StringIO()
    csv.writer(head, lineterminator="\n").writerow([*headers, "_row", "_errors"])
    key = keys.import_report(job.org_id, job.id)
    async with (
        deps.storage.writer(key, content_type=staging.REPORT_TYPE) as upload,
        deps.db.acquire() as conn,
    ):
        # A BOM, so that spreadsheet programs open the UTF-8 file with its accents intact.
        await upload.write(b"\xef\xbb\xbf" + head.getvalue().encode())
        await staging.write_report(conn, job.id, len(headers), upload.write)
