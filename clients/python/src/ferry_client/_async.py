"""``AsyncFerry``: the asyncio client, awaiting the operations of ``_operations`` on httpx."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from ferry_client import _operations as ops
from ferry_client._base import (
    Config,
    ExportView,
    ImportView,
    direct_query,
    export_request,
    format_of,
)
from ferry_client._core import CHUNK, Close, Effect, Op, Read, Send, Sleep
from ferry_client.models import CommitMode, Dataset, Job, JobPage

T = TypeVar("T")


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            yield chunk


class _Driver:
    """Performs the effects of an operation with an asyncio httpx client."""

    def __init__(self, http: httpx.AsyncClient, config: Config) -> None:
        self.http = http
        self.config = config

    async def run(self, op: Op[T]) -> T:
        streams: dict[int, AsyncIterator[bytes]] = {}
        opened: list[httpx.Response] = []
        value: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    effect = op.throw(error) if error is not None else op.send(value)
                except StopIteration as stop:
                    result: T = stop.value
                    return result
                value, error = None, None
                try:
                    value = await self._perform(effect, streams, opened)
                except httpx.TransportError as exc:
                    error = exc
        finally:
            for response in opened:
                await response.aclose()
            op.close()

    async def _perform(
        self, effect: Effect, streams: dict[int, AsyncIterator[bytes]], opened: list[httpx.Response]
    ) -> Any:
        if isinstance(effect, Send):
            return await self._send(effect, opened)
        if isinstance(effect, Read):
            response = effect.response
            chunks = streams.setdefault(id(response), response.aiter_bytes())
            try:
                return await anext(chunks, b"")
            except httpx.TransportError:
                await response.aclose()
                raise
        if isinstance(effect, Close):
            streams.pop(id(effect.response), None)
            await effect.response.aclose()
            return None
        assert isinstance(effect, Sleep)
        await asyncio.sleep(effect.seconds)
        return None

    async def _send(self, effect: Send, opened: list[httpx.Response]) -> httpx.Response:
        call = effect.call
        timeout = httpx.Timeout(self.config.timeout, read=call.read_timeout or self.config.timeout)
        request = self.http.build_request(
            call.method,
            call.url,
            params=call.params,
            json=call.json,
            headers=call.headers,
            content=_file_chunks(call.upload) if call.upload else None,
            timeout=timeout,
        )
        if not call.auth:
            request.headers.pop("Authorization", None)
        response = await self.http.send(request, stream=True)
        if call.stream:
            opened.append(response)
            return response
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response


class AsyncExportJob(ExportView):
    """An export job; ``wait()`` for it, then ``download()`` its file."""

    def __init__(self, client: AsyncFerry, data: Job) -> None:
        super().__init__(data)
        self._client = client

    async def refresh(self) -> AsyncExportJob:
        self.data = await self._client._run(ops.refresh(self._client._policy, self.data))
        return self

    async def wait(self, progress: ops.ProgressCallback | None = None) -> AsyncExportJob:
        """Until it succeeded (``JobFailed``/``JobCancelled`` otherwise); ``progress`` gets
        each ``Progress`` over server-sent events. Bound it with ``asyncio.timeout()``."""
        op = ops.wait(self._client._policy, self.data, progress=progress)
        self.data = await self._client._run(op)
        return self

    async def download(self, path: str | Path) -> Path:
        """Stream the file to ``path``; raises ``ChecksumMismatch`` if its sha256 differs."""
        return await self._client._run(ops.download(self._client._policy, self.data, Path(path)))

    async def cancel(self) -> AsyncExportJob:
        self.data = await self._client._run(ops.cancel(self._client._policy, self.id))
        return self


class AsyncImportJob(ImportView):
    """An import: see what Ferry understood, adjust the mapping, commit, roll back."""

    def __init__(self, client: AsyncFerry, data: Any) -> None:
        super().__init__(ops.as_import(data))
        self._client = client

    async def refresh(self) -> AsyncImportJob:
        self.data = await self._client._run(ops.get_import(self._client._policy, self.id))
        return self

    async def wait(self, progress: ops.ProgressCallback | None = None) -> AsyncImportJob:
        """Until the worker is done with it: ``validated`` after an upload or a mapping
        change, ``committed`` after a commit (``JobFailed`` if it failed)."""
        op = ops.wait(self._client._policy, self.data, progress=progress)
        self.data = await self._client._run(op)
        return self

    async def set_mapping(self, mapping: Mapping[str, str | None]) -> AsyncImportJob:
        """``{column: field or None}`` for the columns to change; validates again (``wait()``)."""
        self.data = await self._client._run(ops.set_mapping(self._client._policy, self.id, mapping))
        return self

    async def choose_sheet(self, sheet: str) -> AsyncImportJob:
        """Read another of the workbook's sheets (``source.sheets``) from the stored
        upload, without uploading it again; validates again (``wait()``)."""
        self.data = await self._client._run(ops.choose_sheet(self._client._policy, self.id, sheet))
        return self

    async def errors_report(self, path: str | Path) -> Path:
        """Save the failed rows — original values, ``_row`` and ``_errors`` — to ``path``."""
        return await self._client._run(ops.errors_report(self._client._policy, self.id, Path(path)))

    async def commit(
        self,
        on_error: ops.OnError = "fail",
        *,
        mode: CommitMode = "insert",
        wait: bool = True,
        progress: ops.ProgressCallback | None = None,
    ) -> AsyncImportJob:
        """``fail``: all or nothing (``Conflict`` with any invalid row); ``skip``: the valid
        rows only. ``mode``, for a row whose key names a live record of the account:
        ``insert`` (it is invalid), ``upsert`` (it updates that record), ``skip_existing``
        (it is left out); ``batch`` counts ``inserted``, ``updated``, ``skipped_existing``.
        Waits until committed unless ``wait=False``."""
        op = ops.commit(self._client._policy, self.id, on_error, mode)
        self.data = await self._client._run(op)
        return await self.wait(progress) if wait else self

    async def rollback(
        self,
        confirm: bool = False,
        *,
        wait: bool = True,
        progress: ops.ProgressCallback | None = None,
    ) -> AsyncImportJob:
        """Undo the commit: inserted records are removed, updated ones get every column
        back. ``Conflict`` listing records edited since, unless ``confirm``. The server
        runs it as a job (``rolling_back``); waits until ``rolled_back`` unless
        ``wait=False``, ``progress`` getting each ``Progress``."""
        op = ops.rollback(self._client._policy, self.id, confirm=confirm)
        self.data = await self._client._run(op)
        if wait and self.status in ops.ACTIVE:
            return await self.wait(progress)
        return self

    async def cancel(self) -> AsyncImportJob:
        await self._client._run(ops.cancel(self._client._policy, self.id))
        return await self.refresh()


class AsyncFerry:
    """An asyncio client of Ferry's api.

    ``base_url`` and ``token`` default to ``$FERRY_URL`` (else http://127.0.0.1:8000)
    and ``$FERRY_TOKEN``. Connection errors, 429 and 503 are retried ``retries`` times
    with backoff, waiting as ``Retry-After`` says up to ``max_retry_wait`` seconds.
    """

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 4,
        max_retry_wait: float = 60.0,
    ) -> None:
        self.config = Config(
            base_url, token, timeout=timeout, retries=retries, max_retry_wait=max_retry_wait
        )
        self._policy = self.config.policy
        self._http = httpx.AsyncClient(**self.config.http_options())
        self._driver = _Driver(self._http, self.config)

    async def _run(self, op: Op[T]) -> T:
        return await self._driver.run(op)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncFerry:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # --- datasets, jobs -------------------------------------------------------------------

    async def datasets(self) -> list[Dataset]:
        return await self._run(ops.datasets(self._policy))

    async def dataset(self, name: str) -> Dataset:
        return await self._run(ops.dataset(self._policy, name))

    async def job(self, job_id: str) -> AsyncExportJob | AsyncImportJob:
        data = await self._run(ops.get_job(self._policy, job_id))
        return (
            await self.import_job(job_id) if data.kind == "import" else AsyncExportJob(self, data)
        )

    async def import_job(self, job_id: str) -> AsyncImportJob:
        return AsyncImportJob(self, await self._run(ops.get_import(self._policy, job_id)))

    async def job_pages(
        self, *, kind: str | None = None, status: str | None = None, page_size: int = 50
    ) -> AsyncIterator[JobPage]:
        """The caller's jobs page by page, newest first; each page is fetched when needed."""
        cursor: str | None = None
        while True:
            page = await self._run(
                ops.job_page(self._policy, kind=kind, status=status, limit=page_size, cursor=cursor)
            )
            yield page
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def jobs(
        self, *, kind: str | None = None, status: str | None = None, page_size: int = 50
    ) -> AsyncIterator[Job]:
        """Every job of the caller, newest first, across pages."""
        async for page in self.job_pages(kind=kind, status=status, page_size=page_size):
            for job in page.items:
                yield job

    # --- exports --------------------------------------------------------------------------

    async def export(
        self,
        dataset: str,
        format: str = "csv",
        *,
        columns: list[str] | None = None,
        preset: str | None = None,
        filters: Mapping[str, Any] | None = None,
        account_id: str | None = None,
        compression: str | None = None,
        escape_formulas: bool = True,
    ) -> AsyncExportJob:
        """Start a background export (``POST /v1/exports``); ``wait()`` on the job."""
        body = export_request(
            dataset,
            format,
            columns=columns,
            preset=preset,
            filters=filters,
            account_id=account_id,
            compression=compression,
            escape_formulas=escape_formulas,
        )
        return AsyncExportJob(self, await self._run(ops.create_export(self._policy, body)))

    async def export_to_file(
        self,
        path: str | Path,
        dataset: str,
        format: str | None = None,
        *,
        columns: list[str] | None = None,
        preset: str | None = None,
        filters: Mapping[str, Any] | None = None,
        account_id: str | None = None,
        gzip: bool = False,
    ) -> int:
        """A small export streamed straight into ``path`` (format from its suffix unless
        named); the rows written. Over the server's limit: ``TooLarge``."""
        path = Path(path)
        query = direct_query(
            columns=columns, preset=preset, filters=filters, account_id=account_id, gzip=gzip
        )
        fmt = format_of(path, format)
        return await self._run(ops.direct_export(self._policy, dataset, fmt, path, query))

    # --- imports --------------------------------------------------------------------------

    async def import_file(
        self,
        path: str | Path,
        dataset: str,
        account_id: str,
        *,
        sheet: str | None = None,
        via: ops.Via = "auto",
    ) -> AsyncImportJob:
        """Upload a CSV or XLSX file; ``wait()`` until it is validated. ``via="auto"``
        puts the file straight to storage when the server offers direct uploads
        (``POST /v1/uploads``), else streams it through the api; ``"direct"`` or
        ``"stream"`` forces one."""
        op = ops.upload(
            self._policy, Path(path), dataset=dataset, account_id=account_id, sheet=sheet, via=via
        )
        return AsyncImportJob(self, await self._run(op))
