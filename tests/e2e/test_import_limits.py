"""The upload limit: 413 without the server reading the rest, and nothing stored."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import msgspec
import pytest

from services.core.deps import Deps
from services.core.settings import Settings
from tests.conftest import TokenFactory
from tests.e2e.imports_helpers import Client, orders_csv, upload

LIMIT = 1024 * 1024


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, import_max_bytes=LIMIT)


def stored_files(settings: Settings) -> list[Path]:
    root = Path(settings.storage_dir)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def test_an_oversize_upload_is_413_and_leaves_nothing(
    client: Client, auth: dict[str, str], deps: Deps, settings: Settings
) -> None:
    big = orders_csv(30_000)
    assert len(big) > LIMIT
    response = await upload(client, auth, big)
    assert response.status_code == 413
    problem = response.json()
    assert problem["type"] == "urn:ferry:problem:too-large"
    assert problem["detail"] == "the file is larger than 1,048,576 bytes (the import limit)"
    assert problem["limit"] == LIMIT
    assert await deps.db.fetchval("SELECT count(*) FROM jobs") == 0
    assert stored_files(settings) == []  # the partial upload was thrown away
    small = await upload(client, auth, orders_csv(100))
    assert small.status_code == 202


async def test_a_declared_oversize_body_is_refused_before_it_is_read(
    live_server: str, make_token: TokenFactory
) -> None:
    url = httpx.URL(live_server)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    token = make_token()
    writer.write(
        b"POST /v1/imports?dataset=bookkeeping_records&account_id=main HTTP/1.1\r\n"
        b"Host: test\r\nContent-Type: text/csv\r\n"
        b"Content-Length: 104857600\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n\r\n" + b"a,b\n" * 1000
    )
    await writer.drain()
    response = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    assert response.startswith(b"HTTP/1.1 413")


async def test_a_streamed_oversize_body_is_cut_off_at_the_limit(
    live_server: str, make_token: TokenFactory, deps: Deps, settings: Settings
) -> None:
    url = httpx.URL(live_server)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    token = make_token()
    writer.write(
        b"POST /v1/imports?dataset=bookkeeping_records&account_id=main HTTP/1.1\r\n"
        b"Host: test\r\nContent-Type: text/csv\r\nTransfer-Encoding: chunked\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n\r\n"
    )
    chunk = os.urandom(32 * 1024).hex().encode()  # 64 KiB of text
    sent = 0
    response = b""
    while sent < 64 * LIMIT:  # the client would send 64 MiB
        try:
            writer.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            await asyncio.wait_for(writer.drain(), 2)
        except (ConnectionError, TimeoutError):
            break
        sent += len(chunk)
        try:
            response = await asyncio.wait_for(reader.read(65536), 0.01)
        except TimeoutError:
            continue
        if response:
            break
    if not response:
        response = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    assert response.startswith(b"HTTP/1.1 413")
    # Answered long before the client was done (socket buffers hold a few MiB more).
    assert sent < 32 * LIMIT
    assert await deps.db.fetchval("SELECT count(*) FROM jobs") == 0
    assert stored_files(settings) == []
