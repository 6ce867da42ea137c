"""The api's wire types: every JSON request and response body, one msgspec Struct each.

The OpenAPI document is generated from these Structs and the routes return them, so
the document is what the api sends (DESIGN.md, Resource shapes: fields may be added,
never renamed). A new route declares its bodies here and its problem responses with
``services.api.openapi.problems``.

Optional members that are absent (not null) from a document are ``UNSET``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from services.core.datasets.registry import FieldType
from services.core.exports.spec import Format
from services.core.imports.readers.layout import Kind as FileKind
from services.core.jobs import JobStatus, Kind
from services.core.presets import Preset
from services.core.webhooks.deliveries import WebhookDelivery
from services.core.webhooks.endpoints import EventType

# A date-time as a worker stored it (RFC 3339), passed on unchanged.
Timestamp = Annotated[
    str,
    Meta(extra_json_schema={"description": "RFC 3339", "extra": {"format": "date-time"}}),
]


class Struct(msgspec.Struct, kw_only=True):
    """A response body."""


class Request(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A request body: unknown members are refused (422), not ignored."""


class JobKind(StrEnum):
    EXPORT = "export"
    IMPORT = "import"


class Compression(StrEnum):
    GZIP = "gzip"


class ProgressUnit(StrEnum):
    BYTES = "bytes"
    ROWS = "rows"


# --- problems -------------------------------------------------------------------------------


class FieldError(Struct):
    """What is wrong with one field of a request or a file."""

    field: Annotated[str, Meta(examples=["account_id"])]
    message: Annotated[str, Meta(examples=["required"])]
    source: Annotated[str, Meta(description="query, header, path or body")] | UnsetType = UNSET


class Problem(Struct):
    """An RFC 9457 problem document (`application/problem+json`). Some problems add
    members of their own: a 413 of a direct export its `export_request`, a 409 of a
    commit its `totals` and `error_report`, a rollback its `edited` records."""

    type: Annotated[str, Meta(examples=["urn:ferry:problem:not-found"])]
    title: Annotated[str, Meta(examples=["Not found"])]
    status: Annotated[int, Meta(ge=400, le=599, examples=[404])]
    detail: Annotated[str, Meta(examples=["no such job"])]
    instance: Annotated[str, Meta(description="The path of the request")]
    errors: list[FieldError] | UnsetType = UNSET


# --- jobs -----------------------------------------------------------------------------------


class Progress(Struct):
    """How far a running job got; `unit` says what `done` and `total` count."""

    done: int
    total: int | None = None
    rows: Annotated[int, Meta(description="Records read so far (imports)")] | UnsetType = UNSET
    unit: ProgressUnit | UnsetType = UNSET


class ExportResult(Struct, tag_field="kind", tag="export"):
    """The file a succeeded export wrote; `links.download` serves it."""

    rows: int
    bytes: int
    sha256: str
    filename: Annotated[str, Meta(examples=["bookkeeping_records-main-20260126-101500.csv"])]
    content_type: str
    expires_at: Timestamp


class Totals(Struct):
    """Records of an upload: read, valid, invalid, and lines skipped as no record."""

    rows: int
    valid: int
    invalid: int
    skipped_lines: int


class Batch(Struct):
    """The records one commit inserted, undoable until `rollback_until`."""

    id: uuid.UUID
    rows: int
    skipped: int
    created_at: Timestamp
    rollback_until: Timestamp
    rolled_back_at: Timestamp | None = None
    mode: Literal["insert", "upsert", "skip_existing"] | UnsetType = UNSET
    inserted: int | UnsetType = UNSET
    updated: int | UnsetType = UNSET
    skipped_existing: int | UnsetType = UNSET


class ImportResult(Struct, tag_field="kind", tag="import"):
    """An import's summary; `GET /v1/imports/{id}` has the whole document."""

    totals: Totals | None
    batch: Batch | None


class JobLinks(Struct):
    self_: str = msgspec.field(name="self")
    events: Annotated[
        str,
        Meta(description="SSE of this job, openable without a header (it carries a token)"),
    ]
    download: Annotated[str | None, Meta(description="Set once an export succeeded")] = None
    error_report: (
        Annotated[str | None, Meta(description="An import's failed rows as CSV (import documents)")]
        | UnsetType
    ) = UNSET


class Job(Struct):
    """An export or import job (DESIGN.md, Resource shapes)."""

    id: uuid.UUID
    kind: Kind
    dataset: Annotated[str, Meta(examples=["bookkeeping_records"])]
    status: JobStatus
    queue_position: Annotated[
        int | None, Meta(description="1 for the caller's next job to start; null unless waiting")
    ]
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: Progress | None
    params: Annotated[
        dict[str, Any],
        Meta(description="What was asked: an export's format, columns, filters, …"),
    ]
    error: Annotated[
        dict[str, Any] | None,
        Meta(
            description="Why it failed or stopped: `message`, its `type` and, as the failure "
            "has them, `errors` (fields) or more (e.g. a rollback's `requires_confirmation`)"
        ),
    ]
    result: Annotated[
        ExportResult | ImportResult | None, Meta(description="Its `kind` is the job's")
    ]
    links: JobLinks


class FeedLinks(Struct):
    events: Annotated[
        str, Meta(description="SSE of every job event of the caller, openable without a header")
    ]


class JobPage(Struct):
    """One page of the caller's jobs, newest first."""

    items: list[Job]
    next_cursor: Annotated[str | None, Meta(description="Pass as `cursor` for the next page")]
    links: FeedLinks


# --- imports --------------------------------------------------------------------------------


class SheetEntry(Struct):
    """One sheet of a workbook, and how well its headers match the dataset."""

    name: str
    score: float | None
    reason: str
    range: str | None = None
    rows: int = 0
    hidden: bool = False
    chosen: bool = False


class Source(Struct):
    """The uploaded file and what was detected in it (once validated)."""

    filename: str | None
    bytes: int | None
    kind: FileKind | UnsetType = UNSET
    encoding: str | UnsetType | None = UNSET
    encoding_reason: str | UnsetType | None = UNSET
    delimiter: str | UnsetType | None = UNSET
    sheet: str | UnsetType | None = UNSET
    sheet_reason: str | UnsetType | None = UNSET
    sheets: list[SheetEntry] | UnsetType = UNSET
    header_line: Annotated[int, Meta(description="As a person sees it, from 1")] | UnsetType = UNSET
    headers: list[str] | UnsetType = UNSET


class MappingEntry(Struct):
    """Where one source column goes, and why Ferry thinks so."""

    field: Annotated[str, Meta(examples=["ebay_order_id"])]
    confidence: Annotated[float, Meta(ge=0, le=1)]
    reason: Annotated[str, Meta(examples=["alias"])]
    unit: str | UnsetType = UNSET


class SkippedLine(Struct):
    line: int
    reason: str
    text: str | UnsetType = UNSET


class Skipped(Struct):
    """Lines that hold no record (blank, notes, report footers) and why."""

    count: int
    reasons: dict[str, int]
    lines: list[SkippedLine]


class PreviewRow(Struct):
    """One record as mapped: typed values, or the original text of a failed value."""

    line: int
    values: dict[str, Any]
    errors: dict[str, str]


class Account(Struct):
    """What the dataset says of every account (Ferry keeps no account records)."""

    id: str
    currency: str
    time_zone: str | UnsetType = UNSET


class ModeTotals(Struct):
    valid: int
    invalid: int


class Modes(Struct):
    """What a commit in each `mode` would count as valid and invalid."""

    insert: ModeTotals
    upsert: ModeTotals
    skip_existing: ModeTotals


class RowError(Struct):
    line: int
    field: Annotated[str | None, Meta(description="null for the row as a whole")]
    message: str


class ImportLinks(JobLinks):
    import_: str = msgspec.field(name="import", default="")
    error_report: Annotated[
        str | None, Meta(description="The failed rows as CSV, while there are any")
    ] = None
    mapping: str = ""
    commit: str = ""
    rollback: str = ""


class ImportJob(Job):
    """An import: the job plus what Ferry understood of the file (null until validated)."""

    account_id: str | None
    source: Source
    mapping: dict[str, MappingEntry | None] | None
    unmapped_required: list[str] | None
    formats: Annotated[
        dict[str, Any] | None, Meta(description="Inferred per field: date order, decimal mark")
    ]
    totals: Totals | None
    skipped: Skipped | None
    preview: Annotated[list[PreviewRow] | None, Meta(description="The first 100 records")]
    errors: list[RowError] | None
    batch: Batch | None
    result: ImportResult | None
    links: ImportLinks
    account: Account | None = None
    existing: Annotated[
        int | None, Meta(description="Rows whose key names a live record of the account")
    ] = None
    modes: Modes | None = None


# --- datasets -------------------------------------------------------------------------------


class DatasetField(Struct):
    name: Annotated[str, Meta(examples=["sale_price"])]
    label: Annotated[str, Meta(examples=["Sale Price"])]
    type: FieldType
    required: bool
    computed: bool
    importable: bool
    aliases: list[str]
    description: str
    values: Annotated[list[str], Meta(description="An enum's values")] | UnsetType = UNSET
    min: int | UnsetType = UNSET
    default: str | UnsetType = UNSET


class Permissions(Struct):
    read: bool
    write: bool


class DatasetLinks(Struct):
    self_: str = msgspec.field(name="self")
    export: str


class Dataset(Struct):
    """What can be exported and imported, and what the caller may do with it."""

    name: Annotated[str, Meta(examples=["bookkeeping_records"])]
    label: str
    description: str
    permissions: Permissions
    fields: list[DatasetField]
    presets: Annotated[dict[str, list[str]], Meta(description="Named column lists")]
    export_formats: Annotated[list[str], Meta(examples=[["csv", "json", "ndjson", "xlsx"]])]
    links: DatasetLinks


class DatasetList(Struct):
    items: list[Dataset]


# --- presets, links -------------------------------------------------------------------------


class PresetList(Struct):
    """The caller's own presets (a dataset's built-in ones are in `Dataset.presets`)."""

    items: list[Preset]


class Link(Struct):
    """A path to a file with a one-minute token, for a browser to follow."""

    href: str
    expires_at: datetime


# --- health ---------------------------------------------------------------------------------


class Health(Struct):
    status: Literal["ok"]


class Check(Struct):
    ok: bool
    ms: float | UnsetType = UNSET
    error: str | UnsetType = UNSET


class Ready(Struct):
    """Each dependency checked; 503 when any fails."""

    status: Literal["ready", "unavailable"]
    checks: dict[str, Check]
    storage_backend: Literal["s3", "local"]


# --- webhooks ------------------------------------------------------------------------------


class WebhookRequest(Request):
    """`POST /v1/webhooks`: where to send which events."""

    url: str
    events: list[EventType]
    description: str | None = None
    enabled: bool = True


class WebhookChanges(Request):
    """`PATCH /v1/webhooks/{id}`: the fields to change; those left out stay."""

    url: str | UnsetType = UNSET
    events: list[EventType] | UnsetType = UNSET
    description: str | UnsetType | None = UNSET
    enabled: bool | UnsetType = UNSET


class WebhookLinks(Struct):
    self: str
    deliveries: str
    test: str
    rotate_secret: str


class Webhook(Struct):
    """A registered endpoint. Its secret is shown only by the answer that made it."""

    id: uuid.UUID
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    created_at: datetime
    updated_at: datetime
    # Until then the rotated-out secret still signs deliveries, beside the new one.
    previous_secret_expires_at: datetime | None
    links: WebhookLinks


class WebhookWithSecret(Webhook):
    """An endpoint and its new signing secret, shown this once."""

    secret: str


class WebhookList(Struct):
    items: list[Webhook]


class WebhookDeliveryList(Struct):
    """Deliveries, newest first; pass `next_cursor` back as `cursor` for more."""

    items: list[WebhookDelivery]
    next_cursor: str | None


# --- direct uploads ------------------------------------------------------------------------

MAX_UPLOAD_FILENAME = 255


class UploadRequest(Request):
    """The file a client is about to upload."""

    filename: Annotated[
        str, Meta(min_length=1, max_length=MAX_UPLOAD_FILENAME, description="Its name.")
    ]
    bytes: Annotated[int, Meta(ge=1, description="Its exact size; the upload must match it.")]
    content_type: Annotated[
        str,
        Meta(
            description="Its media type: text/csv, a spreadsheet type, or "
            "application/octet-stream. The PUT must send the same Content-Type."
        ),
    ] = "application/octet-stream"


class UploadTicket(Struct):
    """Where and how to PUT the file, until when, and how to import it then."""

    id: Annotated[str, Meta(description="The upload id for POST /v1/imports.")]
    method: Annotated[str, Meta(description="Always PUT.")]
    url: Annotated[
        str,
        Meta(
            description="Where to PUT the file: a presigned S3 URL, or this api's "
            "/v1/uploads/{id}/content with its token (local storage)."
        ),
    ]
    headers: Annotated[
        dict[str, str],
        Meta(description="Headers the PUT must send (they are part of the signature)."),
    ]
    expires_at: Annotated[datetime, Meta(description="The URL works until then.")]
    bytes: Annotated[int, Meta(description="The size the file must have.")]
    storage: Annotated[str, Meta(description="`s3` or `local`.")]


# --- requests -------------------------------------------------------------------------------


class ExportRequest(Request):
    """`POST /v1/exports`: what to export; `filters` as for direct downloads."""

    dataset: Annotated[str, Meta(examples=["bookkeeping_records"])]
    format: Annotated[
        Format, Meta(description="csv, json (one array), ndjson, xlsx or parquet (typed columns)")
    ]
    columns: list[str] | None = None
    preset: Annotated[str | None, Meta(examples=["financial"])] = None
    filters: Annotated[
        dict[str, Any],
        Meta(examples=[{"sale_date_from": "2026-01-01", "status": "shipped,paid"}]),
    ] = {}
    account_id: Annotated[str | None, Meta(examples=["main"])] = None
    compression: Compression | None = None
    escape_formulas: bool = True


class ImportFromUpload(Request):
    """`POST /v1/imports` with a JSON body: import a file put to a direct upload URL."""

    upload_id: Annotated[str, Meta(description="The id POST /v1/uploads gave.")]
    dataset: Annotated[str, Meta(description="Dataset to import into.")]
    account_id: Annotated[
        str, Meta(min_length=1, max_length=200, description="Account of the records.")
    ]
    sheet: Annotated[
        str | None, Meta(description="A workbook's sheet to read (default: best match).")
    ] = None
    filename: (
        Annotated[str, Meta(max_length=255, description="Default: the upload's name.")] | None
    ) = None


class SheetRequest(Request):
    """`PUT /v1/imports/{id}/sheet`: the workbook's sheet to read instead."""

    sheet: Annotated[
        str,
        Meta(min_length=1, description="The name of one of `source.sheets`", examples=["Orders"]),
    ]


class CommitRequest(Request):
    """How to commit a validated import."""

    on_error: Annotated[
        Literal["abort", "skip"],
        Meta(
            description="`abort` (default): any invalid row stops the commit (409); "
            "`skip`: commit the valid rows, count the others as skipped."
        ),
    ] = "abort"
    mode: Annotated[
        Literal["insert", "upsert", "skip_existing"],
        Meta(
            description="`insert` (default): a row whose natural key names a live record "
            "of the account is invalid; `upsert`: it updates that record (the columns the "
            "file maps; a rollback restores the record exactly); `skip_existing`: it is "
            "left out. The result counts `inserted`, `updated` and `skipped_existing`."
        ),
    ] = "insert"


class PresetRequest(Request):
    """`POST /v1/presets`: a name and the columns (field names) of one dataset."""

    dataset: Annotated[str, Meta(examples=["bookkeeping_records"])]
    name: Annotated[str, Meta(examples=["Margins"])]
    columns: Annotated[list[str], Meta(examples=[["ebay_order_id", "sale_price", "profit"]])]


class LinkRequest(Request):
    """The path of a file: an export's `links.download` or an import's `links.error_report`."""

    href: Annotated[str, Meta(examples=["/v1/exports/8f0c…/download"])]


class RollbackRequest(Request):
    """How to roll back a committed import."""

    confirm: Annotated[
        bool,
        Meta(
            description="Roll back even records edited since the import (their edits are "
            "lost); without it such records make the answer 409."
        ),
    ] = False
