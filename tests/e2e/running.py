"""A real running Ferry for the client tests — ``ferry api`` and ``ferry worker``
processes on real PostgreSQL and Redis — and a small HTTP proxy that causes faults.

The Ferry runs once per module (starting processes is the slow part); each test
works in an account or as a user of its own, so tests do not see each other's jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync

from services.core import demo
from services.core.auth import mint_token
from services.core.db.pool import connect
from services.core.settings import Settings
from tests.conftest import ALL_PERMS, SECRET, _admin, _with_db, ferry_env, free_port

ORG = "acme"


@dataclass
class Running:
    """A Ferry api and worker, and what a test needs to talk to them."""

    url: str
    settings: Settings
    log: Path

    def token(self, sub: str = "alice", perms: list[str] | None = None) -> str:
        return mint_token(
            self.settings, sub=sub, org=ORG, perms=ALL_PERMS if perms is None else perms, ttl=3600
        )

    def env(self, sub: str = "alice", **extra: str) -> dict[str, str]:
        """The environment of a `ferry export …` as the banner's `export` lines set it."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
        return clean | {"FERRY_URL": self.url, "FERRY_TOKEN": self.token(sub)} | extra

    def seed(self, account: str, rows: int) -> None:
        """``rows`` demo records in ``account``, then ANALYZE (as `ferry seed` does)."""

        async def _seed() -> None:
            conn = await connect(self.settings.database_url)
            try:
                await demo.seed(conn, org_id=ORG, account_id=account, rows=rows)
                await conn.execute("ANALYZE bookkeeping_records")
            finally:
                await conn.close()

        asyncio.run(_seed())


def _start(role: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", role], env=env, stdout=out, stderr=out
        )


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def ferry(
    pg_admin_url: str,
    template_db: str,
    redis_base_url: str,
    redis_db: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Running]:
    """``ferry api`` on a free port and one ``ferry worker``, on a database of their own."""
    with start_ferry(
        pg_admin_url, template_db, f"{redis_base_url}/{redis_db}", tmp_path_factory.mktemp("ferry")
    ) as running:
        yield running


@contextlib.contextmanager
def start_ferry(
    pg_admin_url: str, template_db: str, redis_url: str, tmp: Path, **settings: Any
) -> Iterator[Running]:
    """A Ferry api and worker on a fresh database and a flushed Redis db; ``settings``
    besides (an S3 bucket, small rate limits …) are passed as their ``FERRY_*``."""
    name = f"ferry_c_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(pg_admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"'))
    flush = redis_sync.Redis.from_url(redis_url)
    flush.flushdb()
    flush.close()
    port = free_port()
    config = Settings(
        database_url=_with_db(pg_admin_url, name),
        redis_url=redis_url,
        storage_dir=str(tmp / "storage"),
        jwt_secret=SECRET,
        port=port,
        **settings,
    )
    extra = {k: str(v) for k, v in settings.items()}
    env = ferry_env(config, port=str(port), log_level="WARNING", **extra)
    log = tmp / "ferry.log"
    procs = [_start("api", env, log), _start("worker", env, log)]
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                pytest.fail("ferry api did not become ready:\n" + log.read_text())
            time.sleep(0.1)
        yield Running(url, config, log)
    finally:
        _stop(procs)
        asyncio.run(_admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def write_orders(path: Path) -> Path:
    """A seller's CSV: 'Sold For' and 'Total Price' both look like the price; two bad dates."""
    rows = [
        ["Order Number", "Sale Date", "Item Title", "Quantity", "Sold For", "Total Price"],
    ]
    for i in range(12):
        day = "2026-02-30" if i in (4, 9) else f"2026-03-{1 + i:02d}"
        rows.append([f"77-{i:05d}-00001", day, f"Lamp {i}", "1", f"{10 + i}.00", f"{15 + i}.50"])
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    path.write_text(buffer.getvalue())
    return path


# --- a proxy that causes faults -----------------------------------------------------------


@dataclass
class Seen:
    """A request as it reached the proxy."""

    method: str
    path: str
    headers: dict[str, str]
    at: float


@dataclass
class Rule:
    """What to do, ``times`` times, with a request whose ``METHOD path`` matches ``match``
    (a regular expression).

    ``drop``: forward it, then close the connection before its answer comes back.
    ``answer``: answer it with these raw bytes instead of forwarding it.
    ``cut_after``: forward, and close the answer right after the first SSE frame
    that holds these bytes.
    """

    match: str
    drop: bool = False
    answer: bytes | None = None
    cut_after: bytes | None = None
    times: int = 1


@dataclass
class FaultProxy:
    """An HTTP/1.1 proxy on loopback, one request per connection, with ``rules``."""

    upstream: str
    rules: list[Rule] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self, match: str) -> list[Seen]:
        """The requests seen whose ``METHOD path`` matches ``match``, in order."""
        return [s for s in self.seen if re.search(match, f"{s.method} {s.path}")]

    def _rule(self, line: str) -> Rule | None:
        for rule in self.rules:
            if rule.times > 0 and re.search(rule.match, line):
                rule.times -= 1
                return rule
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _version = lines[0].split(" ", 2)
            pairs = (line.partition(":") for line in lines[1:] if line)
            headers = {name.strip().lower(): value.strip() for name, _, value in pairs}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.seen.append(Seen(method, target, headers, time.monotonic()))
            rule = self._rule(f"{method} {target}")
            if rule is not None and rule.answer is not None:
                writer.write(rule.answer)
                await writer.drain()
            else:
                await self._forward(head, body, writer, rule)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away
        finally:
            await _close(writer)

    async def _forward(
        self, head: bytes, body: bytes, writer: asyncio.StreamWriter, rule: Rule | None
    ) -> None:
        host, port = self.upstream.removeprefix("http://").split(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        # One request per connection: the answer ends when upstream closes.
        lines = [h for h in head.split(b"\r\n") if not h.lower().startswith(b"connection:")]
        up_writer.write(b"\r\n".join([*lines[:1], b"Connection: close", *lines[1:]]) + body)
        await up_writer.drain()
        try:
            if rule is not None and rule.drop:
                await up_reader.read(1)  # the server has answered: it did the work
                return
            seen = b""
            while chunk := await up_reader.read(65536):
                if rule is not None and rule.cut_after is not None:
                    seen += chunk
                    at = seen.find(rule.cut_after)
                    end = seen.find(b"\n\n", at) if at >= 0 else -1
                    if end >= 0:
                        writer.write(chunk[: len(chunk) - (len(seen) - end - 2)])
                        await writer.drain()
                        return
                writer.write(chunk)
                await writer.drain()
        finally:
            await _close(up_writer)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


@contextlib.contextmanager
def fault_proxy(upstream: str, *rules: Rule) -> Iterator[FaultProxy]:
    """A ``FaultProxy`` in front of ``upstream``, served from a thread of its own."""
    proxy = FaultProxy(upstream, list(rules))
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()

    async def serve() -> None:
        server = await asyncio.start_server(proxy._handle, "127.0.0.1", 0)
        proxy.port = server.sockets[0].getsockname()[1]
        ready.set()
        async with server:
            await stop.wait()
        # Connections still open (an event stream) end with the proxy.
        while others := [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    if not ready.wait(10):
        pytest.fail("the fault proxy did not start")
    try:
        yield proxy
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def answer(status: int, reason: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    """A raw HTTP/1.1 answer that closes its connection."""
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers.items())]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode() + body
