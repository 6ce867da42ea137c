"""What ``Ferry`` and ``AsyncFerry`` share besides the operations: configuration, the
argument handling of each call, and the read-only views of a job."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx
import msgspec

from ferry_client._core import Policy
from ferry_client.models import (
    ExportRequest,
    ExportResult,
    Import,
    Job,
    MappingEntry,
    Progress,
    RowError,
    Source,
    Totals,
)

__version__ = "0.1.0"
DEFAULT_URL = "http://127.0.0.1:8000"
FORMATS = ("csv", "json", "ndjson", "xlsx", "parquet")

J = TypeVar("J", bound=Job)


class Config:
    """Where the api is, who calls it, and how hard to try."""

    def __init__(
        self,
        base_url: str | None,
        token: str | None,
        *,
        timeout: float,
        retries: int,
        max_retry_wait: float,
    ) -> None:
        self.base_url = (base_url or os.environ.get("FERRY_URL") or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else os.environ.get("FERRY_TOKEN", "")
        self.timeout = timeout
        self.policy = Policy(retries=retries, max_wait=max_retry_wait)

    def http_options(self) -> dict[str, Any]:
        headers = {"User-Agent": f"ferry-client/{__version__}"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return {
            "base_url": self.base_url,
            "headers": headers,
            "timeout": httpx.Timeout(self.timeout),
            "follow_redirects": False,  # a presigned download must not get our token
        }


def filter_value(value: Any) -> str:
    """A filter as the query string takes it: dates ISO, lists comma-separated."""
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def export_request(
    dataset: str,
    format: str,
    *,
    columns: list[str] | None,
    preset: str | None,
    filters: Mapping[str, Any] | None,
    account_id: str | None,
    compression: str | None,
    escape_formulas: bool,
) -> ExportRequest:
    return ExportRequest(
        dataset=dataset,
        format=format,
        columns=list(columns) if columns else None,
        preset=preset,
        filters={k: filter_value(v) for k, v in (filters or {}).items() if v is not None},
        account_id=account_id,
        compression="gzip" if compression else None,
        escape_formulas=escape_formulas,
    )


def direct_query(
    *,
    columns: list[str] | None,
    preset: str | None,
    filters: Mapping[str, Any] | None,
    account_id: str | None,
    gzip: bool,
) -> dict[str, str]:
    query = {k: filter_value(v) for k, v in (filters or {}).items() if v is not None}
    if columns:
        query["columns"] = ",".join(columns)
    if preset:
        query["preset"] = preset
    if account_id:
        query["account_id"] = account_id
    if gzip:
        query["gzip"] = "true"
    return query


def format_of(path: Path, format: str | None) -> str:
    """The export format named, or the one ``path``'s suffix says (``.csv.gz`` is csv)."""
    if format:
        return format
    suffixes = [s.lstrip(".").lower() for s in Path(path).suffixes if s.lower() != ".gz"]
    if suffixes and suffixes[-1] in FORMATS:
        return suffixes[-1]
    raise ValueError(f"say which format to write {path} in: one of {', '.join(FORMATS)}")


class JobView(Generic[J]):
    """A job as last seen; the sync and async handles add the calls."""

    def __init__(self, data: J) -> None:
        self.data: J = data

    @property
    def id(self) -> str:
        return self.data.id

    @property
    def status(self) -> str:
        return self.data.status

    @property
    def progress(self) -> Progress | None:
        return self.data.progress

    @property
    def error(self) -> dict[str, Any] | None:
        return self.data.error

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.status}>"


class ExportView(JobView[Job]):
    @property
    def result(self) -> ExportResult | None:
        """The file, once the export succeeded."""
        if self.data.kind != "export" or self.data.status != "succeeded" or not self.data.result:
            return None
        return msgspec.convert(self.data.result, ExportResult)


class ImportView(JobView[Import]):
    @property
    def source(self) -> Source:
        """Encoding, delimiter, sheet, header line and headers Ferry found."""
        return self.data.source

    @property
    def mapping(self) -> dict[str, MappingEntry | None]:
        """``{source column: its field with confidence and reason, or None}``, in file order."""
        return dict(self.data.mapping or {})

    @property
    def totals(self) -> Totals | None:
        return self.data.totals

    @property
    def errors(self) -> list[RowError]:
        """The first invalid values (the error report has them all)."""
        return list(self.data.errors or [])
