"""The wire types: what Ferry's api sends and takes, as msgspec Structs.

Kept by hand beside the server's OpenAPI document (``/schema/openapi.json``); a test
of the server checks them against it. Decoding is lenient: a field the server adds
is ignored, so an older client keeps working; a field it renames fails loudly.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

Kind = Literal["export", "import"]


class Progress(msgspec.Struct, kw_only=True):
    """Work done so far, out of ``total`` (None while unknown), in ``unit``.

    Exports count rows. An import's validation counts bytes of a CSV file or rows of
    a sheet (``unit``), with the records read so far in ``rows``.
    """

    done: int = 0
    total: int | None = None
    unit: str = "rows"
    rows: int | None = None


class Links(msgspec.Struct, kw_only=True):
    self_: str | None = msgspec.field(default=None, name="self")
    events: str | None = None
    download: str | None = None
    error_report: str | None = None


class Job(msgspec.Struct, kw_only=True):
    """A job, as every job route returns it (DESIGN.md, Resource shapes)."""

    id: str
    kind: Kind
    dataset: str
    status: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    queue_position: int | None = None
    cancel_requested: bool = False
    progress: Progress | None = None
    params: dict[str, Any] = {}
    error: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    links: Links = msgspec.field(default_factory=Links)


class ExportResult(msgspec.Struct, kw_only=True):
    """A succeeded export's file."""

    rows: int
    bytes: int
    sha256: str
    filename: str
    expires_at: datetime | None = None


class ExportRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The body of ``POST /v1/exports``."""

    dataset: str
    format: str
    columns: list[str] | None = None
    preset: str | None = None
    filters: dict[str, Any] = {}
    account_id: str | None = None
    compression: Literal["gzip"] | None = None
    escape_formulas: bool = True


class SheetEntry(msgspec.Struct, kw_only=True):
    """One sheet of a workbook, and how well its headers match the dataset (``score``
    0-1; None for a sheet that cannot be read, ``reason`` says why)."""

    name: str
    score: float | None = None
    reason: str = ""
    range: str | None = None
    rows: int = 0
    hidden: bool = False
    chosen: bool = False


class Source(msgspec.Struct, kw_only=True):
    """What Ferry understood of an uploaded file; a workbook lists its ``sheets``."""

    filename: str | None = None
    bytes: int | None = None
    kind: str | None = None
    encoding: str | None = None
    encoding_reason: str | None = None
    delimiter: str | None = None
    sheet: str | None = None
    sheet_reason: str | None = None
    sheets: list[SheetEntry] = []
    header_line: int | None = None
    headers: list[str] = []


class MappingEntry(msgspec.Struct, kw_only=True):
    """The field a source column feeds, how sure Ferry is, and why."""

    field: str
    confidence: float
    reason: str
    unit: str | None = None


class Totals(msgspec.Struct, kw_only=True):
    rows: int = 0
    valid: int = 0
    invalid: int = 0
    skipped_lines: int = 0


class PreviewRow(msgspec.Struct, kw_only=True):
    line: int
    values: dict[str, Any]
    errors: dict[str, Any] = {}


class RowError(msgspec.Struct, kw_only=True):
    """An invalid value, at the line a person sees when opening the file."""

    line: int
    field: str | None = None
    message: str
    value: Any = None


CommitMode = Literal["insert", "upsert", "skip_existing"]


class Batch(msgspec.Struct, kw_only=True):
    """The rows a commit wrote, and until when they can be rolled back.

    ``rows`` = ``inserted`` + ``updated``; ``skipped`` invalid rows were left out, and
    ``skipped_existing`` rows whose key named a live record (``skip_existing`` mode).
    """

    id: str
    rows: int
    rollback_until: datetime | None = None
    rolled_back_at: datetime | None = None
    skipped: int | None = None
    mode: CommitMode = "insert"
    inserted: int | None = None
    updated: int = 0
    skipped_existing: int = 0


class ModeTotals(msgspec.Struct, kw_only=True):
    valid: int
    invalid: int


class Modes(msgspec.Struct, kw_only=True):
    """What a commit in each mode would count as valid and invalid."""

    insert: ModeTotals
    upsert: ModeTotals
    skip_existing: ModeTotals


class UploadTicket(msgspec.Struct, kw_only=True):
    """``POST /v1/uploads``: where to PUT a file (straight to storage), and how."""

    id: str
    method: str = "PUT"
    url: str
    headers: dict[str, str] = {}
    expires_at: datetime | None = None
    bytes: int
    storage: str = "s3"


class Import(Job, kw_only=True):
    """An import job plus what Ferry understood of the file (``GET /v1/imports/{id}``).

    ``mapping`` and ``preview`` values are in the file's column order.
    """

    account_id: str | None = None
    source: Source = msgspec.field(default_factory=Source)
    mapping: dict[str, MappingEntry | None] | None = None
    unmapped_required: list[str] | None = None
    formats: dict[str, Any] | None = None
    totals: Totals | None = None
    skipped: dict[str, Any] | None = None
    preview: list[PreviewRow] | None = None
    errors: list[RowError] | None = None
    batch: Batch | None = None
    existing: int | None = None
    modes: Modes | None = None


class JobPage(msgspec.Struct, kw_only=True):
    """One page of ``GET /v1/jobs``: pass ``next_cursor`` back for the next."""

    items: list[Job]
    next_cursor: str | None = None


class Field(msgspec.Struct, kw_only=True):
    name: str
    label: str
    type: str
    required: bool = False
    computed: bool = False
    importable: bool = True
    aliases: list[str] = []
    description: str | None = None


class Dataset(msgspec.Struct, kw_only=True):
    name: str
    label: str
    description: str | None = None
    permissions: dict[str, bool] = {}
    fields: list[Field] = []
    presets: dict[str, list[str]] = {}
