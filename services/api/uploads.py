"""An upload streams from the request into object storage as it arrives.

A multipart body is parsed incrementally, a raw body copied as it comes, so the
api never holds the file in memory or on its disk; a body over the limit is
refused with 413 without reading the rest. The first bytes tell CSV from a workbook.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from litestar import Request
from multipart import MultipartError, MultipartSegment, PushMultipartParser, parse_options_header

from services.core.errors import InvalidInput, TooLarge, UnsupportedMediaType
from services.core.imports import readers
from services.core.storage import Storage, Upload

# Bytes of a multipart body that are not the file: boundaries, part headers, small fields.
MULTIPART_SLACK = 64 * 1024
MAX_FIELD_BYTES = 4096
SNIFF_BYTES = 8192
MULTIPART = "multipart/form-data"
RAW_TYPES = {
    "text/csv",
    "application/csv",
    "text/plain",
    "text/tab-separated-values",
    "application/octet-stream",
    *readers.WORKBOOK_TYPES,
}

# Called with each form field once it is complete (e.g. to refuse a dataset early).
FieldCheck = Callable[[str, str], object]


@dataclass
class Received:
    """A stored upload: what it is, and the form fields that came with it."""

    kind: str  # "csv" or a workbook kind ("xlsx", "xls", …), sniffed from the first bytes
    size: int
    sha256: str
    filename: str | None = None  # as the form named the file part
    fields: dict[str, str] = field(default_factory=dict)


class Sink:
    """Counts, bounds and sniffs the bytes of the file on their way into storage."""

    def __init__(
        self, upload: Upload, limit: int, over: Callable[[int], TooLarge] | None = None
    ) -> None:
        self.upload = upload
        self.limit = limit
        self.over = over or too_large
        self.size = 0
        self.head = bytearray()
        self.kind: str | None = None

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise self.over(self.limit)
        if self.kind is None:
            self.head += data
            if len(self.head) >= SNIFF_BYTES:
                await self._sniffed()
            return
        await self.upload.write(data)

    async def _sniffed(self) -> None:
        self.kind = readers.sniff_kind(bytes(self.head))
        await self.upload.write(bytes(self.head))
        self.head = bytearray()

    async def close(self) -> None:
        if self.kind is None:
            await self._sniffed()

    def received(self) -> Received:
        assert self.kind is not None
        assert self.upload.result is not None
        return Received(self.kind, self.size, self.upload.result.sha256)


def too_large(limit: int) -> TooLarge:
    return TooLarge(f"the file is larger than {limit:,} bytes (the import limit)", limit=limit)


async def receive(
    request: Request[Any, Any, Any],
    storage: Storage,
    key: str,
    *,
    limit: int,
    check: FieldCheck,
) -> Received:
    """Stream the request's file into ``key``; returns once it is stored.

    Refused before a byte is read: a declared length over the limit (413), a media
    type that is not multipart or a table (415). On any failure nothing is stored.
    """
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit + MULTIPART_SLACK:
        raise too_large(limit)
    media, options = parse_options_header(request.headers.get("content-type", ""))
    if media != MULTIPART and media not in RAW_TYPES:
        raise UnsupportedMediaType(
            "send multipart/form-data with a 'file' part, or the file itself as text/csv "
            "or a spreadsheet type (" + readers.XLSX_TYPE + ", …)"
        )
    async with contextlib.AsyncExitStack() as stack:

        async def start() -> Sink:
            # The upload completes when the stack closes, and is aborted on an error.
            return Sink(await stack.enter_async_context(storage.writer(key)), limit)

        if media == MULTIPART:
            form = _Form(start, check)
            await form.receive(request, options.get("boundary"))
            sink = form.file()
        else:
            form, sink = None, await start()
            async for chunk in request.stream():
                await sink.write(chunk)
        await sink.close()
    got = sink.received()
    if form is not None:
        got.filename, got.fields = form.filename, form.fields
    return got


async def receive_exact(
    request: Request[Any, Any, Any], storage: Storage, key: str, *, size: int
) -> Received:
    """Stream a raw body of exactly ``size`` bytes into ``key`` (a direct upload's PUT).

    A declared length other than ``size``, or a body that runs over it, is 413 before or
    as soon as it happens; one that ends short is 422. Nothing is stored either way.
    """

    def over(limit: int) -> TooLarge:
        return TooLarge(f"the body is larger than the {limit:,} bytes promised", limit=limit)

    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > size:
        raise over(size)
    async with storage.writer(key) as upload:
        sink = Sink(upload, size, over)
        async for chunk in request.stream():
            await sink.write(chunk)
        await sink.close()
        if sink.size != size:
            raise InvalidInput(
                f"the body has {sink.size:,} bytes; the upload promised {size:,}",
                errors=[{"field": "body", "message": f"{sink.size} of {size} bytes"}],
            )
    return sink.received()


class _Form:
    """One multipart body: the file part goes to storage, the other parts are fields."""

    def __init__(self, start: Callable[[], Awaitable[Sink]], check: FieldCheck) -> None:
        self.start = start
        self.check = check
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.sink: Sink | None = None
        self.current: MultipartSegment | None = None

    async def receive(self, request: Request[Any, Any, Any], boundary: str | None) -> None:
        if not boundary:
            raise InvalidInput(
                "the multipart Content-Type has no boundary",
                errors=[{"field": "Content-Type", "message": "no boundary"}],
            )
        try:
            parser = PushMultipartParser(boundary, max_segment_count=16)
            async for chunk in request.stream():
                for event in parser.parse(chunk):
                    if isinstance(event, MultipartSegment):
                        await self.begin(event)
                    elif event:
                        await self.data(event)
                    else:
                        self.end()
            parser.close()
        except MultipartError as exc:
            raise InvalidInput(
                f"the multipart body is malformed: {exc}",
                errors=[{"field": "body", "message": str(exc)}],
            ) from None

    async def begin(self, segment: MultipartSegment) -> None:
        self.current = segment
        if segment.name != "file":
            return
        if self.sink is not None:
            raise InvalidInput(
                "send one file per import",
                errors=[{"field": "file", "message": "more than one file"}],
            )
        self.sink = await self.start()
        self.filename = segment.filename

    async def data(self, data: bytes) -> None:
        assert self.current is not None
        name = self.current.name
        if name == "file":
            assert self.sink is not None
            await self.sink.write(data)
        elif name:
            value = self.fields.get(name, "") + data.decode("utf-8", "replace")
            if len(value) > MAX_FIELD_BYTES:
                raise InvalidInput(
                    f"the form field {name!r} is too long",
                    errors=[{"field": name, "message": "too long"}],
                )
            self.fields[name] = value

    def end(self) -> None:
        name = self.current.name if self.current is not None else None
        if name and name != "file":
            self.check(name, self.fields.get(name, ""))
        self.current = None

    def file(self) -> Sink:
        if self.sink is None:
            raise InvalidInput(
                "the form has no file part named 'file'",
                errors=[{"field": "file", "message": "required"}],
            )
        return self.sink
